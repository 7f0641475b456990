"""``/v1/plugins/{id}/usage`` and ``/v1/usage``: plugins' resource usage, now and over time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ..deps import PrincipalDep, UsageDep

router = APIRouter(prefix="/v1", tags=["usage"])


TIME_HELP = "ISO 8601 (UTC without an offset), 'now', or relative: '-90s', '-15m', '-1h', '-7d'"


@router.get("/plugins/{plugin_id}/usage")
async def plugin_usage(
    plugin_id: str,
    usage: UsageDep,
    _: PrincipalDep,
    since: Annotated[str | None, Query(max_length=64, description=TIME_HELP)] = None,
    until: Annotated[str | None, Query(max_length=64, description=TIME_HELP)] = None,
    step: Annotated[
        str | None,
        Query(max_length=16, description="Seconds, or '10s', '5m', '1h', '1d' (default: auto)"),
    ] = None,
) -> dict[str, Any]:
    """The plugin's usage now (``usage``, ``network``, and ``current`` in ResourceUsage
    units: MiB, ms, bytes) and, when ``since``, ``until`` or ``step`` is given, its
    ``series`` over that range (default: the last hour)."""
    return await run_in_threadpool(
        usage.plugin_usage, plugin_id, since=since, until=until, step=step
    )


@router.get("/usage")
async def all_usage(usage: UsageDep, _: PrincipalDep) -> dict[str, Any]:
    """Every installed plugin's state and newest usage (ResourceUsage units)."""
    return await run_in_threadpool(usage.current)
