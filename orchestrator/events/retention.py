"""Keeps the event log and the delivery history from growing without bound.

Every ``interval_s`` it removes, older than ``keep_s``:

- finished deliveries (delivered, cancelled, replayed) and their attempts;
- events that no delivery still needs (none pending, none dead: dead letters stay until an
  operator replays them or removes the subscription).

Several replicas may run it at once: every statement is a plain conditional delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from orchestrator.events.periodic import Periodic
from orchestrator.store import events as store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import utcnow

__all__ = ["Retention"]

log = logging.getLogger(__name__)

FINISHED = ("delivered", "cancelled", "replayed")


class Retention(Periodic):
    name = "event log pruning"

    def __init__(
        self,
        engine: Engine,
        *,
        keep_s: float,
        interval_s: float,
        when: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(interval_s)
        self.engine = engine
        self.keep_s = keep_s
        self.when = when  # with replicas: only on the elected one

    def start(self) -> None:
        if self.keep_s > 0:
            super().start()

    async def tick(self) -> None:
        if not self.when():
            return
        removed = await asyncio.to_thread(self.prune)
        if any(removed.values()):
            log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in removed.items()))

    def prune(self) -> dict[str, int]:
        cutoff = utcnow() - timedelta(seconds=self.keep_s)
        with session_scope(self.engine) as session:
            return store.prune(session, cutoff=cutoff, finished=FINISHED)
