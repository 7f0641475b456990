"""The catalog's rules, one implementation behind every door (REST today; the web UI and
GraphQL later): publishers and their namespaces, publishing a version, discovery, yanking and
deprecation, statistics.

Publishing reads the image from its registry by digest (never a tag: what was reviewed is what
gets installed), takes the manifest from the image's label, verifies the signature against the
trust store when one is given, and scans what the image holds as an install would
(``SupplyChainCheck.inspect_image``). The report is part of the version's entry; a version
with blocking findings is still published (an operator's install policy judges it), and the
entry says so.

Hot reads (search pages, plugin pages, version lists) are cached in Redis when it is
configured, under a generation number that every change bumps, so a publish, a yank or a
deprecation is seen at once by every replica.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import redis
from pydantic import BaseModel, Field

from orchestrator import __version__
from orchestrator.catalog.search import CatalogQuery, compatible_with, search_catalog
from orchestrator.domain.errors import Forbidden, InvalidInput, NotFound
from orchestrator.domain.manifest import Manifest
from orchestrator.runtime.base import LABEL_MANIFEST, ImageStore
from orchestrator.security.access import Caller, Role
from orchestrator.security.trust import TrustStore
from orchestrator.services.scanning import ScanReport, SupplyChainCheck
from orchestrator.store import catalog as store
from orchestrator.store.catalog_models import CatalogPlugin, CatalogVersion
from orchestrator.store.db import Engine, session_scope

__all__ = ["CatalogCache", "CatalogService", "PublishRequest", "PublisherRequest"]

log = logging.getLogger(__name__)

# The publisher an admin publishes as where no publisher owns the plugin's namespace.
LOCAL_PUBLISHER = "local"


class PublishRequest(BaseModel):
    image: str = Field(
        description="The image by digest: registry/name@sha256:<64 hex>", max_length=512
    )
    readme: str = Field("", description="Markdown, shown on the plugin's page")
    categories: list[str] = Field(default_factory=list, max_length=16)
    keywords: list[str] = Field(default_factory=list, max_length=32)
    links: dict[str, str] = Field(default_factory=dict)
    changelog: str = ""
    signature: dict[str, Any] | None = Field(
        None, description="Detached signature envelope from `summit-plugin sign`"
    )
    license: str | None = None
    price: dict[str, Any] | None = Field(
        None, description="For paid plugins: e.g. {'per_1000_calls': 0.5, 'currency': 'EUR'}"
    )


class PublisherRequest(BaseModel):
    id: str = Field(max_length=64)
    name: str = Field(max_length=128)
    token_id: str | None = Field(None, description="The API token (role publisher) it uses")
    namespaces: list[str] = Field(default_factory=list, description="e.g. ['com.example.']")


class CatalogCache:
    """JSON answers in Redis for ``ttl_s``, keyed under a generation that ``bump`` moves on
    (old entries are never read again and expire). Without Redis nothing is cached."""

    def __init__(self, url: str | None, *, prefix: str, ttl_s: int = 60) -> None:
        self._redis = redis.Redis.from_url(url) if url else None
        self.prefix = f"{prefix}:catalog"
        self.ttl_s = ttl_s

    def _generation(self) -> int:
        assert self._redis is not None
        raw = self._redis.get(f"{self.prefix}:gen")
        return int(raw) if raw else 0

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        if self._redis is None:
            return compute()
        try:
            full = f"{self.prefix}:{self._generation()}:{hashlib.sha256(key.encode()).hexdigest()}"
            cached = self._redis.get(full)
        except redis.RedisError as exc:
            log.warning("catalog cache unavailable: %s", exc)
            return compute()
        if cached is not None:
            return json.loads(cached)
        value = compute()
        try:
            self._redis.set(full, json.dumps(value, default=str), ex=self.ttl_s)
        except redis.RedisError as exc:
            log.warning("catalog cache unavailable: %s", exc)
        return value

    def bump(self) -> None:
        if self._redis is None:
            return
        try:
            self._redis.incr(f"{self.prefix}:gen")
        except redis.RedisError as exc:
            # Entries then live out their ttl: stale for at most ttl_s.
            log.warning("catalog cache not invalidated: %s", exc)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


@dataclass
class CatalogService:
    engine: Engine
    images: ImageStore
    supply_chain: SupplyChainCheck
    trust: TrustStore
    cache: CatalogCache
    summit_version: str = __version__

    # -- publishers (admin) ---------------------------------------------------------------------

    def add_publisher(self, req: PublisherRequest) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            store.add_publisher(session, publisher_id=req.id, name=req.name, token_id=req.token_id)
            for prefix in req.namespaces:
                store.claim_namespace(session, publisher_id=req.id, prefix=prefix)
            return self._publisher_json(session, req.id)

    def claim_namespace(self, publisher_id: str, prefix: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            store.claim_namespace(session, publisher_id=publisher_id, prefix=prefix)
            return self._publisher_json(session, publisher_id)

    def get_publisher(self, publisher_id: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            return self._publisher_json(session, publisher_id)

    @staticmethod
    def _publisher_json(session: Any, publisher_id: str) -> dict[str, Any]:
        row = store.get_publisher(session, publisher_id=publisher_id)
        if row is None:
            raise NotFound(f"no publisher {publisher_id!r}", code="unknown_publisher")
        return {
            "id": row.id,
            "name": row.name,
            "token_id": row.token_id,
            "namespaces": store.list_namespaces(session, publisher_id=row.id),
            "created_at": row.created_at,
        }

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, plugin_id: str, req: PublishRequest, caller: Caller) -> dict[str, Any]:
        """Publish the version the image carries; 201 with its entry (200 when the same
        digest was already published: a retried upload)."""
        if "@sha256:" not in req.image:
            raise InvalidInput(
                "publish an image by digest (registry/name@sha256:...): a tag can move",
                code="image_not_pinned",
                details={"image": req.image},
            )
        with session_scope(self.engine) as session:
            plugin = store.get_plugin(session, plugin_id=plugin_id)
            publisher = publisher_for(
                session, caller, plugin_id, existing=plugin.publisher if plugin else None
            )
        # The image is pulled to be read and scanned only: one that was not on this host
        # before goes again afterwards (an install pulls what it runs).
        pulled_here = self.images.image(req.image) is None
        try:
            manifest, signature, status, report = self._read_published(plugin_id, req)
        finally:
            if pulled_here:
                self.images.remove_image(req.image)
        with session_scope(self.engine) as session:
            published = store.publish_version(
                session,
                manifest=manifest,
                image=req.image,
                publisher=publisher,
                published_by=caller.actor,
                readme=req.readme,
                categories=req.categories,
                keywords=req.keywords,
                links=req.links,
                changelog=req.changelog,
                signature=signature,
                signature_status=status,
                scan_report=report.to_json(),
                scan_summary=report.summary,
                license=req.license,
                price=req.price,
            )
            entry = self._version_json(published.version)
            entry["created"] = published.created
        self.cache.bump()
        return entry

    def _read_published(
        self, plugin_id: str, req: PublishRequest
    ) -> tuple[Manifest, dict[str, Any] | None, str, ScanReport]:
        """Pull the image; its manifest, the verified signature (and status) and its scan."""
        info = self.images.pull_image(req.image)
        raw = info.labels.get(LABEL_MANIFEST)
        if not raw:
            raise InvalidInput(
                f"image {req.image!r} carries no plugin manifest (label {LABEL_MANIFEST})",
                code="not_a_plugin_image",
            )
        manifest = Manifest.model_validate_json(raw)
        if manifest.id != plugin_id:
            raise InvalidInput(
                f"the image holds plugin {manifest.id}, not {plugin_id}",
                code="id_mismatch",
                details={"image_plugin": manifest.id, "path_plugin": plugin_id},
            )
        signature, status = None, "unsigned"
        if req.signature is not None:
            document = self.trust.verify(req.signature, manifest, image_digest=info.id)
            # Kept exactly as signed, so anyone (an install from the catalog) verifies it again.
            signature = {"key_id": document["key_id"], "envelope": req.signature}
            status = "verified"
        report = self.supply_chain.inspect_image(self.images, info, manifest)
        report.signature = signature
        return manifest, signature, status, report

    # -- reading -------------------------------------------------------------------------------

    def search(self, query: CatalogQuery) -> dict[str, Any]:
        key = json.dumps(["search", query.__dict__], sort_keys=True, default=str)

        def compute() -> dict[str, Any]:
            with session_scope(self.engine) as session:
                return search_catalog(session, query, summit_version=self.summit_version)

        result: dict[str, Any] = self.cache.get_or_compute(key, compute)
        return result

    def plugin_page(self, plugin_id: str) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            with session_scope(self.engine) as session:
                plugin = store.get_plugin(session, plugin_id=plugin_id)
                if plugin is None:
                    raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
                versions = store.list_versions(session, plugin_id=plugin_id)
                compatible = compatible_with(self.summit_version)
                latest = next(
                    (v for v in versions if not v.yanked and compatible(v.summit_range)), None
                )
                stats = store.stats_summary(session, plugin_id=plugin_id)
                publisher = store.get_publisher(session, publisher_id=plugin.publisher)
                return {
                    **self._plugin_json(plugin),
                    "publisher": {
                        "id": plugin.publisher,
                        "name": publisher.name if publisher else plugin.publisher,
                    },
                    "latest_compatible": self._version_json(latest) if latest else None,
                    "versions": [v.version for v in versions],
                    "stats": {
                        "since": stats.since,
                        "until": stats.until,
                        "installs": stats.installs,
                        "uninstalls": stats.uninstalls,
                        "active_installs": stats.active_installs,
                        "calls": stats.calls,
                        "errors": stats.errors,
                        "latency_p50_ms": stats.latency_p50_ms,
                        "latency_p99_ms": stats.latency_p99_ms,
                    },
                }

        result: dict[str, Any] = self.cache.get_or_compute(f"page:{plugin_id}", compute)
        return result

    def versions(self, plugin_id: str) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            with session_scope(self.engine) as session:
                if store.get_plugin(session, plugin_id=plugin_id) is None:
                    raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
                rows = store.list_versions(session, plugin_id=plugin_id)
                return {"items": [self._version_json(v) for v in rows]}

        result: dict[str, Any] = self.cache.get_or_compute(f"versions:{plugin_id}", compute)
        return result

    def version(self, plugin_id: str, version: str) -> CatalogVersion:
        with session_scope(self.engine) as session:
            row = store.get_version(session, plugin_id=plugin_id, version=version)
            if row is None:
                raise NotFound(
                    f"{plugin_id} {version} is not in the catalog", code="not_in_catalog"
                )
            session.expunge(row)
            return row

    def stats(self, plugin_id: str, *, since: date | None, until: date | None) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            if store.get_plugin(session, plugin_id=plugin_id) is None:
                raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
            summary = store.stats_summary(session, plugin_id=plugin_id, since=since, until=until)
            days = store.daily_stats(
                session, plugin_id=plugin_id, since=summary.since, until=summary.until
            )
            return {
                "summary": summary.__dict__,
                "days": [d.__dict__ for d in days],
            }

    # -- changing an entry (its publisher, or an admin) ---------------------------------------

    def _may_change(self, session: Any, caller: Caller, plugin_id: str) -> None:
        plugin = store.get_plugin(session, plugin_id=plugin_id)
        if plugin is None:
            raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
        if caller.role >= Role.ADMIN:
            return
        mine = (
            store.publisher_for_token(session, token_id=caller.token_id)
            if caller.token_id
            else None
        )
        if mine is None or mine.id != plugin.publisher:
            raise Forbidden(f"{plugin_id} is published by another publisher", code="not_publisher")

    def yank(self, plugin_id: str, version: str, reason: str, caller: Caller) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            self._may_change(session, caller, plugin_id)
            row = store.yank_version(session, plugin_id=plugin_id, version=version, reason=reason)
            entry = self._version_json(row)
        self.cache.bump()
        return entry

    def unyank(self, plugin_id: str, version: str, caller: Caller) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            self._may_change(session, caller, plugin_id)
            row = store.unyank_version(session, plugin_id=plugin_id, version=version)
            entry = self._version_json(row)
        self.cache.bump()
        return entry

    def deprecate(
        self, plugin_id: str, *, reason: str, successor: str | None, caller: Caller
    ) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            self._may_change(session, caller, plugin_id)
            plugin = store.deprecate_plugin(
                session, plugin_id=plugin_id, reason=reason, successor_id=successor
            )
            entry = self._plugin_json(plugin)
        self.cache.bump()
        return entry

    # -- shapes --------------------------------------------------------------------------------

    def _plugin_json(self, plugin: CatalogPlugin) -> dict[str, Any]:
        return {
            "id": plugin.id,
            "name": plugin.name,
            "description": plugin.description,
            "latest_version": plugin.latest_version,
            "readme": plugin.readme,
            "categories": plugin.categories,
            "keywords": plugin.keywords,
            "points": plugin.points,
            "permissions": plugin.permissions,
            "signed": plugin.signed,
            "deprecated": plugin.deprecated,
            "deprecation_reason": plugin.deprecation_reason,
            "successor": plugin.successor_id,
            "installs": plugin.installs,
            "active_installs": plugin.active_installs,
        }

    def _version_json(self, row: CatalogVersion) -> dict[str, Any]:
        manifest = row.manifest
        return {
            "plugin_id": row.plugin_id,
            "version": row.version,
            "image": row.image,
            "digest": row.digest,
            "compatible": compatible_with(self.summit_version)(row.summit_range),
            "summit_range": row.summit_range,
            "permissions": manifest.get("permissions", []),
            "resources": manifest.get("resources", {}),
            "dependencies": manifest.get("dependencies", []),
            # As published (the image's label): what a remote install dialog builds its
            # config form and permission words from.
            "manifest": manifest,
            "readme": row.readme,
            "categories": row.categories,
            "keywords": row.keywords,
            "links": row.links,
            "changelog": row.changelog,
            "license": row.license,
            "price": row.price,
            "signature_status": row.signature_status,
            "signature": row.signature,
            "scan": {
                "summary": row.scan_summary,
                "blocking": (row.scan_report or {}).get("blocking", []),
            },
            "published_at": row.published_at,
            "published_by": row.published_by,
            "yanked": row.yanked,
            "yanked_reason": row.yanked_reason,
            "yanked_at": row.yanked_at,
        }


def publisher_for(session: Any, caller: Caller, entry_id: str, *, existing: str | None) -> str:
    """Who publishes the catalog entry ``entry_id`` (a plugin or a collection) for
    ``caller``; ``existing`` is the entry's publisher if it is published already.

    An admin publishes anywhere: as the entry's publisher, else the owner of the namespace
    it falls in, else ``local``. Anyone else publishes as the publisher its token is linked
    to, only its own entries, and new ones only inside its namespaces."""
    if caller.role >= Role.ADMIN:
        if existing is not None:
            return existing
        owner = store.namespace_owner(session, plugin_id=entry_id)
        if owner is not None:
            return owner
        if store.get_publisher(session, publisher_id=LOCAL_PUBLISHER) is None:
            store.add_publisher(
                session, publisher_id=LOCAL_PUBLISHER, name="This orchestrator's operators"
            )
        return LOCAL_PUBLISHER
    mine = (
        store.publisher_for_token(session, token_id=caller.token_id)
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
        if existing != mine.id:
            raise Forbidden(f"{entry_id} is published by another publisher", code="not_publisher")
        return mine.id
    namespaces = store.list_namespaces(session, publisher_id=mine.id)
    if not any(entry_id.startswith(prefix) for prefix in namespaces):
        raise Forbidden(
            f"{entry_id} is outside the namespaces of publisher {mine.id}",
            code="namespace_forbidden",
            details={"entry": entry_id, "namespaces": namespaces},
        )
    return mine.id
