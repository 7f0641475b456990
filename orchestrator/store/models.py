"""SQLModel tables. Only ``services/lifecycle.py`` changes a plugin's state column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Plugin(SQLModel, table=True):
    __tablename__ = "plugins"

    id: str = Field(primary_key=True, max_length=128)
    version: str = Field(max_length=64)
    pending_version: str | None = Field(default=None, max_length=64)
    state: str = Field(max_length=16, index=True)
    state_reason: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PluginVersion(SQLModel, table=True):
    __tablename__ = "plugin_versions"

    plugin_id: str = Field(primary_key=True, foreign_key="plugins.id", max_length=128)
    version: str = Field(primary_key=True, max_length=64)
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    image: str = Field(max_length=512)
    image_id: str | None = Field(default=None, max_length=128)
    source: str = Field(max_length=16)  # "bundle" | "image"
    source_digest: str | None = Field(default=None, max_length=80)
    installed_at: datetime = Field(default_factory=utcnow)


class StateTransition(SQLModel, table=True):
    __tablename__ = "state_transitions"
    __table_args__ = (Index("ix_transitions_plugin_at", "plugin_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    plugin_id: str = Field(max_length=128)
    from_state: str = Field(max_length=16)
    to_state: str = Field(max_length=16)
    action: str = Field(max_length=32)
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


class Grant(SQLModel, table=True):
    __tablename__ = "grants"

    plugin_id: str = Field(primary_key=True, foreign_key="plugins.id", max_length=128)
    permission: str = Field(primary_key=True, max_length=64)
    granted_at: datetime = Field(default_factory=utcnow)


class Container(SQLModel, table=True):
    __tablename__ = "containers"

    id: str = Field(primary_key=True, max_length=80)
    plugin_id: str = Field(foreign_key="plugins.id", index=True, max_length=128)
    name: str = Field(max_length=128)
    version: str = Field(max_length=64)
    image: str = Field(max_length=512)
    endpoint: str = Field(max_length=512)
    created_at: datetime = Field(default_factory=utcnow)
