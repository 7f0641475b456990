"""``/v1/catalog``: the plugin catalog. Publishers publish image versions under their
namespaces; anyone with a token searches, reads plugin pages, version lists and statistics.
Every route counts against the caller's catalog rate limit (429 with ``Retry-After``).

Orchestrators that read this catalog from elsewhere (their ``SUMMIT_CATALOG_URL``) report
their installs and uninstalls here (``.../versions/{version}/installs``, role viewer). An
orchestrator that reads a remote catalog serves none itself: its catalog routes answer 409
``catalog_is_remote`` with that catalog's URL, where the catalog is read (with a token of
that orchestrator), rather than show an empty or stale copy.

Thin: the rules are ``catalog/service.py``'s."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orchestrator.catalog.reports import InstallReportRequest, InstallReportService
from orchestrator.catalog.search import CatalogQuery
from orchestrator.catalog.service import CatalogService, PublisherRequest, PublishRequest
from orchestrator.domain.errors import Conflict, SummitError

from ..deps import CallerDep, PrincipalDep

__all__ = [
    "catalog_client",
    "catalog_is_local",
    "count_catalog_request",
    "rate_limited",
    "router",
]


class CatalogRateLimited(SummitError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            "too many catalog requests from this client; slow down",
            details={"retry_after_s": round(retry_after_s, 3)},
        )
        self.headers = {"Retry-After": str(max(1, int(retry_after_s + 0.999)))}


def catalog_client(authorization: str, address: str | None) -> str:
    """Who a catalog request is counted against: its bearer token (hashed), else its
    address. The UI counts a session's requests under the ``Bearer`` header of its token, so
    one token has one budget through both doors."""
    if authorization:
        return hashlib.sha256(authorization.encode()).hexdigest()[:24]
    return address or "unknown"


async def count_catalog_request(state: Any, client: str) -> None:
    """Count one catalog request of ``client``; 429 ``rate_limited`` past the limit."""
    settings = getattr(state, "settings", None)  # an app made for a test may have none
    if settings is None or settings.catalog_rate_limit_requests <= 0:
        return
    wait = await state.broker.rate_limiter.acquire(
        f"catalog:{client}",
        limit=settings.catalog_rate_limit_requests,
        window_s=settings.catalog_rate_limit_window_s,
    )
    if wait > 0:
        raise CatalogRateLimited(wait)


async def rate_limited(request: Request) -> None:
    """Count the request against its client (its bearer token, else its address)."""
    client = catalog_client(
        request.headers.get("authorization") or "",
        request.client.host if request.client else None,
    )
    await count_catalog_request(request.app.state, client)


async def catalog_is_local(request: Request, _: PrincipalDep) -> None:
    """409 ``catalog_is_remote`` on an orchestrator that reads its catalog from elsewhere (for
    an authorized caller only: the URL is not shown to just anyone)."""
    url = getattr(request.app.state.settings, "catalog_url", None)
    if url:
        raise Conflict(
            f"this orchestrator reads the catalog at {url}; use that catalog there",
            code="catalog_is_remote",
            details={"catalog_url": url},
        )


def get_catalog(request: Request) -> CatalogService:
    catalog: CatalogService = request.app.state.catalog
    return catalog


def get_install_reports(request: Request) -> InstallReportService:
    reports: InstallReportService = request.app.state.install_reports
    return reports


CatalogDep = Annotated[CatalogService, Depends(get_catalog)]
InstallReportsDep = Annotated[InstallReportService, Depends(get_install_reports)]

router = APIRouter(
    prefix="/v1/catalog",
    tags=["catalog"],
    dependencies=[Depends(rate_limited), Depends(catalog_is_local)],
)


# -- discovery -----------------------------------------------------------------------------------


@router.get("/plugins")
async def search_plugins(
    catalog: CatalogDep,
    _: PrincipalDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Words; the last is a prefix")
    ] = None,
    point: str | None = None,
    category: str | None = None,
    permission: str | None = None,
    signed: bool | None = None,
    compatible: Annotated[
        bool, Query(description="Only plugins with a version this orchestrator can run")
    ] = False,
    sort: Annotated[
        str | None, Query(description="relevance (with q), name, newest or popular")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=2000, description="'next' of a page")] = None,
    limit: int = 20,
) -> dict[str, Any]:
    """``{items, facets, total, next}``: matching plugins, counts per extension point and
    category over all matches, and the cursor of the next page."""
    query = CatalogQuery(
        q=q,
        point=point,
        category=category,
        permission=permission,
        signed=signed,
        compatible=compatible,
        sort=sort,
        cursor=cursor,
        limit=limit,
    )
    return await run_in_threadpool(catalog.search, query)


@router.get("/plugins/{plugin_id}")
async def plugin_page(plugin_id: str, catalog: CatalogDep, _: PrincipalDep) -> dict[str, Any]:
    """The plugin's page: its latest compatible version (README, permissions, resources,
    signature, scan summary), publisher and the last 30 days' statistics."""
    return await run_in_threadpool(catalog.plugin_page, plugin_id)


