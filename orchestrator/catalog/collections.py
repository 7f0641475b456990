"""Collections: a named set of catalog plugins, each with a version range, published in
immutable versions like a plugin and installed as one all-or-nothing operation
(``POST /v1/plugins {"collection": {"id", "version"}}``, ``installer.py``).

Publishing follows the plugins' namespace rules: a publisher publishes collections under its
own namespaces (``com.example.starter-kit`` under ``com.example.``), an admin anywhere (as the
namespace's owner, or as ``local``); later versions belong to the collection's publisher. A
collection may name any catalog plugin, whoever publishes it: it is a curated set, and what
each member is stays its own publisher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.catalog.service import publisher_for
from orchestrator.domain.errors import NotFound
from orchestrator.security.access import Caller
from orchestrator.store import collections as store
from orchestrator.store.collections import CatalogCollection, CatalogCollectionVersion
from orchestrator.store.db import Engine, session_scope

__all__ = ["CollectionPublishRequest", "CollectionService"]


class CollectionPublishRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64, description="Semantic version")
    plugins: dict[str, str] = Field(
        description="Member plugin id -> npm-style range, e.g. {'com.example.units': '^1.2'}"
    )
    name: str | None = Field(None, max_length=100)
    description: str = Field("", max_length=2000)
    readme: str = Field("", description="Markdown, shown on the collection's page")


@dataclass
class CollectionService:
    engine: Engine

    def publish(
        self, collection_id: str, req: CollectionPublishRequest, caller: Caller
    ) -> dict[str, Any]:
        """Publish one version; its entry with ``created`` (False: the same version with the
        same content was published already)."""
        with session_scope(self.engine) as session:
            existing = store.get_collection(session, collection_id=collection_id)
            publisher = publisher_for(
                session,
                caller,
                collection_id,
                existing=existing.publisher if existing is not None else None,
            )
            published = store.publish_collection_version(
                session,
                collection_id=collection_id,
                version=req.version,
                plugins=req.plugins,
                publisher=publisher,
                published_by=caller.actor,
                name=req.name,
                description=req.description,
                readme=req.readme,
            )
            return {**_version_json(published.version), "created": published.created}

    def list(self, *, after: str | None, limit: int) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            rows = store.list_collections(session, after=after, limit=limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            return {
                "items": [_collection_json(row) for row in rows],
                "next": rows[-1].id if more and rows else None,
            }

    def get(self, collection_id: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            row = store.get_collection(session, collection_id=collection_id)
            if row is None:
                raise NotFound(
                    f"collection {collection_id} is not in the catalog", code="not_in_catalog"
                )
            versions = store.list_collection_versions(session, collection_id=collection_id)
            return {**_collection_json(row), "versions": [_version_json(v) for v in versions]}


def _collection_json(row: CatalogCollection) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "publisher": row.publisher,
        "latest_version": row.latest_version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _version_json(row: CatalogCollectionVersion) -> dict[str, Any]:
    return {
        "collection_id": row.collection_id,
        "version": row.version,
        "plugins": dict(row.plugins),
        "description": row.description,
        "readme": row.readme,
        "published_at": row.published_at,
        "published_by": row.published_by,
    }
