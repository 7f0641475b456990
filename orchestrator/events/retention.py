"""Keeps the event log and the delivery history from growing without bound.

Every ``interval_s`` it removes, older than ``keep_s``:

- finished deliveries (delivered, cancelled, replayed) and their attempts;
- events that no delivery still needs (none pending, none dead: dead letters stay until an
  operator replays them or removes the subscription).

Several replicas may run it at once: every statement is a plain conditional delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import delete, exists
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from orchestrator.store.db import session_scope
from orchestrator.store.models import Delivery, DeliveryAttempt, EventRecord, utcnow

__all__ = ["Retention"]

log = logging.getLogger(__name__)

FINISHED = ("delivered", "cancelled", "replayed")


class Retention:
    def __init__(self, engine: Engine, *, keep_s: float, interval_s: float) -> None:
        self.engine = engine
        self.keep_s = keep_s
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.keep_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                removed = await asyncio.to_thread(self.prune)
            except Exception:
                log.exception("pruning the event log failed")
                continue
            if any(removed.values()):
                log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in removed.items()))

    def prune(self) -> dict[str, int]:
        cutoff = utcnow() - timedelta(seconds=self.keep_s)
        with session_scope(self.engine) as session:
            conn = session.connection()  # Core results carry rowcount
            old = select(Delivery.id).where(
                col(Delivery.status).in_(FINISHED), col(Delivery.created_at) < cutoff
            )
            attempts = conn.execute(
                delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(old))
            ).rowcount
            deliveries = conn.execute(
                delete(Delivery).where(
                    col(Delivery.status).in_(FINISHED), col(Delivery.created_at) < cutoff
                )
            ).rowcount
            still_needed = exists().where(col(Delivery.event_id) == col(EventRecord.id))
            events = conn.execute(
                delete(EventRecord).where(col(EventRecord.time) < cutoff, ~still_needed)
            ).rowcount
        return {"events": events, "deliveries": deliveries, "attempts": attempts}
