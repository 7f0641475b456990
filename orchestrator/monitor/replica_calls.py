"""The calls brokered by every replica, for the resource sampler, which runs on one of them.

Each replica's broker counts its own calls (``sampler.call_stats_from``: per plugin, calls,
failed calls and their time, counted from zero when the process started). The sampler runs on
the elected supervisor only, so with several replicas it must also count the calls brokered by
the others, each one once.

- Every replica writes its cumulative counts, with its id and its start time, to Redis every
  few seconds (``publish``, a thread of its own): the key ``<instance>:calls:replica:<id>``,
  which expires ``ttl_s`` after the last write, listed in the set ``<instance>:calls:replicas``.
  A replica that stops cleanly writes once more on its way out.
- The sampling replica (``read``, the sampler's ``call_stats``) reads every live replica's
  counts (its own from its own process) and turns them into one cumulative count per plugin
  that only grows and starts at zero with this process, as the sampler expects of a process's
  counters. For each replica it adds what grew since the counts were last counted; a replica
  whose start time changed was restarted, and all of its counts are new, as are those of a
  plugin first called on a replica since it was last counted (its counter started at zero).
  A count lower than what was counted of the same run is an older copy: it adds nothing.
- What has been counted is written back, per replica, to the hash ``<instance>:calls:counted``
  by whichever replica samples. A replica that becomes the sampler (a failover, or leadership
  coming back to it) carries on from there: the calls the previous sampler counted are not
  counted again, and calls brokered meanwhile by replicas still running are not lost. A
  replica absent from a hash that exists has not been counted by anyone: all of its counts are
  new. Only with no such hash at all (Redis lost it, or nothing has sampled yet) does the first
  reading of a replica started before this one serve as a baseline (its calls until then are
  taken as counted); one started since is counted whole.

What is lost: a replica that dies stops contributing once its key expires; the calls it
brokered after its last write (at most ``publish_s``, a few seconds) are not counted. While
Redis cannot be read, the sampler counts its own process's calls only; the others' are counted
late, not lost, if their keys outlive the outage. Two replicas sampling at once (a supervisor
lease that lapsed under a live one) may both count the calls of those rounds.

Without Redis there is one replica: its own process's counts are the whole truth, read as they
are, and nothing is shared.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.monitor.sampler import CallStats

__all__ = ["ReplicaCallStats"]

log = logging.getLogger(__name__)

# How often each replica writes its counts, and how long they live after its last write.
PUBLISH_S = 5.0
TTL_S = 30.0
# How long what was counted of a replica no longer seen is kept (it might come back, with the
# same start time, after its key expired during a Redis outage).
FORGET_S = 24 * 3600.0
REDIS_TIMEOUT_S = 5.0

# A plugin's counts: calls, failed calls, calls' time in microseconds.
Counts = tuple[int, int, int]


@dataclass(frozen=True)
class _Reading:
    """One replica's counts since its start (``started``, its clock)."""

    started: float
    plugins: dict[str, Counts]

    def dump(self, **extra: Any) -> str:
        return json.dumps({"started": self.started, "plugins": self.plugins, **extra})

    @classmethod
    def load(cls, raw: bytes | str) -> tuple[_Reading, dict[str, Any]]:
        data = json.loads(raw)
        plugins = {str(p): _counts(v) for p, v in dict(data.get("plugins") or {}).items()}
        return cls(started=float(data["started"]), plugins=plugins), data


def _counts(value: Any) -> Counts:
    calls, errors, usec = (int(v or 0) for v in value)
    return calls, errors, usec


