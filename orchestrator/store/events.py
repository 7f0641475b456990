"""The event log and what it owes: deliveries (one event to one target, ``webhook:<id>`` or
``plugin:<id>``) and the attempts made at each.

Deliveries are an outbox: :func:`add_deliveries` runs in the transaction that logs the event.
Senders lease due rows (:func:`lease_due_deliveries`), write their outcomes back in batches
(:func:`record_delivery_results`, :func:`add_delivery_attempts`) and renew or release their
leases. The bulk writes are Core executemany statements: building ORM objects cost more than
the statements themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from orchestrator.store.models import Delivery, DeliveryAttempt, EventRecord, Webhook

__all__ = [
    "add_deliveries",
    "add_delivery_attempts",
    "add_event",
    "add_events",
    "add_replays",
    "cancel_deliveries",
    "count_webhook_deliveries",
    "existing_delivery_ids",
    "get_delivery",
    "get_event",
    "lease_due_deliveries",
    "list_dead_letters",
    "list_deliveries_with_events",
    "list_delivery_attempts",
    "list_events",
    "list_events_between",
    "list_webhook_deliveries",
    "mark_replayed",
    "prune",
    "record_delivery_results",
    "release_leases",
    "renew_leases",
]

# -- events -------------------------------------------------------------------------------------


def add_event(session: Session, *, event: EventRecord) -> None:
    session.add(event)


def add_events(session: Session, *, events: Sequence[Mapping[str, Any]]) -> None:
    """Log events given as ``{id, type, source, subject, time, payload}``, in this order."""
    if events:
        session.execute(EventRecord.__table__.insert(), list(events))  # type: ignore[attr-defined]


def get_event(session: Session, *, event_id: str) -> EventRecord | None:
    return session.get(EventRecord, event_id)


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def list_events(
    session: Session,
    *,
    type_pattern: str | None = None,
    source: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: str | None = None,
    limit: int = 100,
) -> list[EventRecord]:
    """Events in log order (time, then id), filtered; ``after_id`` continues a page."""
    query = select(EventRecord)
    if type_pattern:
        query = query.where(col(EventRecord.type).like(_like(type_pattern), escape="\\"))
    if source:
        query = query.where(col(EventRecord.source) == source)
    if subject:
        query = query.where(col(EventRecord.subject) == subject)
    if since:
        query = query.where(col(EventRecord.time) >= since)
    if until:
        query = query.where(col(EventRecord.time) < until)
    if after_id:
        last = session.get(EventRecord, after_id)
        if last is not None:
            query = query.where(
                (col(EventRecord.time) > last.time)
                | ((col(EventRecord.time) == last.time) & (col(EventRecord.id) > last.id))
            )
    query = query.order_by(col(EventRecord.time), col(EventRecord.id)).limit(limit)
    return list(session.exec(query).all())


def list_events_between(
    session: Session, *, since: datetime, until: datetime | None, limit: int
) -> Sequence[EventRecord]:
    """Events logged from ``since`` up to (not including) ``until``, in log order."""
    query = select(EventRecord).where(col(EventRecord.time) >= since)
    if until is not None:
        query = query.where(col(EventRecord.time) < until)
    return session.exec(
        query.order_by(col(EventRecord.time), col(EventRecord.id)).limit(limit)
    ).all()


# -- deliveries: written with the event ---------------------------------------------------------


def add_deliveries(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Deliveries given as column values, inserted in this order (a plugin's deliveries are
    sent in id order)."""
    if rows:
        session.execute(Delivery.__table__.insert(), list(rows))  # type: ignore[attr-defined]


def add_replays(
    session: Session, *, webhook_id: str, items: Iterable[tuple[str, int | None]]
) -> int:
    """New deliveries to a webhook of ``(event_id, replay_of)``; how many were added."""
    rows = [
        Delivery(
            target=f"webhook:{webhook_id}",
            webhook_id=webhook_id,
            event_id=event_id,
            replay_of=replay_of,
        )
        for event_id, replay_of in items
    ]
    session.add_all(rows)
    return len(rows)


# -- deliveries: the history operators read -----------------------------------------------------


def get_delivery(session: Session, *, delivery_id: int) -> Delivery | None:
    return session.get(Delivery, delivery_id)


def list_delivery_attempts(session: Session, *, delivery_id: int) -> Sequence[DeliveryAttempt]:
    return session.exec(
        select(DeliveryAttempt)
        .where(col(DeliveryAttempt.delivery_id) == delivery_id)
        .order_by(col(DeliveryAttempt.attempt))
    ).all()


