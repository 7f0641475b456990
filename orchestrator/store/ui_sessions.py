"""Web UI sessions (``ui_sessions``): the rows behind ``web/sessions.py``, shared by replicas.

A row is found by the sha256 of its session id; what it holds is sealed by the caller (the
token) or harmless (the actor's name, times, one-shot messages). Times are unix seconds.
"""

from __future__ import annotations

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, col, create_engine

from orchestrator.store.models import UiSessionRecord

__all__ = [
    "add_ui_session",
    "change_ui_flashes",
    "count_ui_sessions",
    "delete_expired_ui_sessions",
    "delete_ui_session",
    "get_ui_session",
    "make_room_for_ui_session",
    "touch_ui_session",
    "ui_sessions_in_memory",
]


def add_ui_session(session: Session, *, record: UiSessionRecord) -> None:
    session.add(record)


def get_ui_session(session: Session, *, id_hash: str) -> UiSessionRecord | None:
    return session.get(UiSessionRecord, id_hash)


def touch_ui_session(session: Session, *, id_hash: str, seen: float) -> None:
    """Move the session's last-seen time forward to ``seen`` (never back: another replica may
    have written a later one meanwhile)."""
    session.execute(
        update(UiSessionRecord)
        .where(col(UiSessionRecord.id_hash) == id_hash, col(UiSessionRecord.seen) < seen)
        .values(seen=seen)
        .execution_options(synchronize_session=False)
    )


def delete_ui_session(session: Session, *, id_hash: str) -> bool:
    """Remove the session; False when it was already gone."""
    result = session.execute(
        delete(UiSessionRecord)
        .where(col(UiSessionRecord.id_hash) == id_hash)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_expired_ui_sessions(
    session: Session, *, seen_before: float, created_before: float
) -> int:
    """Remove the sessions idle since before ``seen_before`` or made before ``created_before``."""
    result = session.execute(
        delete(UiSessionRecord)
        .where(
            or_(
                col(UiSessionRecord.seen) < seen_before,
                col(UiSessionRecord.created) < created_before,
            )
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def make_room_for_ui_session(session: Session, *, limit: int) -> int:
    """Remove the least recently seen sessions until one more fits under ``limit``; how many
    went. (Two replicas signing people in at once may each remove some: the cap holds, and a
    few more sessions than needed end early.)"""
    count = count_ui_sessions(session)
    excess = count - limit + 1
    if excess <= 0:
        return 0
    oldest = select(col(UiSessionRecord.id_hash)).order_by(col(UiSessionRecord.seen)).limit(excess)
    result = session.execute(
        delete(UiSessionRecord)
        .where(col(UiSessionRecord.id_hash).in_(oldest))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def change_ui_flashes(
    session: Session,
    *,
    id_hash: str,
    taken: list[list[str]],
    added: list[list[str]],
    keep: int,
) -> list[list[str]] | None:
    """Apply one request's changes to the session's waiting messages: remove those it showed
    (``taken``), append those it made (``added``), keep the newest ``keep``. Returns the new
    list, or None when the session is gone. Applied to the row as it is now, not as the
    request read it, so two tabs (or two replicas) changing the messages at once lose none."""
    # A no-op UPDATE first takes the row's lock on PostgreSQL and the database's write lock on
    # SQLite, so the read below and the write after it are not interleaved with another's.
    locked = session.execute(
        update(UiSessionRecord)
        .where(col(UiSessionRecord.id_hash) == id_hash)
        .values(seen=col(UiSessionRecord.seen))
        .execution_options(synchronize_session=False)
    )
    if not locked.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(UiSessionRecord, id_hash)
    if row is None:
        return None
    waiting = [list(item) for item in row.flashes]
    for item in taken:
        if item in waiting:
            waiting.remove(item)
    waiting = [*waiting, *added][-keep:] if keep > 0 else []
    row.flashes = waiting
    session.add(row)
    return waiting


def count_ui_sessions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(UiSessionRecord)) or 0)


def ui_sessions_in_memory() -> Engine:
    """A private in-memory SQLite database holding only this table: the sessions of an app
    assembled without the orchestrator's database (unit tests). One connection, shared by
    every thread (the caller serialises its use): an in-memory database exists per
    connection."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    UiSessionRecord.metadata.tables["ui_sessions"].create(engine)
    return engine
