"""``/v1/catalog/collections``: named sets of catalog plugins and ranges, published in
immutable versions (role publisher, under the publisher's namespaces; an admin anywhere) and
read by anyone with a token. A collection is installed with ``POST /v1/plugins
{"collection": {"id", "version"}, "approved_permissions": [...]}``, all or nothing.

Thin: the rules are ``catalog/collections.py``'s. Counted against the catalog rate limit, and
409 ``catalog_is_remote`` on an orchestrator that reads its catalog from elsewhere, as every
catalog route."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from orchestrator.catalog.collections import CollectionPublishRequest, CollectionService

from ..deps import CallerDep, PrincipalDep
from .catalog import catalog_is_local, rate_limited

__all__ = ["router"]


def get_collections(request: Request) -> CollectionService:
    service: CollectionService = request.app.state.collections
    return service


CollectionsDep = Annotated[CollectionService, Depends(get_collections)]

router = APIRouter(
    prefix="/v1/catalog/collections",
    tags=["catalog"],
    dependencies=[Depends(rate_limited), Depends(catalog_is_local)],
)


@router.get("")
async def list_collections(
    collections: CollectionsDep,
    _: PrincipalDep,
    after: Annotated[str | None, Query(max_length=128, description="'next' of a page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """``{items, next}``: collections by id, each with its latest version."""
    return await run_in_threadpool(lambda: collections.list(after=after, limit=limit))


@router.get("/{collection_id}")
async def get_collection(
    collection_id: str, collections: CollectionsDep, _: PrincipalDep
) -> dict[str, Any]:
    """The collection and every version of it, newest first, each with its members
    (plugin id -> range)."""
    return await run_in_threadpool(collections.get, collection_id)


@router.post("/{collection_id}/versions", status_code=201)
async def publish_collection_version(
    collection_id: str,
    req: CollectionPublishRequest,
    collections: CollectionsDep,
    caller: CallerDep,
    response: Response,
) -> dict[str, Any]:
    """Publish a version: 201 with its entry; 200 when the same version with the same content
    was published already (a retried upload); 409 ``version_exists`` for other content; 422
    ``unknown_members`` when a member is not in the catalog."""
    entry = await run_in_threadpool(collections.publish, collection_id, req, caller)
    if not entry.pop("created", True):
        response.status_code = 200
    return entry
