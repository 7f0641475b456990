"""SQLModel tables of the plugin catalog: published plugins and their immutable versions,
publishers and the id namespaces they own, and per-day usage statistics.

A catalog plugin row carries a copy of its latest visible version's searchable fields (name,
description, README, keywords, categories, extension points, permissions, signature status)
so that search, facets and sorting read one row per plugin; ``store/catalog.py`` rewrites
that copy whenever the latest version changes (publish, yank, unyank). The full-text index
is built from the copy by the database itself: a generated ``tsvector`` column on PostgreSQL
and an FTS5 table kept by triggers on SQLite (migration ``0008``); neither is mapped here,
so the ORM never writes them.

Kept apart from ``models.py`` while that file is being edited elsewhere.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKeyConstraint, Index, Text, text
from sqlmodel import Field, SQLModel

from orchestrator.store.models import utcnow

__all__ = [
    "CatalogDailyStat",
    "CatalogPlugin",
    "CatalogTag",
    "CatalogVersion",
    "Publisher",
    "PublisherNamespace",
]


class Publisher(SQLModel, table=True):
    """Whoever publishes plugins to the catalog. ``token_id`` links an API token to it, so a
    publisher's token publishes as that publisher."""

    __tablename__ = "catalog_publishers"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    token_id: str | None = Field(default=None, max_length=32, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class PublisherNamespace(SQLModel, table=True):
    """A plugin id prefix (``com.example.``) only its publisher may publish under."""

    __tablename__ = "catalog_namespaces"

    prefix: str = Field(primary_key=True, max_length=128)
    publisher_id: str = Field(foreign_key="catalog_publishers.id", max_length=64, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class CatalogPlugin(SQLModel, table=True):
    """A plugin in the catalog, with a copy of its latest visible version's searchable fields.

    ``latest_version`` is None while every version is yanked: the plugin is then left out of
    search but its page and versions stay readable. ``installs`` and ``active_installs`` are
    running totals kept by the statistics, the ``popular`` sort's key."""

    __tablename__ = "catalog_plugins"
    __table_args__ = (
        Index("ix_catalog_plugins_name", "deprecated", "sort_name", "id"),
        Index("ix_catalog_plugins_popular", "deprecated", text("installs DESC"), "id"),
        Index("ix_catalog_plugins_newest", "deprecated", text("latest_published_at DESC"), "id"),
    )

    id: str = Field(primary_key=True, max_length=128)
    publisher: str = Field(foreign_key="catalog_publishers.id", max_length=64, index=True)
    name: str = Field(max_length=100)
    sort_name: str = Field(max_length=100)  # name, case-folded: one order on both databases
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    latest_version: str | None = Field(default=None, max_length=64)
    latest_published_at: datetime | None = None
    deprecated: bool = False
    deprecation_reason: str | None = None
    successor_id: str | None = Field(default=None, max_length=128)
    # Copied from the latest visible version (see the module's docstring).
    readme: str = Field(default="", sa_column=Column(Text, nullable=False))
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    points: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    permissions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    search_tags: str = Field(default="", sa_column=Column(Text, nullable=False))
    signed: bool = False  # the latest version's signature was verified
    installs: int = Field(default=0, sa_type=BigInteger)
    active_installs: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CatalogTag(SQLModel, table=True):
    """One facet value of a plugin's latest visible version: ``kind`` is ``point``,
    ``category`` or ``permission``. Filters and facet counts are plain joins on this table,
    the same SQL on both databases."""

    __tablename__ = "catalog_tags"
    __table_args__ = (Index("ix_catalog_tags_value", "kind", "value", "plugin_id"),)

    plugin_id: str = Field(
        primary_key=True, foreign_key="catalog_plugins.id", ondelete="CASCADE", max_length=128
    )
    kind: str = Field(primary_key=True, max_length=16)
    value: str = Field(primary_key=True, max_length=64)


class CatalogVersion(SQLModel, table=True):
    """One published version. Immutable but for the yank fields: its image is named by
    digest, so what was reviewed is what gets installed."""

    __tablename__ = "catalog_versions"
    __table_args__ = (Index("ix_catalog_versions_range", "summit_range", "yanked"),)

    plugin_id: str = Field(
        primary_key=True, foreign_key="catalog_plugins.id", ondelete="CASCADE", max_length=128
    )
    version: str = Field(primary_key=True, max_length=64)
    image: str = Field(max_length=512)  # registry/name@sha256:...
    digest: str = Field(max_length=80)
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # The manifest's compatibility.summit range ("*" when it names none): compatibility is
    # decided per distinct range, of which a catalog holds few.
    summit_range: str = Field(default="*", max_length=128)
    readme: str = Field(default="", sa_column=Column(Text, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    links: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    changelog: str = Field(default="", sa_column=Column(Text, nullable=False))
    license: str | None = Field(default=None, max_length=64)
    price: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    signature: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    signature_status: str = Field(default="unsigned", max_length=16)
    scan_report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    scan_summary: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    published_at: datetime = Field(default_factory=utcnow)
    published_by: str = Field(max_length=160)
    yanked: bool = False
    yanked_reason: str | None = None
    yanked_at: datetime | None = None


class CatalogDailyStat(SQLModel, table=True):
    """What one version of a plugin did on one day (UTC).

    Counters add up; ``active_installs`` is a level, the version's count at the end of the
    day (carried from its previous row when a day's row is first written). Latencies are a
    sparse histogram on logarithmic buckets (``{"bucket": count}``, see ``store/catalog.py``)
    so days and versions merge into percentiles without keeping every sample."""

    __tablename__ = "catalog_daily_stats"
    __table_args__ = (
        ForeignKeyConstraint(
            ["plugin_id", "version"],
            ["catalog_versions.plugin_id", "catalog_versions.version"],
            ondelete="CASCADE",
        ),
        Index("ix_catalog_daily_stats_day", "plugin_id", "day"),
    )

    plugin_id: str = Field(primary_key=True, max_length=128)
    version: str = Field(primary_key=True, max_length=64)
    day: date = Field(primary_key=True)
    installs: int = Field(default=0, sa_type=BigInteger)
    uninstalls: int = Field(default=0, sa_type=BigInteger)
    active_installs: int = Field(default=0, sa_type=BigInteger)
    calls: int = Field(default=0, sa_type=BigInteger)
    errors: int = Field(default=0, sa_type=BigInteger)
    latency: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    latency_sum_ms: float = 0.0
