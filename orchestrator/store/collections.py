"""Collections in the catalog: a named set of plugins, each with a version range, published
in immutable versions like a plugin and installed as one operation (``catalog/collections.py``
publishes and reads them; ``catalog/installer.py`` installs them).

A collection version names catalog plugins only: every member must be in the catalog when the
version is published (its ranges are resolved at install time, against the catalog as it is
then). Publishing the same version again with the same content is a retried upload and changes
nothing; with other content it is refused, as for a plugin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, Session, SQLModel, col, select

from orchestrator.domain.errors import Conflict, InvalidInput
from orchestrator.domain.versions import Version, VersionError, VersionRange
from orchestrator.store.catalog_models import CatalogPlugin
from orchestrator.store.models import utcnow

__all__ = [
    "MAX_MEMBERS",
    "CatalogCollection",
    "CatalogCollectionVersion",
    "PublishedCollection",
    "get_collection",
    "get_collection_version",
    "list_collection_versions",
    "list_collections",
    "publish_collection_version",
]

MAX_MEMBERS = 64
MAX_PAGE = 100
_MAX_README = 200_000
_MAX_DESCRIPTION = 2_000
# The manifest's rule for plugin ids (reverse-DNS), which collection ids follow too.
_ID = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+")


class CatalogCollection(SQLModel, table=True):
    """A collection; ``latest_version`` is its newest stable version (the newest pre-release
    while it has no stable one)."""

    __tablename__ = "catalog_collections"

    id: str = Field(primary_key=True, max_length=128)
    publisher: str = Field(foreign_key="catalog_publishers.id", max_length=64, index=True)
    name: str = Field(max_length=100)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    latest_version: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CatalogCollectionVersion(SQLModel, table=True):
    """One published version of a collection: its members (plugin id -> npm-style range)."""

    __tablename__ = "catalog_collection_versions"
    __table_args__ = (Index("ix_catalog_collection_versions_published", "published_at"),)

    collection_id: str = Field(
        primary_key=True,
        foreign_key="catalog_collections.id",
        ondelete="CASCADE",
        max_length=128,
    )
    version: str = Field(primary_key=True, max_length=64)
    plugins: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    readme: str = Field(default="", sa_column=Column(Text, nullable=False))
    published_at: datetime = Field(default_factory=utcnow)
    published_by: str = Field(max_length=160)


@dataclass(frozen=True)
class PublishedCollection:
    version: CatalogCollectionVersion
    created: bool  # False: the same version with the same content was there already


def publish_collection_version(
    session: Session,
    *,
    collection_id: str,
    version: str,
    plugins: Mapping[str, str],
    publisher: str,
    published_by: str,
    name: str | None = None,
    description: str = "",
    readme: str = "",
) -> PublishedCollection:
    """Store one version of a collection (and the collection, at its first version).

    Refused (422) for an id or version that does not parse, no members or more than
    :data:`MAX_MEMBERS`, a range that does not parse, or a member the catalog does not hold;
    409 ``version_exists`` for a version already published with other content."""
    if not _ID.fullmatch(collection_id) or len(collection_id) > 128:
        raise InvalidInput(
            "a collection id is reverse-DNS, such as com.example.starter-kit",
            code="invalid_collection",
            details={"collection": collection_id[:130]},
        )
    try:
        Version.parse(version)
    except VersionError as exc:
        raise InvalidInput(
            f"cannot read the version {version!r}: {exc}", code="invalid_version"
        ) from None
    members = _members(plugins)
    known = set(
        session.exec(select(CatalogPlugin.id).where(col(CatalogPlugin.id).in_(list(members)))).all()
    )
    missing = sorted(set(members) - known)
    if missing:
        raise InvalidInput(
            "a collection names catalog plugins only; not in the catalog: " + ", ".join(missing),
            code="unknown_members",
            details={"missing": missing},
        )
    if len(description) > _MAX_DESCRIPTION or len(readme) > _MAX_README:
        raise InvalidInput(
            f"a description has at most {_MAX_DESCRIPTION} characters, a README {_MAX_README}",
            code="too_long",
        )

    collection = session.exec(
        select(CatalogCollection).where(CatalogCollection.id == collection_id).with_for_update()
    ).first()
    if collection is None:
        collection = CatalogCollection(
            id=collection_id,
            publisher=publisher,
            name=(name or collection_id)[:100],
            description=description,
        )
        session.add(collection)
        session.flush()
    existing = session.get(CatalogCollectionVersion, (collection_id, version))
    if existing is not None:
        if (existing.plugins, existing.description, existing.readme) == (
            members,
            description,
            readme,
        ):
            return PublishedCollection(existing, created=False)
        raise Conflict(
            f"{collection_id} {version} is published already, with other content; a version "
            "never changes: publish a new one",
            code="version_exists",
        )
    row = CatalogCollectionVersion(
        collection_id=collection_id,
        version=version,
        plugins=members,
        description=description,
        readme=readme,
        published_by=published_by[:160],
    )
    session.add(row)
    session.flush()
    versions = [v.version for v in list_collection_versions(session, collection_id=collection_id)]
    latest = _pick_latest(versions)
    if latest == version:
        collection.description = description
        if name:
            collection.name = name[:100]
    collection.latest_version = latest
    collection.updated_at = utcnow()
    session.add(collection)
    session.flush()
    return PublishedCollection(row, created=True)


def get_collection(session: Session, *, collection_id: str) -> CatalogCollection | None:
    return session.get(CatalogCollection, collection_id)


def get_collection_version(
    session: Session, *, collection_id: str, version: str
) -> CatalogCollectionVersion | None:
    return session.get(CatalogCollectionVersion, (collection_id, version))


def list_collection_versions(
    session: Session, *, collection_id: str
) -> list[CatalogCollectionVersion]:
    """A collection's versions, newest first (semantic version order)."""
    rows = session.exec(
        select(CatalogCollectionVersion).where(
            CatalogCollectionVersion.collection_id == collection_id
        )
    ).all()
    return sorted(rows, key=lambda r: _semver(r.version), reverse=True)


