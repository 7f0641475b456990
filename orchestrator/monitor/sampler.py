"""Samples every running plugin container every ``interval_s`` and records the samples.

One sample per plugin: its container's memory, CPU time, throttling, pids and block I/O
(``cgroups.ContainerMeter``: the cgroup files, else the runtime's stats), the host API storage
it uses (from the store), and what this process counted: the egress bytes, and the calls
brokered to the plugin, how many of them failed and their time (callables the app passes: the
egress proxy's counters, and :func:`call_stats_from` the broker's metrics).

Counters become what was used since the previous sample, and each plugin's running totals
(CPU time, network bytes, calls, failed calls, calls' time) carry on across container
replacements and orchestrator restarts: a new container's counters start at zero (all of its
reading is new use, if it was created after the plugin's last stored point), the process's own
counters start at zero with the process, and the totals start from the newest stored point.
CPU used while no orchestrator sampled an adopted container is not counted (it cannot be told
from before).

It runs in a thread of its own (every read is blocking file or database I/O) and samples
only while ``should_run()`` says so: with replicas, on the elected supervisor. After each
round it calls the ``listeners`` (the quota policies) with the samples, and rolls up and
prunes the series every ``maintain_every_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.monitor.cgroups import ContainerMeter, ContainerUsage
from orchestrator.monitor.series import UsageSeries
from orchestrator.store import usage as store
from orchestrator.store.db import Engine, session_scope

if TYPE_CHECKING:
    from orchestrator.monitor.metrics import Metrics

__all__ = [
    "SAMPLED_STATES",
    "CallStats",
    "Sampler",
    "UsageSample",
    "call_counts_from",
    "call_stats_from",
]

log = logging.getLogger(__name__)

# Plugins whose container is sampled. PAUSED joins once idle pause exists (a frozen
# container's memory is still held; its CPU time does not grow).
SAMPLED_STATES: tuple[str, ...] = ("ACTIVE", "PAUSED")
# Samples kept per plugin in memory for the quota rules (enough for N samples of any rule).
RECENT_SAMPLES = 120
# Runtime stats (no cgroup files) take about a second each: this many run at once.
RUNTIME_STATS_WORKERS = 8


@dataclass(frozen=True)
class UsageSample:
    """One plugin at one time, in raw units; counters are what was used since the previous
    sample, ``*_total`` the running totals. None: not available."""

    plugin_id: str
    at: float
    state: str
    container_id: str
    resources: Mapping[str, Any] = field(default_factory=dict)
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    cpu_usec: int | None = None
    cpu_total_usec: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    pids: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    network_bytes: int | None = None
    network_total_bytes: int | None = None
    storage_bytes: int | None = None
    calls: int | None = None
    calls_total: int | None = None
    errors: int | None = None
    errors_total: int | None = None
    call_usec: int | None = None
    call_usec_total: int | None = None
    source: str = "none"

    def point(self) -> dict[str, Any]:
        """The sample as a point of the series (``series.FIELDS`` and the plugin)."""
        return {
            "plugin_id": self.plugin_id,
            "memory_bytes": self.memory_bytes,
            "memory_max_bytes": self.memory_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "cpu_usec": self.cpu_usec,
            "cpu_total_usec": self.cpu_total_usec,
            "cpu_periods": self.cpu_periods,
            "cpu_throttled_periods": self.cpu_throttled_periods,
            "pids": self.pids,
            "io_read_bytes": self.io_read_bytes,
            "io_write_bytes": self.io_write_bytes,
            "network_bytes": self.network_bytes,
            "network_total_bytes": self.network_total_bytes,
            "storage_bytes": self.storage_bytes,
            "calls": self.calls,
            "calls_total": self.calls_total,
            "errors": self.errors,
            "errors_total": self.errors_total,
            "call_usec": self.call_usec,
            "call_usec_total": self.call_usec_total,
        }


@dataclass(frozen=True)
class CallStats:
    """The calls brokered to one plugin by this process since it started: how many, how many
    did not end ``ok``, and their time added up in microseconds (None: not counted)."""

    calls: int
    errors: int | None = None
    usec: int | None = None


class _Counter:
    """A cumulative reading turned into use since the last reading, and a running total.

    ``source`` names what the reading counts from (a container id, or this process): a new
    source's counter started at zero, so its first reading is all new use when
    ``fresh_source`` says so, and only a baseline otherwise.
    """

    __slots__ = ("last", "source", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.source: str | None = None
        self.last: int | None = None

    def advance(self, source: str, reading: int | None, *, fresh_source: bool) -> int | None:
        if reading is None:
            return None
        if source != self.source or self.last is None:
            used = reading if fresh_source else 0
        elif reading < self.last:  # the counter was reset under the same name
            used = reading
        else:
            used = reading - self.last
        self.source, self.last = source, reading
        self.total += used
        return used


@dataclass
class _PluginState:
    restored_at: float | None  # the newest stored point's time when first seen
    cpu: _Counter
    network: _Counter
    calls: _Counter
    errors: _Counter
    call_usec: _Counter
    periods: _Counter = field(default_factory=lambda: _Counter(0))
    throttled: _Counter = field(default_factory=lambda: _Counter(0))
    io_read: _Counter = field(default_factory=lambda: _Counter(0))
    io_write: _Counter = field(default_factory=lambda: _Counter(0))
    recent: deque[UsageSample] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))

    def process_counters(self) -> dict[str, _Counter]:
        """The counters read from this process's own counts (not the container's)."""
        return {
            "network": self.network,
            "calls": self.calls,
            "errors": self.errors,
            "call_usec": self.call_usec,
        }


Listener = Callable[[list[UsageSample]], None]


class Sampler:
    """``egress_bytes(plugin_id)``: bytes the plugin moved through this process's egress
    proxy since it started (None: unknown); ``call_stats()``: the calls brokered to each plugin
    by this process since it started (a plugin left out had none). ``call_counts()``, the
    number of calls alone, is still taken in its place (failed calls and calls' time are then
    not available); without either, no call is counted."""

    def __init__(
        self,
        *,
        engine: Engine,
        meter: ContainerMeter,
        series: UsageSeries,
        interval_s: float = 10.0,
        should_run: Callable[[], bool] = lambda: True,
        egress_bytes: Callable[[str], int | None] = lambda _plugin: None,
        call_stats: Callable[[], Mapping[str, CallStats]] | None = None,
        call_counts: Callable[[], Mapping[str, int]] | None = None,
        listeners: Iterable[Listener] = (),
        maintain_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if call_stats is not None and call_counts is not None:
            raise ValueError("pass call_stats or call_counts, not both")
        self.engine = engine
        self.meter = meter
        self.series = series
        self.interval_s = interval_s
        self.should_run = should_run
        self.egress_bytes = egress_bytes
        self.call_stats = call_stats
        # What a plugin the counts leave out had: no call (no failure, no time, where those are
        # counted); nothing known without counts.
        self._no_calls: CallStats | None = CallStats(0, 0, 0) if call_stats is not None else None
        if call_counts is not None:
            counts = call_counts
            self.call_stats = lambda: {p: CallStats(n) for p, n in counts().items()}
            self._no_calls = CallStats(0)
        self.listeners = list(listeners)
        self.maintain_every_s = maintain_every_s
        self.clock = clock
        self._plugins: dict[str, _PluginState] = {}
        # This process's counters' last readings per plugin, kept while the plugin is not
        # sampled (disabled, or another replica samples), so they are never counted twice.
        self._process_last: dict[str, dict[str, int | None]] = {}
        self._running = False
        self._latest: dict[str, UsageSample] = {}
        self._last_maintain = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(RUNTIME_STATS_WORKERS, thread_name_prefix="summit-stats")
        self.last_round_s: float | None = None

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="summit-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self.should_run():
                    if not self._running:
                        # (Again) the sampling replica: totals are re-read from the database,
                        # which another replica may have moved on meanwhile.
                        with self._lock:
                            self._plugins.clear()
                        self._running = True
                    self.sample_once()
                    self._maintain()
                else:
                    self._running = False
            except Exception:
                log.exception("resource sampling failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _maintain(self) -> None:
        now = self.clock()
        if now - self._last_maintain >= self.maintain_every_s:
            self._last_maintain = now
            rolled, pruned = self.series.maintain(now=now)
            if rolled or pruned:
                log.debug("usage series: %d points rolled up, %d pruned", rolled, pruned)

    # -- one round -------------------------------------------------------------------------------

    def sample_once(self) -> list[UsageSample]:
        """Sample every running plugin now, record, and tell the listeners."""
        t0 = time.monotonic()
        at = self.clock()
        with session_scope(self.engine) as session:
            targets = store.sampling_targets(session, states=SAMPLED_STATES)
            storage = store.storage_used_by_plugin(session)
        self.meter.locator.forget({t.container_id for t in targets})
        readings = self._read_all([t.container_id for t in targets])
        restored = self._restore([t.plugin_id for t in targets if t.plugin_id not in self._plugins])
        calls = dict(self.call_stats()) if self.call_stats is not None else {}
        samples = []
        for target in targets:
            state = self._plugins.get(target.plugin_id)
            if state is None:
                state = self._plugins[target.plugin_id] = restored[target.plugin_id]
            usage = readings.get(target.container_id, ContainerUsage())
            fresh_container = state.restored_at is None or (
                _epoch(target.container_created_at) >= state.restored_at
            )
            samples.append(
                self._sample(
                    target,
                    state,
                    usage,
                    at=at,
                    fresh_container=fresh_container,
                    storage_bytes=storage.get(target.plugin_id, 0),
                    egress=self._egress(target.plugin_id),
                    calls=calls.get(target.plugin_id, self._no_calls),
                )
            )
        # Plugins no longer running: their totals stay in the database, not in memory.
        running = {t.plugin_id for t in targets}
        with self._lock:
            for plugin_id in [p for p in self._plugins if p not in running]:
                del self._plugins[plugin_id]
            self._latest = {s.plugin_id: s for s in samples}
        self.series.record([s.point() for s in samples], at=at)
        for listener in self.listeners:
            try:
                listener(samples)
            except Exception:
                log.exception("a listener of the resource samples failed")
        self.last_round_s = time.monotonic() - t0
        return samples

    def _read_all(self, container_ids: list[str]) -> dict[str, ContainerUsage]:
        out: dict[str, ContainerUsage] = {}
        slow = []
        for container_id in container_ids:
            if self.meter.reads_files(container_id):
                out[container_id] = self.meter.read(container_id)
            else:
                slow.append(container_id)
        # Runtime stats block for about a second each: read them side by side.
        for container_id, usage in zip(slow, self._pool.map(self.meter.read, slow), strict=True):
            out[container_id] = usage
        return out

    def _restore(self, plugin_ids: list[str]) -> dict[str, _PluginState]:
        """Running totals of plugins first seen by this sampler, from their newest points."""
        if not plugin_ids:
            return {}
        latest = self.series.current(plugin_ids)
        out = {}
        for plugin_id in plugin_ids:
            point = latest.get(plugin_id) or {}
            state = _PluginState(
                restored_at=float(point["at"]) if point else None,
                cpu=_Counter(int(point.get("cpu_total_usec") or 0)),
                network=_Counter(int(point.get("network_total_bytes") or 0)),
                calls=_Counter(int(point.get("calls_total") or 0)),
                errors=_Counter(int(point.get("errors_total") or 0)),
                call_usec=_Counter(int(point.get("call_usec_total") or 0)),
            )
            last = self._process_last.get(plugin_id, {})
            for name, counter in state.process_counters().items():
                if last.get(name) is not None:
                    counter.source, counter.last = "process", last[name]
            out[plugin_id] = state
        return out

    def _egress(self, plugin_id: str) -> int | None:
        try:
            return self.egress_bytes(plugin_id)
        except Exception:
            log.debug("no egress counter for %s", plugin_id, exc_info=True)
            return None

    def _sample(
        self,
        target: store.SamplingTarget,
        state: _PluginState,
        usage: ContainerUsage,
        *,
        at: float,
        fresh_container: bool,
        storage_bytes: int,
        egress: int | None,
        calls: CallStats | None,
    ) -> UsageSample:
        cid = target.container_id
        cpu = state.cpu.advance(cid, usage.cpu_usec, fresh_source=fresh_container)
        # This process's counters started at zero with it: all of their first reading is new.
        network = state.network.advance("process", egress, fresh_source=True)
        call_count = calls.calls if calls is not None else None
        call_errors = calls.errors if calls is not None else None
        call_usec = calls.usec if calls is not None else None
        call_delta = state.calls.advance("process", call_count, fresh_source=True)
        error_delta = state.errors.advance("process", call_errors, fresh_source=True)
        usec_delta = state.call_usec.advance("process", call_usec, fresh_source=True)
        self._process_last[target.plugin_id] = {
            name: counter.last for name, counter in state.process_counters().items()
        }
        sample = UsageSample(
            plugin_id=target.plugin_id,
            at=at,
            state=target.state,
            container_id=cid,
            resources=target.resources,
            memory_bytes=usage.memory_bytes,
            memory_limit_bytes=usage.memory_limit_bytes,
            cpu_usec=cpu,
            cpu_total_usec=state.cpu.total if usage.cpu_usec is not None else None,
            cpu_periods=state.periods.advance(cid, usage.cpu_periods, fresh_source=fresh_container),
            cpu_throttled_periods=state.throttled.advance(
                cid, usage.cpu_throttled_periods, fresh_source=fresh_container
            ),
            pids=usage.pids,
            io_read_bytes=state.io_read.advance(
                cid, usage.io_read_bytes, fresh_source=fresh_container
            ),
            io_write_bytes=state.io_write.advance(
                cid, usage.io_write_bytes, fresh_source=fresh_container
            ),
            network_bytes=network,
            network_total_bytes=state.network.total if egress is not None else None,
            storage_bytes=storage_bytes,
            calls=call_delta,
            calls_total=state.calls.total if call_count is not None else None,
            errors=error_delta,
            errors_total=state.errors.total if call_errors is not None else None,
            call_usec=usec_delta,
            call_usec_total=state.call_usec.total if call_usec is not None else None,
            source=usage.source,
        )
        state.recent.append(sample)
        return sample

    # -- what others read ----------------------------------------------------------------------

    def latest(self) -> dict[str, UsageSample]:
        """The last round's sample of each plugin it sampled (empty on a replica that does
        not sample)."""
        with self._lock:
            return dict(self._latest)

    def recent(self, plugin_id: str) -> list[UsageSample]:
        """This plugin's samples kept in memory, oldest first (at most ``RECENT_SAMPLES``)."""
        with self._lock:
            state = self._plugins.get(plugin_id)
            return list(state.recent) if state is not None else []


