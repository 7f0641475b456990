"""Installs and uninstalls that other orchestrators reported to this catalog (those that read
it as their ``SUMMIT_CATALOG_URL``): one row per orchestrator, plugin version, event and UTC
day, so a report sent again (a retry, a replay) is counted once. ``catalog/reports.py`` adds
what a new row reports to the catalog's daily statistics in the same transaction.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy import ForeignKeyConstraint, Index
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel

from orchestrator.store.models import utcnow

__all__ = ["CatalogInstallReport", "add_report", "reports_by"]


class CatalogInstallReport(SQLModel, table=True):
    """One reported event. ``reporter`` is who sent it (the API token's id, or how the caller
    is named), so one token's reports for one version and day can be capped."""

    __tablename__ = "catalog_install_reports"
    __table_args__ = (
        ForeignKeyConstraint(
            ["plugin_id", "version"],
            ["catalog_versions.plugin_id", "catalog_versions.version"],
            ondelete="CASCADE",
        ),
        Index("ix_catalog_install_reports_reporter", "reporter", "plugin_id", "version", "day"),
    )

    plugin_id: str = Field(primary_key=True, max_length=128)
    version: str = Field(primary_key=True, max_length=64)
    day: date = Field(primary_key=True)
    event: str = Field(primary_key=True, max_length=16)  # install, uninstall
    orchestrator: str = Field(primary_key=True, max_length=128)
    reporter: str = Field(max_length=160)
    reported_at: datetime = Field(default_factory=utcnow)


_REPORTS = CatalogInstallReport.__table__  # type: ignore[attr-defined]


def add_report(
    session: Session,
    *,
    plugin_id: str,
    version: str,
    day: date,
    event: str,
    orchestrator: str,
    reporter: str,
) -> bool:
    """Store the report; False when the same one (orchestrator, version, event, day) is
    stored already. Two identical reports at once: one of them is new."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert(_REPORTS) if dialect == "postgresql" else sqlite_insert(_REPORTS)
    statement = insert.values(
        plugin_id=plugin_id,
        version=version,
        day=day,
        event=event,
        orchestrator=orchestrator,
        reporter=reporter[:160],
        reported_at=utcnow(),
    ).on_conflict_do_nothing()
    # A row comes back only when one was inserted (rowcount is not reliable here: PostgreSQL's
    # driver may not tell it for an upsert).
    return session.execute(statement.returning(_REPORTS.c.day)).first() is not None


def reports_by(session: Session, *, reporter: str, plugin_id: str, version: str, day: date) -> int:
    """How many reports ``reporter`` made of one version on one day."""
    stmt = sa.select(sa.func.count()).where(
        _REPORTS.c.reporter == reporter[:160],
        _REPORTS.c.plugin_id == plugin_id,
        _REPORTS.c.version == version,
        _REPORTS.c.day == day,
    )
    return int(session.execute(stmt).scalar_one())