@router.get("/plugins/{plugin_id}/versions")
async def plugin_versions(plugin_id: str, catalog: CatalogDep, _: PrincipalDep) -> dict[str, Any]:
    """Every published version, newest first, each with ``compatible`` for this
    orchestrator and ``yanked``."""
    return await run_in_threadpool(catalog.versions, plugin_id)


@router.get("/plugins/{plugin_id}/stats")
async def plugin_stats(
    plugin_id: str,
    catalog: CatalogDep,
    _: PrincipalDep,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """Installs, uninstalls, active installs, calls, errors and latency percentiles, by day
    and in total (the last 30 days unless ``since``/``until`` say otherwise)."""
    return await run_in_threadpool(catalog.stats, plugin_id, since=since, until=until)


# -- publishing ----------------------------------------------------------------------------------


@router.post("/plugins/{plugin_id}/versions", status_code=201)
async def publish_version(
    plugin_id: str,
    req: PublishRequest,
    catalog: CatalogDep,
    caller: CallerDep,
    response: Response,
) -> dict[str, Any]:
    """Publish the version the image (by digest) carries. 201 with its entry; 200 when this
    digest was published already (a retried upload). A version never changes afterwards."""
    entry = await run_in_threadpool(catalog.publish, plugin_id, req, caller)
    if not entry.pop("created", True):
        response.status_code = 200
    return entry


class YankRequest(BaseModel):
    reason: str = Field("", max_length=500)


@router.post("/plugins/{plugin_id}/versions/{version}/yank")
async def yank_version(
    plugin_id: str,
    version: str,
    catalog: CatalogDep,
    caller: CallerDep,
    req: Annotated[YankRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Hide the version from resolution; it stays installable by its exact version, with a
    warning."""
    reason = req.reason if req is not None else ""
    return await run_in_threadpool(catalog.yank, plugin_id, version, reason, caller)


@router.post("/plugins/{plugin_id}/versions/{version}/unyank")
async def unyank_version(
    plugin_id: str, version: str, catalog: CatalogDep, caller: CallerDep
) -> dict[str, Any]:
    return await run_in_threadpool(catalog.unyank, plugin_id, version, caller)


class DeprecateRequest(BaseModel):
    reason: str = Field("", max_length=500)
    successor: str | None = Field(None, description="The plugin that replaces it")


@router.post("/plugins/{plugin_id}/deprecate")
async def deprecate_plugin(
    plugin_id: str, req: DeprecateRequest, catalog: CatalogDep, caller: CallerDep
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: catalog.deprecate(
            plugin_id, reason=req.reason, successor=req.successor, caller=caller
        )
    )


# -- install reports (orchestrators that read this catalog from elsewhere) ------------------------


@router.post("/plugins/{plugin_id}/versions/{version}/installs")
async def report_install(
    plugin_id: str,
    version: str,
    req: InstallReportRequest,
    reports: InstallReportsDep,
    caller: CallerDep,
    response: Response,
) -> dict[str, Any]:
    """An orchestrator installed (or uninstalled) this version from this catalog: counted in
    today's statistics, once per orchestrator, event and day (201; 200 ``recorded: false``
    when it was counted already). Role viewer: the token an orchestrator reads the catalog
    with; a token reports for at most a bounded number of orchestrators a version and day."""
    result = await run_in_threadpool(reports.record, plugin_id, version, req, caller)
    response.status_code = 201 if result["recorded"] else 200
    return result


# -- publishers (admin) --------------------------------------------------------------------------


@router.post("/publishers", status_code=201)
async def add_publisher(
    req: PublisherRequest, catalog: CatalogDep, _: PrincipalDep
) -> dict[str, Any]:
    """A publisher, the API token it publishes with (role ``publisher``) and its
    namespaces (``com.example.``)."""
    return await run_in_threadpool(catalog.add_publisher, req)


@router.get("/publishers/{publisher_id}")
async def get_publisher(publisher_id: str, catalog: CatalogDep, _: PrincipalDep) -> dict[str, Any]:
    return await run_in_threadpool(catalog.get_publisher, publisher_id)


class NamespaceRequest(BaseModel):
    prefix: str = Field(max_length=128, description="e.g. com.example.")


@router.post("/publishers/{publisher_id}/namespaces")
async def claim_namespace(
    publisher_id: str, req: NamespaceRequest, catalog: CatalogDep, _: PrincipalDep
) -> dict[str, Any]:
    return await run_in_threadpool(catalog.claim_namespace, publisher_id, req.prefix)