def _epoch(value: datetime) -> float:
    # SQLite hands back naive datetimes; the store writes UTC only.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def call_counts_from(metric: Any) -> Callable[[], dict[str, int]]:
    """``call_counts`` for a Prometheus counter labelled by ``plugin`` (the broker's
    ``Metrics.calls``): every outcome and extension point of a plugin added up. (Superseded by
    :func:`call_stats_from`, which also counts failed calls and calls' time.)"""

    def read() -> dict[str, int]:
        out: dict[str, int] = {}
        for family in metric.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    plugin = s.labels.get("plugin")
                    if plugin is not None:
                        out[plugin] = out.get(plugin, 0) + int(s.value)
        return out

    return read


def call_stats_from(metrics: Metrics) -> Callable[[], dict[str, CallStats]]:
    """``call_stats`` from the broker's metrics, every extension point of a plugin added up:
    calls and failed calls (any outcome but ``ok``) from the counter ``Metrics.calls``
    (labelled plugin, point, outcome), calls' time from the histogram ``Metrics.latency``
    (labelled plugin, point; seconds)."""

    def read() -> dict[str, CallStats]:
        calls: dict[str, int] = {}
        errors: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for family in metrics.calls.collect():
            # A counter's samples: ``<name>_total`` (the count) and ``<name>_created``.
            total = family.name + "_total"
            for s in family.samples:
                plugin = s.labels.get("plugin")
                if s.name != total or plugin is None:
                    continue
                calls[plugin] = calls.get(plugin, 0) + int(s.value)
                if s.labels.get("outcome") != "ok":
                    errors[plugin] = errors.get(plugin, 0) + int(s.value)
        for family in metrics.latency.collect():
            # A histogram's: ``<name>_bucket``, ``_count``, ``_sum`` (seconds), ``_created``.
            summed = family.name + "_sum"
            for s in family.samples:
                plugin = s.labels.get("plugin")
                if s.name == summed and plugin is not None:
                    seconds[plugin] = seconds.get(plugin, 0.0) + s.value
        return {
            plugin: CallStats(
                calls=calls.get(plugin, 0),
                errors=errors.get(plugin, 0),
                usec=round(seconds.get(plugin, 0.0) * 1_000_000),
            )
            for plugin in calls.keys() | seconds.keys()
        }

    return read