def list_webhook_deliveries(
    session: Session,
    *,
    webhook_id: str,
    status: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[tuple[Delivery, str | None]]:
    """A webhook's deliveries, newest first, each with its event's type (None once pruned)."""
    query = (
        select(Delivery, EventRecord.type)
        .join(EventRecord, col(EventRecord.id) == col(Delivery.event_id), isouter=True)
        .where(col(Delivery.webhook_id) == webhook_id)
    )
    if status is not None:
        query = query.where(col(Delivery.status) == status)
    if before is not None:
        query = query.where(col(Delivery.id) < before)
    rows = session.exec(query.order_by(col(Delivery.id).desc()).limit(limit)).all()
    return [(delivery, event_type) for delivery, event_type in rows]


def count_webhook_deliveries(
    session: Session, *, webhook_id: str | None = None
) -> dict[str, dict[str, int]]:
    """``{webhook id: {status: deliveries}}``, of one webhook or of all."""
    query = select(Delivery.webhook_id, Delivery.status, func.count()).where(
        col(Delivery.webhook_id).is_not(None)
    )
    if webhook_id is not None:
        query = query.where(col(Delivery.webhook_id) == webhook_id)
    counts: dict[str, dict[str, int]] = {}
    for hook_id, status, n in session.exec(
        query.group_by(col(Delivery.webhook_id), col(Delivery.status))
    ).all():
        counts.setdefault(str(hook_id), {})[status] = int(n)
    return counts


def list_dead_letters(session: Session, *, webhook_id: str) -> Sequence[Delivery]:
    return session.exec(
        select(Delivery)
        .where(col(Delivery.webhook_id) == webhook_id, col(Delivery.status) == "dead")
        .order_by(col(Delivery.id))
    ).all()


def mark_replayed(session: Session, *, webhook_id: str, delivery_id: int | None = None) -> None:
    """Dead letters of a webhook (all, or ``delivery_id`` if it is one) become ``replayed``."""
    stmt = update(Delivery).where(
        col(Delivery.webhook_id) == webhook_id, col(Delivery.status) == "dead"
    )
    if delivery_id is not None:
        stmt = stmt.where(col(Delivery.id) == delivery_id)
    session.execute(stmt.values(status="replayed"))


# -- deliveries: the senders' leases and results ------------------------------------------------


def lease_due_deliveries(
    session: Session,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    skip_targets: Sequence[str] = (),
    skip_ids: Sequence[int] = (),
    limit: int,
) -> list[int]:
    """Lease to ``owner`` up to ``limit`` due deliveries, oldest first; their ids.

    Due: pending, ``next_at`` passed, no live lease, the webhook (if any) active, and for an
    ordered target the oldest of its pending deliveries. ``skip_targets`` (saturated ones) and
    ``skip_ids`` (what the caller has in flight, even if its lease ran out) are left alone.
    """
    later = aliased(Delivery)
    due = and_(
        col(Delivery.status) == "pending",
        col(Delivery.next_at) <= now,
        or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
    )
    head_of_line = or_(
        col(Delivery.ordered).is_(False),
        ~exists().where(
            col(later.target) == col(Delivery.target),
            col(later.status) == "pending",
            col(later.id) < col(Delivery.id),
        ),
    )
    live_hook = or_(
        col(Delivery.webhook_id).is_(None),
        col(Delivery.webhook_id).in_(select(Webhook.id).where(col(Webhook.status) == "active")),
    )
    # The usual queue pick: oldest due first, rows another replica holds are skipped rather
    # than waited for (SKIP LOCKED; SQLite, one writer at a time, has no need).
    pick = (
        select(col(Delivery.id))
        .where(due, head_of_line, live_hook)
        .where(col(Delivery.target).not_in(skip_targets) if skip_targets else True)
        .where(col(Delivery.id).not_in(skip_ids) if skip_ids else True)
        .order_by(col(Delivery.id))
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    picked = list(session.exec(pick).all())
    if not picked:
        return []
    leased = session.execute(
        update(Delivery)
        .where(col(Delivery.id).in_(picked), due)
        .values(lease_owner=owner, lease_until=lease_until)
        .returning(col(Delivery.id))
    ).all()
    return [row[0] for row in leased]


def list_deliveries_with_events(
    session: Session, *, ids: Sequence[int]
) -> list[tuple[Delivery, EventRecord]]:
    """The deliveries of ``ids`` whose event is still logged, with it, in id order."""
    rows = session.exec(
        select(Delivery, EventRecord)
        .join(EventRecord, col(EventRecord.id) == col(Delivery.event_id))
        .where(col(Delivery.id).in_(ids))
        .order_by(col(Delivery.id))
    ).all()
    return [(delivery, event) for delivery, event in rows]


def cancel_deliveries(session: Session, *, ids: Sequence[int], reason: str, at: datetime) -> None:
    session.execute(
        update(Delivery)
        .where(col(Delivery.id).in_(ids))
        .values(
            status="cancelled",
            last_error=reason,
            lease_owner=None,
            lease_until=None,
            finished_at=at,
        )
    )


def release_leases(session: Session, *, owner: str) -> None:
    """Give up ``owner``'s leases on deliveries still pending."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.lease_owner) == owner, col(Delivery.status) == "pending")
        .values(lease_owner=None, lease_until=None)
    )


def renew_leases(session: Session, *, ids: Sequence[int], owner: str, until: datetime) -> None:
    """Extend ``owner``'s leases on ``ids`` (those another sender took over are left)."""
    for start in range(0, len(ids), 500):
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids[start : start + 500]))
            .where(col(Delivery.lease_owner) == owner)
            .values(lease_until=until)
        )


