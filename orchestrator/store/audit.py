"""The audit log: refused host API calls (folded per actor, action, outcome and minute) and
other notable actions (an admin's override), kept after the plugin is gone."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Executable, case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from orchestrator.store.models import AuditRecord, utcnow

__all__ = ["add_audit", "fold_audit", "list_audit"]


def add_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    outcome: str,
    permission: str | None = None,
    detail: str | None = None,
) -> None:
    """A record of its own (an allowed action such as an admin's override): never folded."""
    at = utcnow()
    session.add(
        AuditRecord(
            at=at,
            actor=actor,
            action=action,
            outcome=outcome,
            permission=permission,
            detail=detail,
            last_at=at,
        )
    )


def fold_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    outcome: str,
    permission: str | None = None,
    detail: str | None = None,
    at: datetime,
) -> int:
    """Count a refusal into its actor's, action's and outcome's record of ``at``'s minute.

    One statement, INSERT ... ON CONFLICT DO UPDATE on the fold's unique index, so concurrent
    refusals (threads, or orchestrators sharing a PostgreSQL) add up and none is lost. Returns
    the record's count after this one: 1 when it opened a new record.
    """
    row = {
        "at": at,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "permission": permission,
        "detail": detail,
        "count": 1,
        "minute": at.replace(second=0, microsecond=0),
        "last_at": at,
    }
    fold = _audit_fold_statement(session.get_bind().dialect.name)
    return int(session.execute(fold, row).scalar_one())


@functools.cache
def _audit_fold_statement(dialect: str) -> Executable:
    # Built once: a flood of refusals should cost a statement each, not its construction too.
    table = AuditRecord.__table__  # type: ignore[attr-defined]
    insert = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    count, last_at, latest = table.c["count"], table.c["last_at"], insert.excluded["last_at"]
    return insert.on_conflict_do_update(
        index_elements=["actor", "action", "outcome", "minute"],
        set_={
            "count": count + 1,
            # Concurrent calls may commit out of order: keep the latest time, not the last.
            "last_at": case((latest > last_at, latest), else_=last_at),
        },
    ).returning(count)


def list_audit(
    session: Session, *, actor: str | None = None, limit: int = 100, before_id: int | None = None
) -> Sequence[AuditRecord]:
    query = select(AuditRecord)
    if actor is not None:
        query = query.where(col(AuditRecord.actor) == actor)
    if before_id is not None:
        query = query.where(col(AuditRecord.id) < before_id)
    return session.exec(query.order_by(col(AuditRecord.id).desc()).limit(limit)).all()
