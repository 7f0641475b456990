"""Webhook subscriptions: filters, transformation, retry policy and their sealed secrets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete
from sqlmodel import Session, col, select

from orchestrator.store.models import Delivery, DeliveryAttempt, Webhook

__all__ = [
    "add_webhook",
    "delete_webhook",
    "get_webhook",
    "get_webhooks",
    "list_active_webhooks",
    "list_webhooks",
    "save_webhook",
]


def add_webhook(session: Session, *, webhook: Webhook) -> Webhook:
    session.add(webhook)
    return webhook


def save_webhook(session: Session, *, webhook: Webhook) -> None:
    """Write back changes made to a subscription read in this session."""
    session.add(webhook)


def get_webhook(session: Session, *, webhook_id: str) -> Webhook | None:
    return session.get(Webhook, webhook_id)


def get_webhooks(session: Session, *, ids: Iterable[str]) -> dict[str, Webhook]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.exec(select(Webhook).where(col(Webhook.id).in_(wanted))).all()
    return {row.id: row for row in rows}


def list_webhooks(session: Session) -> Sequence[Webhook]:
    return session.exec(select(Webhook).order_by(col(Webhook.created_at))).all()


def list_active_webhooks(session: Session) -> Sequence[Webhook]:
    return session.exec(select(Webhook).where(col(Webhook.status) == "active")).all()


def delete_webhook(session: Session, *, webhook_id: str) -> None:
    """The subscription, its deliveries and their attempts go together."""
    ids = select(Delivery.id).where(col(Delivery.webhook_id) == webhook_id)
    session.execute(delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(ids)))
    session.execute(delete(Delivery).where(col(Delivery.webhook_id) == webhook_id))
    session.execute(delete(Webhook).where(col(Webhook.id) == webhook_id))
