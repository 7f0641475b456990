"""``/v1/metering``: calls and CPU seconds per plugin and publisher over a window, priced where
the catalog entry's price is metered, as JSON or as CSV for a spreadsheet. Admin only (the rule
is in ``security/access.py``): it shows every publisher's revenue.

Thin: the rules are ``catalog/metering.py``'s.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from orchestrator.catalog.metering import MeteringService, report_csv

from ..deps import PrincipalDep

__all__ = ["MeteringDep", "metering_of", "router"]

router = APIRouter(prefix="/v1", tags=["metering"])

TIME_HELP = "ISO 8601 (UTC without an offset), 'now', or relative: '-90s', '-15m', '-1h', '-7d'"


def metering_of(state: State) -> MeteringService:
    """The app's :class:`MeteringService` (built on first use from its engine)."""
    # (Here rather than in api/deps.py, which another change is editing: move it there.)
    service: MeteringService | None = getattr(state, "metering", None)
    if service is None:
        service = state.metering = MeteringService(engine=state.engine)
    return service


async def get_metering(request: Request) -> MeteringService:
    return metering_of(request.app.state)


MeteringDep = Annotated[MeteringService, Depends(get_metering)]


@router.get(
    "/metering",
    response_model=None,
    responses={200: {"content": {"text/csv": {}}, "description": "The report (JSON or CSV)"}},
)
async def metering(
    metering: MeteringDep,
    _: PrincipalDep,
    since: Annotated[str, Query(max_length=64, description=TIME_HELP)],
    until: Annotated[
        str | None, Query(max_length=64, description=TIME_HELP + " (default: now)")
    ] = None,
    fmt: Annotated[
        Literal["json", "csv"],
        Query(alias="format", description="json, or csv: one row per plugin and version"),
    ] = "json",
) -> dict[str, Any] | Response:
    """Per installed plugin over ``[since, until)`` (at most 366 days): calls, CPU seconds,
    publisher, licence, price and the amount due where the price is metered; totals per
    publisher and currency. ``resolution_s`` says which series tier was read, ``period``
    which buckets were counted, ``complete`` and ``notes`` what the report cannot count."""
    report = await run_in_threadpool(metering.report, since=since, until=until)
    if fmt == "json":
        return report
    name = f"summit-metering-{report['period']['start']}-{report['period']['end']}.csv"
    return Response(
        report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name.replace(":", "")}"'},
    )