class ReplicaCallStats:
    """``call_stats()``: this process's calls per plugin (``sampler.call_stats_from``);
    ``replica``: this replica's id (the leadership holder); ``redis_url`` None: one replica."""

    def __init__(
        self,
        *,
        call_stats: Callable[[], Mapping[str, CallStats]],
        replica: str,
        redis_url: str | None = None,
        instance: str = "summit",
        publish_s: float = PUBLISH_S,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= publish_s:
            raise ValueError("the counts must outlive several writes (ttl_s > publish_s)")
        self.call_stats = call_stats
        self.replica = replica
        self.publish_s = publish_s
        self.ttl_s = ttl_s
        self.clock = clock
        # The process's counters start at zero about now: the app builds this at startup,
        # before any call is brokered.
        self.started = clock()
        self._redis = (
            redis.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            if redis_url
            else None
        )
        self._index = f"{instance}:calls:replicas"
        self._prefix = f"{instance}:calls:replica:"
        self._counted_key = f"{instance}:calls:counted"
        # What this process last counted of each replica's run (id, start time), and when.
        self._last: dict[tuple[str, float], dict[str, Counts]] = {}
        self._last_seen: dict[tuple[str, float], float] = {}
        self._totals: dict[str, list[int]] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- every replica: sharing its counts ------------------------------------------------------

    def start(self) -> None:
        if self._redis is None:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="summit-call-stats", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
            try:
                self.publish()  # the calls since the last write, for the sampler to count
            except redis.RedisError as exc:
                log.warning("the last call counts were not shared: %s", exc)
        if self._redis is not None:
            self._redis.close()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.publish_s):
            try:
                self.publish()
                failing = False
            except redis.RedisError as exc:
                if not failing:  # once per outage, not every few seconds
                    log.warning("call counts not shared with the sampling replica: %s", exc)
                failing = True
            except Exception:
                log.exception("sharing the call counts failed")

    def publish(self) -> None:
        """Write this process's counts to Redis (nothing without Redis)."""
        if self._redis is None:
            return
        key = self._prefix + self.replica
        with self._redis.pipeline() as pipe:
            pipe.set(key, self._own().dump(), px=int(self.ttl_s * 1000))
            pipe.sadd(self._index, self.replica)
            pipe.execute()

    def _own(self) -> _Reading:
        plugins = {
            plugin: (stats.calls, stats.errors or 0, stats.usec or 0)
            for plugin, stats in self.call_stats().items()
        }
        return _Reading(started=self.started, plugins=plugins)

    # -- the sampling replica: counting every replica's calls ----------------------------------

    def read(self) -> dict[str, CallStats]:
        """The calls brokered to each plugin by every replica, counted by this process since
        it started (only growing). Without Redis: this process's own counts."""
        own = self._own()
        if self._redis is None:
            return {p: CallStats(*counts) for p, counts in own.plugins.items()}
        now = self.clock()
        live: dict[str, _Reading] = {}
        counted: dict[str, tuple[_Reading, float]] | None = None
        shared = True
        try:
            # In this order: what was counted is then no newer than the counts read.
            counted = self._counted()
            live = self._live()
        except redis.RedisError as exc:
            log.warning("only this replica's calls are counted: Redis cannot be read (%s)", exc)
            shared = False
        live[self.replica] = own  # fresher than what this replica last wrote
        with self._guard:
            for replica, reading in live.items():
                self._count(replica, reading, counted, now)
            self._forget(now)
            totals = {p: CallStats(*counts) for p, counts in self._totals.items()}
            done = {
                replica: _Reading(reading.started, self._last[(replica, reading.started)])
                for replica, reading in live.items()
            }
        if shared:
            try:
                self._write_counted(done, counted or {}, now)
            except redis.RedisError as exc:
                log.warning("what was counted of each replica was not shared: %s", exc)
        return totals

    def _count(
        self,
        replica: str,
        reading: _Reading,
        counted: dict[str, tuple[_Reading, float]] | None,
        now: float,
    ) -> None:
        base = self._base(replica, reading, counted)
        seen = dict(base or {})
        for plugin, counts in reading.plugins.items():
            before = counts if base is None else base.get(plugin, (0, 0, 0))
            total = self._totals.setdefault(plugin, [0, 0, 0])
            for i, (value, last) in enumerate(zip(counts, before, strict=True)):
                # A run's counts only grow (a restart is a new run, all new): one lower than
                # what was counted is an older copy, with nothing new in it.
                total[i] += max(0, value - last)
            seen[plugin] = (
                max(counts[0], before[0]),
                max(counts[1], before[1]),
                max(counts[2], before[2]),
            )
        run = (replica, reading.started)
        self._last[run] = seen
        self._last_seen[run] = now

    def _base(
        self,
        replica: str,
        reading: _Reading,
        counted: dict[str, tuple[_Reading, float]] | None,
    ) -> dict[str, Counts] | None:
        """What was already counted of this replica's run, per plugin (a plugin left out: none
        of its calls); None: nothing is known, its reading is only a baseline."""
        known = []
        if counted is not None and replica in counted:
            shared, _seen = counted[replica]
            if shared.started == reading.started:
                known.append(shared.plugins)
        mine = self._last.get((replica, reading.started))
        if mine is not None:
            known.append(mine)
        if known:
            # The newest of what another sampler and this one counted (each only grows).
            merged: dict[str, Counts] = {}
            for plugins in known:
                for plugin, counts in plugins.items():
                    prior = merged.get(plugin, counts)
                    merged[plugin] = (
                        max(prior[0], counts[0]),
                        max(prior[1], counts[1]),
                        max(prior[2], counts[2]),
                    )
            return merged
        if counted is not None:
            return {}  # samplers were counting, and none counted this run: all of it is new
        if reading.started >= self.started:
            return {}  # started since this process: nobody else can have counted it
        return None

    def _forget(self, now: float) -> None:
        for run in [r for r, seen in self._last_seen.items() if now - seen > FORGET_S]:
            del self._last_seen[run]
            del self._last[run]

    # -- Redis -----------------------------------------------------------------------------------

    def _live(self) -> dict[str, _Reading]:
        assert self._redis is not None
        members = sorted(_text(m) for m in self._redis.smembers(self._index))
        if not members:
            return {}
        values = self._redis.mget([self._prefix + m for m in members])
        out: dict[str, _Reading] = {}
        expired = []
        for replica, raw in zip(members, values, strict=True):
            if raw is None:
                expired.append(replica)
                continue
            try:
                out[replica] = _Reading.load(raw)[0]
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable call counts of replica %s skipped", replica)
        if expired:
            # Dead replicas: they stop contributing. (One writing again is listed again.)
            self._redis.srem(self._index, *expired)
        return out

    def _counted(self) -> dict[str, tuple[_Reading, float]] | None:
        """What samplers counted of each replica, and when they last saw it; None when
        nothing has been recorded."""
        assert self._redis is not None
        raw = self._redis.hgetall(self._counted_key)
        if not raw:
            return None
        out = {}
        for name, value in raw.items():
            try:
                reading, data = _Reading.load(value)
                out[_text(name)] = (reading, float(data.get("seen") or 0.0))
            except (ValueError, KeyError, TypeError):
                continue  # counted again as a run nobody counted; better than not at all
        return out

    def _write_counted(
        self,
        done: dict[str, _Reading],
        counted: dict[str, tuple[_Reading, float]],
        now: float,
    ) -> None:
        assert self._redis is not None
        stale = [r for r, (_, seen) in counted.items() if r not in done and now - seen > FORGET_S]
        with self._redis.pipeline() as pipe:
            pipe.hset(
                self._counted_key,
                mapping={replica: reading.dump(seen=now) for replica, reading in done.items()},
            )
            if stale:
                pipe.hdel(self._counted_key, *stale)
            pipe.expire(self._counted_key, int(FORGET_S))
            pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
