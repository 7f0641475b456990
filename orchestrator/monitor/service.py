"""The read side of the resource monitor, for the API: a plugin's usage over a time range,
every plugin's current usage, and every plugin's usage over a time range.

Answers use the platform's ResourceUsage fields, in the REST API's snake_case:
``memory_used_mb`` and ``storage_used_mb`` in MiB (2**20 bytes, two decimals), ``cpu_time_ms``
(the plugin's CPU time so far, across its containers), ``network_bytes_transferred`` (egress
bytes so far), plus ``pids``, ``calls`` (brokered so far) and ``errors`` (of those, the ones
whose outcome was not ``ok``). A point of a series adds what was used within its step, among
it ``calls_in_step``, ``errors_in_step``, ``call_ms_in_step`` (the calls' time added up) and
``call_ms_mean`` (per call). The series stores raw units (bytes, microseconds); the conversion
happens here and only here.

Times in a query: ISO 8601 (UTC when no offset is given), ``now``, or relative to now
(``-90s``, ``-15m``, ``-1h``, ``-7d``). Steps: seconds (``60``) or ``10s``, ``5m``, ``1h``,
``1d``; without one, the step keeps the answer near :data:`TARGET_POINTS` points.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.domain.errors import InvalidInput, NotFound, SummitError
from orchestrator.monitor.series import MAX_FLEET_POINTS, MAX_POINTS, UsageSeries
from orchestrator.store import plugins as plugin_store
from orchestrator.store import usage as store
from orchestrator.store.db import Engine, session_scope

__all__ = ["UsageService", "parse_step", "parse_time", "resource_usage"]

MIB = 1024 * 1024
DEFAULT_RANGE_S = 3600
TARGET_POINTS = 360
# Steps an automatic choice rounds up to.
NICE_STEPS = (10, 30, 60, 300, 900, 1800, 3600, 6 * 3600, 86400)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^-(\d+)([smhdw])$")
_STEP = re.compile(r"^(\d+)([smhdw]?)$")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}",
        code="invalid_request",
        details=[{"path": f"query.{field}", "message": message}],
    )


def parse_time(value: str, *, field: str, now: float) -> float:
    """Unix seconds from ISO 8601, ``now`` or ``-<n><s|m|h|d|w>``."""
    text = value.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(
            field, f"{value!r} is not a time: use ISO 8601, 'now' or e.g. '-1h'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_step(value: str) -> int:
    """Seconds from ``60`` or ``10s``, ``5m``, ``1h``, ``1d``, ``1w`` (at least 1)."""
    match = _STEP.match(value.strip())
    if not match or int(match.group(1)) < 1:
        raise _invalid("step", f"{value!r} is not a step: use seconds or e.g. '10s', '5m', '1h'")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _mib(n: int | None) -> float | None:
    return round(n / MIB, 2) if n is not None else None


def _ms(usec: int | None) -> float | None:
    return round(usec / 1000, 2) if usec is not None else None


def resource_usage(point: Mapping[str, Any]) -> dict[str, Any]:
    """A stored point as the platform's ResourceUsage (converted units)."""
    cpu = point.get("cpu_total_usec")
    return {
        "memory_used_mb": _mib(point.get("memory_bytes")),
        "cpu_time_ms": round(cpu / 1000, 1) if cpu is not None else None,
        "network_bytes_transferred": point.get("network_total_bytes"),
        "storage_used_mb": _mib(point.get("storage_bytes")),
        "pids": point.get("pids"),
        "calls": point.get("calls_total"),
        "errors": point.get("errors_total"),
    }


def _series_point(point: Mapping[str, Any]) -> dict[str, Any]:
    periods = point.get("cpu_periods")
    throttled = point.get("cpu_throttled_periods")
    cpu_used = point.get("cpu_usec")
    calls = point.get("calls")
    call_usec = point.get("call_usec")
    return {
        "at": _iso(point["at"]),
        **resource_usage(point),
        "memory_max_mb": _mib(point.get("memory_max_bytes")),
        "memory_limit_mb": _mib(point.get("memory_limit_bytes")),
        "cpu_used_ms": round(cpu_used / 1000, 1) if cpu_used is not None else None,
        "cpu_throttled_share": (
            round(throttled / periods, 3) if periods and throttled is not None else None
        ),
        "network_bytes": point.get("network_bytes"),
        "io_read_bytes": point.get("io_read_bytes"),
        "io_write_bytes": point.get("io_write_bytes"),
        "calls_in_step": calls,
        "errors_in_step": point.get("errors"),
        "call_ms_in_step": _ms(call_usec),
        "call_ms_mean": (
            round(call_usec / calls / 1000, 2) if calls and call_usec is not None else None
        ),
        "samples": point.get("samples"),
    }


