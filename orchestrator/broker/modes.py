"""The fan-out modes of ``execute`` over the providers of one point:

* ``all``: every provider at once; fails only when every one failed;
* ``pipeline``: in priority order, each output the next one's input (checked against that
  provider's input schema); stops at the first failure;
* ``first``: in priority order, the first output wins.

Every result names its plugin and extension and carries its ``output`` or its ``error`` and
time; an execute that fails carries them all in its error's details. Each call is counted per
(point, plugin) for the periodic ``extension.executed`` summary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from orchestrator.broker.errors import InvalidOutput
from orchestrator.broker.routes import Provider, Route
from orchestrator.broker.schemas import SchemaChecks
from orchestrator.domain.errors import SummitError
from orchestrator.domain.manifest import Extension

__all__ = ["MODES", "Call", "CallTally", "fan_out"]

MODES = ("all", "pipeline", "first")


class Call(Protocol):
    async def __call__(
        self,
        route: Route,
        ext: Extension,
        payload: Any,
        *,
        timeout_ms: int | None = None,
        encoded: bytes | None = None,
    ) -> Any: ...


class CallTally:
    """(point, plugin) -> [calls, errors, total ms, max ms] since the last take (loop thread)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[float]] = {}

    def count(self, point: str, plugin_id: str, ms: float, *, failed: bool) -> None:
        counts = self._counts.get((point, plugin_id))
        if counts is None:
            counts = self._counts[(point, plugin_id)] = [0, 0, 0.0, 0.0]
        counts[0] += 1
        counts[1] += failed
        counts[2] += ms
        counts[3] = max(counts[3], ms)

    def take(self) -> dict[tuple[str, str], list[float]]:
        counts, self._counts = self._counts, {}
        return counts


async def fan_out(
    mode: str,
    point: str,
    providers: list[Provider],
    payload: Any,
    raw: bytes,
    *,
    call: Call,
    schemas: SchemaChecks,
    tally: CallTally,
    timeout_ms: int | None,
) -> dict[str, Any]:
    """Run ``mode`` over ``providers`` (checked, non-empty), ``raw`` being ``payload`` as JSON."""
    failures: list[SummitError] = []

    async def one(
        route: Route, ext: Extension, value: Any, raw: bytes | None = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        entry: dict[str, Any] = {"plugin": route.plugin_id, "extension": ext.name}
        try:
            entry["output"] = await call(route, ext, value, timeout_ms=timeout_ms, encoded=raw)
        except SummitError as exc:
            failures.append(exc)
            entry["error"] = {"code": exc.code, "message": exc.message}
            entry["status"] = exc.status_code
        ms = (time.perf_counter() - started) * 1000
        entry["ms"] = round(ms, 3)
        tally.count(point, route.plugin_id, ms, failed="error" in entry)
        return entry

    if mode == "all":
        if len(providers) == 1:  # no task to spawn for a single provider
            results = [await one(*providers[0], payload, raw)]
        else:
            results = list(await asyncio.gather(*(one(r, e, payload, raw) for r, e in providers)))
        if failures and all("error" in entry for entry in results):
            raise _with_results(failures[0], results)
        return {"mode": mode, "results": results}
    steps: list[dict[str, Any]] = []
    value = payload
    for i, (route, ext) in enumerate(providers):
        if mode == "pipeline" and i > 0:
            bad = schemas.errors(route, ext, value, "input")
            if bad:
                failures.append(
                    InvalidOutput(
                        f"{steps[-1]['plugin']}'s output does not fit {route.plugin_id}'s "
                        "input_schema",
                        details=bad,
                    )
                )
                raise _with_results(failures[-1], steps, failed_at=route.plugin_id)
        # The input as it came is already encoded; an earlier step's output is not.
        entry = await one(route, ext, value, raw if value is payload else None)
        steps.append(entry)
        if "output" in entry:
            if mode == "first":
                return {"mode": mode, "output": entry["output"], "results": steps}
            value = entry["output"]
        elif mode == "pipeline":
            raise _with_results(failures[-1], steps, failed_at=route.plugin_id)
    if mode == "first":
        raise _with_results(failures[-1], steps)
    return {"mode": mode, "output": value, "results": steps}


def _with_results(
    exc: SummitError, results: list[dict[str, Any]], *, failed_at: str | None = None
) -> SummitError:
    """The error that answers the whole execute, carrying every provider's result."""
    details = exc.details if isinstance(exc.details, dict) else {"errors": exc.details}
    exc.details = {**details, "results": results}
    if failed_at is not None:
        exc.details["failed_at"] = failed_at
    return exc
