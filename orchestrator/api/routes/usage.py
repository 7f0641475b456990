"""``/v1/plugins/{id}/usage`` and ``/v1/usage``: plugins' resource usage, now and over time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ..deps import PrincipalDep, UsageDep

router = APIRouter(prefix="/v1", tags=["usage"])


TIME_HELP = "ISO 8601 (UTC without an offset), 'now', or relative: '-90s', '-15m', '-1h', '-7d'"
STEP_HELP = "Seconds, or '10s', '5m', '1h', '1d' (default: auto)"

TimeQuery = Annotated[str | None, Query(max_length=64, description=TIME_HELP)]
StepQuery = Annotated[str | None, Query(max_length=16, description=STEP_HELP)]


@router.get("/plugins/{plugin_id}/usage")
async def plugin_usage(
    plugin_id: str,
    usage: UsageDep,
    _: PrincipalDep,
    since: TimeQuery = None,
    until: TimeQuery = None,
    step: StepQuery = None,
) -> dict[str, Any]:
    """The plugin's usage now (``usage``, ``network``, and ``current`` in ResourceUsage
    units: MiB, ms, bytes) and, when ``since``, ``until`` or ``step`` is given, its
    ``series`` over that range (default: the last hour)."""
    return await run_in_threadpool(
        usage.plugin_usage, plugin_id, since=since, until=until, step=step
    )


@router.get("/usage")
async def all_usage(
    usage: UsageDep,
    _: PrincipalDep,
    since: TimeQuery = None,
    until: TimeQuery = None,
    step: StepQuery = None,
) -> dict[str, Any]:
    """Every installed plugin's state and newest usage (``at``, ``interval_s``, ``plugins``;
    ResourceUsage units). Without ``since``, ``until`` and ``step`` that is the whole answer,
    as it always was.

    With any of them (the range defaults to the last hour, the step to one that keeps the
    answer small) it adds ``series``: ``{since, until, step_s, plugins: {plugin_id: [points]}}``,
    every plugin with points in the range, each point as in ``/v1/plugins/{id}/usage``'s series
    (among them ``calls_in_step``, ``errors_in_step``, ``call_ms_in_step``, ``call_ms_mean``).
    A plugin uninstalled within the range is still there. A step that would give more than
    5000 points per plugin, or too many for all plugins together, is refused (422)."""
    return await run_in_threadpool(usage.all_usage, since=since, until=until, step=step)
