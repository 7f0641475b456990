"""Who is owed an event, decided inside the transaction that logs it (the outbox): one
``deliveries`` row per matching webhook subscription and per subscribed ACTIVE plugin. The
rows commit with the event or not at all, so a crash between logging and sending loses
nothing; the sender (:mod:`orchestrator.events.sender`) works through them afterwards.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from orchestrator.events.bus import Event
from orchestrator.events.webhooks import Filter
from orchestrator.store.models import Delivery, EventRecord, Webhook

__all__ = ["Fanout", "PluginSubscriber"]

PluginSubscriber = tuple[str, tuple[str, ...]]
"""``(plugin_id, subscribed type patterns)`` of an ACTIVE plugin."""


class Fanout:
    def __init__(self, plugins: Callable[[], Iterable[PluginSubscriber]] | None = None) -> None:
        self._plugins = plugins
        self._filters: dict[str, tuple[datetime, Filter]] = {}
        self._lock = threading.Lock()

    def _filter(self, hook: Webhook) -> Filter:
        with self._lock:
            cached = self._filters.get(hook.id)
            if cached is not None and cached[0] == hook.updated_at:
                return cached[1]
            parsed = Filter.parse(hook.types, hook.predicates)
            self._filters[hook.id] = (hook.updated_at, parsed)
            return parsed

    def __call__(self, session: Session, rows: list[EventRecord]) -> None:
        hooks = session.exec(select(Webhook).where(col(Webhook.status) == "active")).all()
        filters = [(hook.id, self._filter(hook)) for hook in hooks]
        plugins = list(self._plugins()) if self._plugins is not None else []
        deliveries: list[Delivery] = []
        for row in rows:
            event = Event.of(row).to_json()
            for hook_id, flt in filters:
                if flt.matches(event):
                    deliveries.append(
                        Delivery(target=f"webhook:{hook_id}", webhook_id=hook_id, event_id=row.id)
                    )
            for plugin_id, patterns in plugins:
                if row.source == f"plugin:{plugin_id}":
                    continue  # its own publication is not echoed back
                if any(fnmatch.fnmatchcase(row.type, p) for p in patterns):
                    deliveries.append(
                        Delivery(
                            target=f"plugin:{plugin_id}",
                            plugin_id=plugin_id,
                            event_id=row.id,
                            ordered=True,
                        )
                    )
        if deliveries:
            session.add_all(deliveries)