class UsageService:
    """``egress_usage(plugin_id)``: the egress proxy's counters of this replica (the old
    answer's ``network``); ``interval_s``: the sampling period (a sample older than three of
    them is stale: no ``usage`` now); ``max_fleet_points``: the most points a series of every
    plugin answers, all plugins together."""

    def __init__(
        self,
        *,
        engine: Engine,
        series: UsageSeries,
        egress_usage: Callable[[str], Mapping[str, int]] | None = None,
        live_usage: Callable[[str], Mapping[str, Any]] | None = None,
        interval_s: float = 10.0,
        max_fleet_points: int = MAX_FLEET_POINTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.series = series
        self.egress_usage = egress_usage
        # A reading now, for a plugin with no fresh sample yet (just enabled, or this replica
        # does not sample): the old answer's keys.
        self.live_usage = live_usage
        self.interval_s = interval_s
        self.max_fleet_points = max_fleet_points
        self.clock = clock

    def _plugin(self, plugin_id: str) -> tuple[str, dict[str, Any]]:
        with session_scope(self.engine) as session:
            plugin = plugin_store.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
            return plugin.state, dict(plugin.resources)

    def _fresh(self, point: Mapping[str, Any] | None, now: float) -> bool:
        return point is not None and now - point["at"] <= 3 * max(self.interval_s, 10)

    def plugin_usage(
        self,
        plugin_id: str,
        *,
        since: str | None = None,
        until: str | None = None,
        step: str | None = None,
    ) -> dict[str, Any]:
        """Without a range: now (the old answer's ``plugin``, ``limits``, ``usage``,
        ``network``, and ``current`` as ResourceUsage). With any of ``since``, ``until``,
        ``step``: also ``series``, the points of that range."""
        now = self.clock()
        state, resources = self._plugin(plugin_id)
        limits = {k: v for k, v in resources.items() if k != "quota_policy"}
        answer: dict[str, Any] = {"plugin": plugin_id, "state": state, "limits": limits}
        if since is None and until is None and step is None:
            point = self.series.current([plugin_id]).get(plugin_id)
            fresh = self._fresh(point, now)
            if fresh and point:
                answer["usage"] = self._old_usage(point)
            else:
                answer["usage"] = self._live(plugin_id) if state == "ACTIVE" else {}
            answer["current"] = (
                {"at": _iso(point["at"]), **resource_usage(point)} if point else None
            )
            answer["network"] = dict(self.egress_usage(plugin_id)) if self.egress_usage else {}
            return answer
        start, end, asked = self._range(since, until, step, now=now)
        used_step, points = self.series.series(plugin_id, since=start, until=end, step_s=asked)
        answer["series"] = {
            "since": _iso(start),
            "until": _iso(end),
            "step_s": used_step,
            "points": [_series_point(p) for p in points],
        }
        return answer

    def _live(self, plugin_id: str) -> dict[str, Any]:
        if self.live_usage is None:
            return {}
        try:
            return dict(self.live_usage(plugin_id))
        except SummitError:  # gone meanwhile, or the runtime cannot tell
            return {}

    def fleet_usage(
        self, *, since: str | None = None, until: str | None = None, step: str | None = None
    ) -> dict[str, Any]:
        """Every plugin's series over a range (default: the last hour) at one step:
        ``since``, ``until``, ``step_s`` and ``plugins``, each plugin's points as in
        :meth:`plugin_usage`'s ``series``. A plugin without a point in the range is left out;
        one uninstalled since is still in (its points stay until their retention ends).

        Points of all plugins together stay within ``max_fleet_points``: without ``step`` the
        step grows until they do; a ``step`` too fine for that is refused."""
        now = self.clock()
        start, end, asked = self._range(since, until, step, now=now)
        plugins = max(1, len(self.series.plugins_between(since=start, until=end)))
        if step is None:
            per_plugin = max(1, min(TARGET_POINTS, self.max_fleet_points // plugins))
            asked = max(asked, self._auto_step(end - start, points=per_plugin))
        if (end - start) / asked * plugins > self.max_fleet_points:
            raise _invalid(
                "step",
                f"{asked}s over {end - start:.0f}s for {plugins} plugins would be more than "
                f"{self.max_fleet_points} points",
            )
        used_step, series = self.series.fleet(since=start, until=end, step_s=asked)
        return {
            "since": _iso(start),
            "until": _iso(end),
            "step_s": used_step,
            "plugins": {
                plugin_id: [_series_point(p) for p in points]
                for plugin_id, points in sorted(series.items())
            },
        }

    def all_usage(
        self, *, since: str | None = None, until: str | None = None, step: str | None = None
    ) -> dict[str, Any]:
        """:meth:`current` and, with any of ``since``, ``until``, ``step``, also ``series``:
        :meth:`fleet_usage` of that range."""
        if since is None and until is None and step is None:
            return self.current()
        series = self.fleet_usage(since=since, until=until, step=step)
        return {**self.current(), "series": series}

    def _range(
        self, since: str | None, until: str | None, step: str | None, *, now: float
    ) -> tuple[float, float, int]:
        """Start, end and step in seconds of a query (default: the last hour, at a step that
        keeps it near :data:`TARGET_POINTS` points); refused past :data:`MAX_POINTS`."""
        start = parse_time(since, field="since", now=now) if since else now - DEFAULT_RANGE_S
        end = parse_time(until, field="until", now=now) if until else now
        if start >= end:
            raise _invalid("since", "must be before until")
        asked = parse_step(step) if step else self._auto_step(end - start)
        if (end - start) / asked > MAX_POINTS:
            raise _invalid(
                "step",
                f"{asked}s over {end - start:.0f}s would be more than {MAX_POINTS} points",
            )
        return start, end, asked

    @staticmethod
    def _auto_step(range_s: float, *, points: int = TARGET_POINTS) -> int:
        """The first of :data:`NICE_STEPS` giving at most ``points`` over ``range_s``; past
        them, whole days."""
        wanted = math.ceil(range_s / points)
        return next((s for s in NICE_STEPS if s >= wanted), math.ceil(wanted / 86400) * 86400)

    def _old_usage(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The keys ``runtime.stats`` used to answer with (old clients read them)."""
        cpu = point.get("cpu_usec")
        return {
            "memory_bytes": point.get("memory_bytes"),
            "memory_limit_bytes": point.get("memory_limit_bytes"),
            "cpu_percent": (
                round(cpu / 1e6 / self.interval_s * 100, 2) if cpu is not None else None
            ),
            "pids": point.get("pids"),
        }

    def current(self) -> dict[str, Any]:
        """Every installed plugin's state and newest usage (``usage`` None when it has no
        sample, or none within three sampling periods)."""
        now = self.clock()
        with session_scope(self.engine) as session:
            states = store.plugin_states(session)
        latest = self.series.current(sorted(states)) if states else {}
        plugins = []
        for plugin_id in sorted(states):
            point = latest.get(plugin_id)
            plugins.append(
                {
                    "plugin": plugin_id,
                    "state": states[plugin_id],
                    "at": _iso(point["at"]) if point else None,
                    "usage": resource_usage(point) if self._fresh(point, now) and point else None,
                }
            )
        return {"at": _iso(now), "interval_s": self.interval_s, "plugins": plugins}

    # -- for the Prometheus collector ------------------------------------------------------

    def plugin_states(self) -> dict[str, str]:
        with session_scope(self.engine) as session:
            return store.plugin_states(session)

    def latest_points(self) -> dict[str, dict[str, Any]]:
        """The newest point of each plugin whose sample is fresh."""
        now = self.clock()
        return {p: v for p, v in self.series.current().items() if self._fresh(v, now)}