def existing_delivery_ids(session: Session, *, ids: Sequence[int]) -> set[int]:
    found = session.exec(select(Delivery.id).where(col(Delivery.id).in_(ids))).all()
    return {i for i in found if i is not None}


def record_delivery_results(session: Session, *, results: Sequence[Mapping[str, Any]]) -> None:
    """Write senders' outcomes and release their leases. Each result gives ``id``,
    ``status``, ``attempts``, ``next_at``, ``last_status``, ``last_error``, ``latency_ms``
    and ``finished_at``."""
    if not results:
        return
    table = Delivery.__table__  # type: ignore[attr-defined]
    session.execute(
        table.update()
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            next_at=bindparam("b_next_at"),
            lease_owner=None,
            lease_until=None,
            last_status=bindparam("b_code"),
            last_error=bindparam("b_error"),
            latency_ms=bindparam("b_latency"),
            finished_at=bindparam("b_finished"),
        ),
        [
            {
                "b_id": r["id"],
                "b_status": r["status"],
                "b_attempts": r["attempts"],
                "b_next_at": r["next_at"],
                "b_code": r["last_status"],
                "b_error": r["last_error"],
                "b_latency": r["latency_ms"],
                "b_finished": r["finished_at"],
            }
            for r in results
        ],
    )


_ATTEMPT_COLUMNS = ("delivery_id", "attempt", "at", "status_code", "error", "latency_ms")


def add_delivery_attempts(session: Session, *, attempts: Sequence[Mapping[str, Any]]) -> None:
    """Attempts given as ``{delivery_id, attempt, at, status_code, error, latency_ms}``; one
    whose delivery is gone (its webhook was deleted meanwhile) is not written. The check is in
    the insert itself: a read before it can be older than the write (SQLite's driver begins
    the transaction at the first write), and a webhook deleted between the two left orphan
    attempts."""
    if not attempts:
        return
    table = DeliveryAttempt.__table__  # type: ignore[attr-defined]
    values = sa_select(
        *(bindparam(name, type_=table.c[name].type) for name in _ATTEMPT_COLUMNS)
    ).where(exists().where(col(Delivery.id) == bindparam("delivery_id")))
    session.execute(
        insert(table).from_select([table.c[name] for name in _ATTEMPT_COLUMNS], values),
        [{name: a.get(name) for name in _ATTEMPT_COLUMNS} for a in attempts],
    )


# -- retention ----------------------------------------------------------------------------------


def prune(session: Session, *, cutoff: datetime, finished: Sequence[str]) -> dict[str, int]:
    """Remove, older than ``cutoff``, deliveries in a ``finished`` status with their attempts,
    then events no delivery refers to; how many of each went. Each statement is a plain
    conditional delete, so replicas may prune at once."""
    conn = session.connection()  # Core results carry rowcount
    old = select(Delivery.id).where(
        col(Delivery.status).in_(finished), col(Delivery.created_at) < cutoff
    )
    attempts = conn.execute(
        delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(old))
    ).rowcount
    deliveries = conn.execute(
        delete(Delivery).where(
            col(Delivery.status).in_(finished), col(Delivery.created_at) < cutoff
        )
    ).rowcount
    still_needed = exists().where(col(Delivery.event_id) == col(EventRecord.id))
    events = conn.execute(
        delete(EventRecord).where(col(EventRecord.time) < cutoff, ~still_needed)
    ).rowcount
    return {"events": events, "deliveries": deliveries, "attempts": attempts}
