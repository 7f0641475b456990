"""Catalog statistics as they happen here: installs, uninstalls and active installs from the
lifecycle, calls, errors and latencies from the broker, written to the catalog's daily rows
(``store/catalog.py: record_stats``) once per interval, in one transaction.

What counts. Only *catalog installs*: a plugin version this orchestrator installed whose id
and version are a catalog version *and* whose installed image reference names that catalog
version's digest (``...@sha256:<hex>``, as an install by catalog reference or by the digest
stores it). A plugin built here from a bundle, or installed by tag or by another digest, does
not count even when it shares the id and version. An uninstall is judged by what the
installation was, and its rows are gone once the uninstall has committed: the tracker keeps
the digests of installed versions as it last read them (at start, and after every lifecycle
event of the plugin, this replica's or another's). When it never saw the installation at all
(installed and uninstalled between two flushes, or a version swapped in while the plugin was
stopped, which announces no event), the id and version alone decide.

An install is a plugin installed here (``plugin.installed``, which a new plugin emits); a new
version of an installed plugin is an upgrade, not another install: it moves the plugin's
active install from one version to the other.

Counted once, with several replicas:

* installs and uninstalls: from the lifecycle events this replica *committed*
  (``EventBus.on_committed``; events of other replicas come through the Redis stream as plain
  dispatches and are not counted here), and only those the orchestrator itself emitted (a
  plugin may publish events, never as the orchestrator);
* calls, errors, latencies: from this replica's broker. The broker's tally is taken by the
  ``extension.executed`` summaries; :class:`CatalogCallTally` is that same tally with a second
  ledger, per plugin *version* and UTC day, fed by the same ``count`` and taken only here. Each
  call is in exactly one replica's ledger and taken once, so the sum over replicas is exact;
* active installs: a level, not a counter. After a lifecycle event of a catalog plugin (from
  any replica) each of its catalog versions' level for today is recomputed from the plugins
  table (1 when that version is the plugin's current one, ACTIVE and a catalog install, else
  0) and written only when it differs from the stored one, so replicas that both see an event
  agree and write nothing twice. (A version published after it was installed gets its level
  at the plugin's next lifecycle event.)

Latencies are kept as a histogram on the store's own buckets (10% wide) with each bucket's
sum, not one number per call; the samples handed to the store are the bucket means, which
fall in the same buckets, so its histogram and latency sum are exactly what the calls' own
times would have given. Counts of a flush that fails are kept for the next one; what was
counted since the last flush is lost only if the process is killed (as the summaries' are).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from orchestrator.broker import Broker
from orchestrator.broker.modes import CallTally
from orchestrator.domain.errors import NotFound
from orchestrator.domain.lifecycle import PluginState
from orchestrator.events.bus import Event, EventBus, Subscription
from orchestrator.services.lifecycle import LIFECYCLE_EVENTS
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.catalog_models import CatalogVersion
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import utcnow

__all__ = ["CallStats", "CatalogCallTally", "CatalogTracking", "image_digest"]

log = logging.getLogger(__name__)

LIFECYCLE_TYPES = frozenset(LIFECYCLE_EVENTS.values())
INSTALLED = LIFECYCLE_EVENTS["install"]
UNINSTALLED = LIFECYCLE_EVENTS["uninstall"]
ORCHESTRATOR = "orchestrator"  # the source of the events the lifecycle emits

_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
_EPOCH = date(1970, 1, 1)
_DAY_S = 86400
_FLOOR_MS = 0.1
_LOG_GROWTH = math.log(1.1)


def image_digest(image: str) -> str | None:
    """The digest an image reference pins (``name@sha256:<hex>``), None for a tag or an id."""
    match = _DIGEST.search(image)
    return match.group(1) if match else None


def _bucket(ms: float) -> int:
    if not ms > _FLOOR_MS:  # also NaN
        return 0
    return math.ceil(math.log(ms / _FLOOR_MS) / _LOG_GROWTH)


class CallStats:
    """Calls and errors of one plugin version on one day, and their times as a histogram:
    bucket -> [calls, sum of ms]."""

    __slots__ = ("buckets", "calls", "errors")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.buckets: dict[int, list[float]] = {}

    def add(self, ms: float, failed: bool) -> None:
        self.calls += 1
        self.errors += failed
        bucket = self.buckets.get(b := _bucket(ms))
        if bucket is None:
            self.buckets[b] = [1, ms]
        else:
            bucket[0] += 1
            bucket[1] += ms

    def merge(self, other: CallStats) -> None:
        self.calls += other.calls
        self.errors += other.errors
        for b, (n, total) in other.buckets.items():
            mine = self.buckets.setdefault(b, [0, 0.0])
            mine[0] += n
            mine[1] += total

    def samples(self) -> Iterator[float]:
        """One value per call: its bucket's mean (which lies in the bucket)."""
        for n, total in self.buckets.values():
            yield from itertools.repeat(total / n, int(n))