def list_collections(
    session: Session, *, after: str | None = None, limit: int = 50
) -> list[CatalogCollection]:
    """Collections by id, ``limit`` of them after the id ``after`` (keyset paging)."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(CatalogCollection).order_by(col(CatalogCollection.id)).limit(limit)
    if after is not None:
        stmt = stmt.where(col(CatalogCollection.id) > after)
    return list(session.exec(stmt).all())


def _members(plugins: Mapping[str, Any]) -> dict[str, str]:
    if not plugins:
        raise InvalidInput("a collection has at least one plugin", code="invalid_collection")
    if len(plugins) > MAX_MEMBERS:
        raise InvalidInput(
            f"a collection has at most {MAX_MEMBERS} plugins", code="invalid_collection"
        )
    members: dict[str, str] = {}
    problems: list[dict[str, str]] = []
    for plugin_id, text in sorted(plugins.items()):
        if not isinstance(text, str) or not _ID.fullmatch(plugin_id) or len(plugin_id) > 128:
            problems.append({"plugin": plugin_id[:130], "message": "not a plugin id and range"})
            continue
        try:
            VersionRange.parse(text)
        except VersionError as exc:
            problems.append({"plugin": plugin_id, "range": text[:130], "message": str(exc)})
            continue
        members[plugin_id] = text.strip() or "*"
    if problems:
        raise InvalidInput(
            "the collection's members are not valid", code="invalid_collection", details=problems
        )
    return members


def _semver(text: str) -> Version:
    try:
        return Version.parse(text)
    except VersionError:
        return Version(0, 0, 0, ("0",))


def _pick_latest(versions: list[str]) -> str | None:
    parsed = [(_semver(v), v) for v in versions]
    stable = [p for p in parsed if not p[0].prerelease]
    pool = stable or parsed
    return max(pool)[1] if pool else None
