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

from orchestrator.catalog.service import LOCAL_PUBLISHER
from orchestrator.domain.errors import Forbidden, NotFound
from orchestrator.security.access import Caller, Role
from orchestrator.store import catalog as catalog_store
from orchestrator.store import collections as store
from orchestrator.store.collections import CatalogCollection, CatalogCollectionVersion
from orchestrator.store.db import Engine, Session, session_scope

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
            publisher = self._publisher_of(session, caller, collection_id, existing)
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

    @staticmethod
    def _publisher_of(
        session: Session, caller: Caller, collection_id: str, existing: CatalogCollection | None
    ) -> str:
        if caller.role >= Role.ADMIN:
            if existing is not None:
                return existing.publisher
            owner = catalog_store.namespace_owner(session, plugin_id=collection_id)
            if owner is not None:
                return owner
            if catalog_store.get_publisher(session, publisher_id=LOCAL_PUBLISHER) is None:
                catalog_store.add_publisher(
                    session, publisher_id=LOCAL_PUBLISHER, name="This orchestrator's operators"
                )
            return LOCAL_PUBLISHER
        mine = (
            catalog_store.publisher_for_token(session, token_id=caller.token_id)
            if caller.token_id is not None
            else None
        )
        if mine is None:
            raise Forbidden(
                "this token belongs to no publisher; an admin links it "
                "(POST /v1/catalog/publishers with its token_id)",
                code="not_a_publisher",
            )
        if existing is not None:
            if existing.publisher != mine.id:
                raise Forbidden(
                    f"collection {collection_id} is published by another publisher",
                    code="not_publisher",
                )
            return mine.id
        namespaces = catalog_store.list_namespaces(session, publisher_id=mine.id)
        if not any(collection_id.startswith(prefix) for prefix in namespaces):
            raise Forbidden(
                f"{collection_id} is outside the namespaces of publisher {mine.id}",
                code="namespace_forbidden",
                details={"collection": collection_id, "namespaces": namespaces},
            )
        return mine.id


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