CallKey = tuple[str, str, int]
"""(plugin id, version, UTC day as days since 1970-01-01)."""


class CatalogCallTally(CallTally):
    """The broker's call tally (``take`` is still the summaries') plus a ledger per plugin
    version and UTC day that only :meth:`take_calls` empties. Loop thread only, as the tally.

    ``version_of`` names the version a plugin's calls go to now (its route's); a call whose
    plugin has no route any more (disabled while the call ran) is in the tally only."""

    def __init__(
        self,
        version_of: Callable[[str], str | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.version_of = version_of
        self.clock = clock
        self._ledger: dict[CallKey, CallStats] = {}

    def count(self, point: str, plugin_id: str, ms: float, *, failed: bool) -> None:
        super().count(point, plugin_id, ms, failed=failed)
        version = self.version_of(plugin_id)
        if version is None:
            return
        key = (plugin_id, version, int(self.clock() // _DAY_S))
        stats = self._ledger.get(key)
        if stats is None:
            stats = self._ledger[key] = CallStats()
        stats.add(ms, failed)

    def take_calls(self) -> dict[CallKey, CallStats]:
        ledger, self._ledger = self._ledger, {}
        return ledger

    def adopt(self, previous: CallTally) -> None:
        """Carry over what ``previous`` counted and nobody took yet, for the summaries (a move,
        not a take: they still take it, from here)."""
        for (point, plugin_id), counts in previous.take().items():
            mine = self._counts.setdefault((point, plugin_id), [0, 0, 0.0, 0.0])
            mine[0] += counts[0]
            mine[1] += counts[1]
            mine[2] += counts[2]
            mine[3] = max(mine[3], counts[3])


@dataclass(frozen=True)
class _Change:
    """A lifecycle event this replica committed."""

    type: str
    plugin_id: str
    version: str
    day: date


@dataclass
class _Batch:
    changes: list[_Change] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # plugins with a lifecycle event, anywhere
    calls: dict[CallKey, CallStats] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changes or self.touched or self.calls)

    def merge(self, newer: _Batch) -> None:
        self.changes += newer.changes
        self.touched |= newer.touched
        for key, stats in newer.calls.items():
            mine = self.calls.get(key)
            if mine is None:
                self.calls[key] = stats
            else:
                mine.merge(stats)


@dataclass
class _Row:
    """What one ``record_stats`` call writes for one version and day."""

    installs: int = 0
    uninstalls: int = 0
    calls: CallStats = field(default_factory=CallStats)
    level: int | None = None


Digests = dict[str, str | None]  # version -> the digest its installed image names


class CatalogTracking:
    """Records the catalog's statistics of this replica every ``interval_s``.

    ``attach`` puts :class:`CatalogCallTally` in the broker (before it serves calls) and
    subscribes to the bus; ``start`` also loads the installed versions and runs the flushes;
    ``aclose`` flushes what is left. ``on_change`` is called after a flush that changed an
    install count or level (the catalog cache's ``bump``: plugin pages show the totals)."""

    def __init__(
        self,
        *,
        engine: Engine,
        broker: Broker,
        events: EventBus,
        interval_s: float,
        on_change: Callable[[], None] | None = None,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.events = events
        self.interval_s = interval_s
        self.on_change = on_change
        self.close_timeout_s = close_timeout_s
        self.tally = CatalogCallTally(self._route_version)
        self._lock = threading.Lock()
        self._pending = _Batch()  # lifecycle events, from committing threads and the loop
        self._retry = _Batch()  # a failed flush's batch
        # plugin id -> its installed versions' digests, as last read (loop and flush thread,
        # never at once: flushes run one after another).
        self._installed: dict[str, Digests] = {}
        self._subscription: Subscription | None = None
        self._attached = False
        self._listening = False  # the bus cannot forget a commit listener: added once
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- wiring -----------------------------------------------------------------------------------

    def attach(self) -> None:
        if self._attached:
            return
        self._attached = True
        if self.broker.tally is not self.tally:
            self.tally.adopt(self.broker.tally)
            self.broker.tally = self.tally
        if not self._listening:
            self._listening = True
            self.events.on_committed(self._committed)
        self._subscription = self.events.on("plugin.*", self._seen)

    def start(self) -> None:
        self.attach()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="catalog tracking")

    async def aclose(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.close_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("catalog statistics: the last flush did not finish")
            self._task = None
        if self._subscription is not None:
            self.events.off(self._subscription)
            self._subscription = None
        self._attached = False  # the bus keeps the commit listener; it ignores events now

    async def _run(self) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception:
            log.exception("catalog statistics: could not read the installed plugins")
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("catalog statistics: flush failed; kept for the next one")

    def load(self) -> None:
        """Read the digests of every installed version (so an uninstall is judged by its
        image even when this replica saw nothing else of the plugin)."""
        with session_scope(self.engine) as session:
            for plugin in crud.list_plugins(session):
                self._installed[plugin.id] = self._digests(session, plugin.id)

    # -- bus handlers -----------------------------------------------------------------------------

    def _committed(self, events: list[Event]) -> None:
        """Events this replica logged (the committing thread, any thread)."""
        if not self._attached:
            return
        changes = [
            _Change(
                e.type,
                str(e.payload["plugin"]),
                str(e.payload["version"]),
                _utc(e.time).date(),
            )
            for e in events
            if e.type in LIFECYCLE_TYPES
            and e.source == ORCHESTRATOR
            and isinstance(e.payload, dict)
            and e.payload.get("plugin")
            and e.payload.get("version")
        ]
        if changes:
            with self._lock:
                self._pending.changes += changes
                self._pending.touched.update(c.plugin_id for c in changes)

    def _seen(self, event: Event) -> None:
        """A lifecycle event of this replica or another: the plugin's levels and digests are
        read again at the next flush."""
        if event.type in LIFECYCLE_TYPES and event.source == ORCHESTRATOR and event.subject:
            with self._lock:
                self._pending.touched.add(event.subject)

    def _route_version(self, plugin_id: str) -> str | None:
        route = self.broker.route(plugin_id)
        return route.version if route is not None else None

    # -- flushing ---------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what was counted since the last flush, in one transaction (loop thread)."""
        with self._lock:
            batch, self._pending = self._pending, _Batch()
        batch.calls = self.tally.take_calls()
        retry, self._retry = self._retry, _Batch()
        retry.merge(batch)
        if not retry:
            return
        try:
            changed = await asyncio.to_thread(self._write, retry)
        except Exception:
            # Rolled back: all of it is written with the next flush. (Not on cancellation:
            # the thread may still commit it, and a count twice is worse than one lost.)
            self._retry = retry
            raise
        if changed and self.on_change is not None:
            try:
                await asyncio.to_thread(self.on_change)
            except Exception:
                log.exception("catalog statistics: on_change failed")

    def _write(self, batch: _Batch) -> bool:
        today = utcnow().date()
        rows: dict[tuple[str, str, date], _Row] = {}
        refreshed: dict[str, Digests] = {}
        with session_scope(self.engine) as session:
            judge = _Judge(session, self._installed)
            plugins = batch.touched | {c.plugin_id for c in batch.changes}
            for plugin_id in plugins | {key[0] for key in batch.calls}:
                if plugin_id in plugins or plugin_id not in self._installed:
                    refreshed[plugin_id] = judge.after[plugin_id] = self._digests(
                        session, plugin_id
                    )

            for change in batch.changes:
                key = (change.plugin_id, change.version, change.day)
                if change.type == INSTALLED and judge.counts(*key[:2], before=False):
                    rows.setdefault(key, _Row()).installs += 1
                elif change.type == UNINSTALLED and judge.counts(*key[:2], before=True):
                    rows.setdefault(key, _Row()).uninstalls += 1

            for (plugin_id, version, day_number), stats in batch.calls.items():
                if judge.counts(plugin_id, version, before=False):
                    day = _EPOCH + timedelta(days=day_number)
                    rows.setdefault((plugin_id, version, day), _Row()).calls.merge(stats)

            for plugin_id in sorted(plugins):
                self._levels(session, judge, plugin_id, today, rows)

            changed = False
            for (plugin_id, version, day), row in sorted(rows.items()):
                if row.level is None and (row.installs or row.uninstalls):
                    # A level given keeps record_stats from moving it by installs - uninstalls:
                    # the level is what the plugins table says, never a running sum.
                    row.level = _level(session, plugin_id, version, day)
                try:
                    catalog_store.record_stats(
                        session,
                        plugin_id=plugin_id,
                        version=version,
                        day=day,
                        installs=row.installs,
                        uninstalls=row.uninstalls,
                        calls=row.calls.calls,
                        errors=row.calls.errors,
                        latencies_ms=row.calls.samples(),
                        active_installs=row.level,
                    )
                except NotFound:
                    continue  # taken out of the catalog since it was read: nothing to count
                changed = changed or bool(row.installs or row.uninstalls or row.level is not None)
        for plugin_id, digests in refreshed.items():
            if digests:
                self._installed[plugin_id] = digests
            else:
                self._installed.pop(plugin_id, None)  # uninstalled
        return changed

    def _levels(
        self,
        session: Session,
        judge: _Judge,
        plugin_id: str,
        today: date,
        rows: dict[tuple[str, str, date], _Row],
    ) -> None:
        """Set today's level of each catalog version of the plugin that is not what the
        plugins table says now."""
        entries = judge.catalog_versions(plugin_id)
        if not entries:
            return
        plugin = crud.get_plugin(session, plugin_id=plugin_id)
        for entry in entries:
            active = (
                plugin is not None
                and plugin.state == PluginState.ACTIVE.value
                and plugin.version == entry.version
                and judge.counts(plugin_id, entry.version, before=False)
            )
            if int(active) != _level(session, plugin_id, entry.version, today):
                rows.setdefault((plugin_id, entry.version, today), _Row()).level = int(active)

    @staticmethod
    def _digests(session: Session, plugin_id: str) -> Digests:
        return {
            row.version: image_digest(row.image)
            for row in crud.list_versions(session, plugin_id=plugin_id)
        }


class _Judge:
    """Whether a plugin version is a catalog install, within one flush: ``before`` is what
    was known of installed digests before this flush read them again, ``after`` what it read."""

    def __init__(self, session: Session, before: dict[str, Digests]) -> None:
        self.session = session
        self.before = before
        self.after: dict[str, Digests] = {}
        self._catalog: dict[tuple[str, str], CatalogVersion | None] = {}
        self._versions: dict[str, list[CatalogVersion]] = {}

    def entry(self, plugin_id: str, version: str) -> CatalogVersion | None:
        key = (plugin_id, version)
        if key not in self._catalog:
            self._catalog[key] = catalog_store.get_version(
                self.session, plugin_id=plugin_id, version=version
            )
        return self._catalog[key]

    def catalog_versions(self, plugin_id: str) -> list[CatalogVersion]:
        if plugin_id not in self._versions:
            self._versions[plugin_id] = catalog_store.list_versions(
                self.session, plugin_id=plugin_id
            )
        return self._versions[plugin_id]

    def counts(self, plugin_id: str, version: str, *, before: bool) -> bool:
        """``before``: judge by the installation as it was (an uninstall), else as it is."""
        entry = self.entry(plugin_id, version)
        if entry is None:
            return False
        old, new = self.before.get(plugin_id, {}), self.after.get(plugin_id, {})
        for known in (old, new) if before else (new, old):
            if version in known:
                return known[version] == entry.digest
        return True  # nothing seen of this installation: its id and version decide


def _level(session: Session, plugin_id: str, version: str, day: date) -> int:
    [stats] = catalog_store.daily_stats(
        session, plugin_id=plugin_id, since=day, until=day, version=version
    )
    return stats.active_installs


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
