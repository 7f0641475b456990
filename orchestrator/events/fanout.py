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
from typing import Any

from orchestrator.events.bus import Event
from orchestrator.events.webhooks import Filter
from orchestrator.store import events as event_store
from orchestrator.store import webhooks as webhook_store
from orchestrator.store.db import Session
from orchestrator.store.models import Webhook, utcnow

__all__ = ["NOT_FOR_PLUGINS", "Fanout", "PluginSubscriber"]

PluginSubscriber = tuple[str, tuple[str, ...]]
"""``(plugin_id, subscribed type patterns)`` of an ACTIVE plugin."""

# Webhooks get these, plugins never: delivering the news that one plugin was frozen would
# thaw every subscriber, and each would in turn wake the others (``services/idle.py``).
NOT_FOR_PLUGINS = frozenset({"plugin.paused", "plugin.resumed"})


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

    def __call__(self, session: Session, events: list[Event]) -> None:
        hooks = webhook_store.list_active_webhooks(session)
        filters = [(hook.id, self._filter(hook)) for hook in hooks]
        plugins = list(self._plugins()) if self._plugins is not None else []
        if not filters and not plugins:
            return
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for event in events:
            shape = event.to_json() if filters else {}
            for hook_id, flt in filters:
                if flt.matches(shape):
                    rows.append(_row(f"webhook:{hook_id}", event.id, now, webhook_id=hook_id))
            for plugin_id, patterns in plugins if event.type not in NOT_FOR_PLUGINS else ():
                if event.source == f"plugin:{plugin_id}":
                    continue  # its own publication is not echoed back
                if any(fnmatch.fnmatchcase(event.type, p) for p in patterns):
                    rows.append(
                        _row(
                            f"plugin:{plugin_id}", event.id, now, plugin_id=plugin_id, ordered=True
                        )
                    )
        # In event order: a plugin's deliveries are sent in id order.
        event_store.add_deliveries(session, rows=rows)


def _row(
    target: str,
    event_id: str,
    now: datetime,
    *,
    webhook_id: str | None = None,
    plugin_id: str | None = None,
    ordered: bool = False,
) -> dict[str, Any]:
    return {
        "target": target,
        "webhook_id": webhook_id,
        "plugin_id": plugin_id,
        "event_id": event_id,
        "ordered": ordered,
        "status": "pending",
        "attempts": 0,
        "next_at": now,
        "created_at": now,
    }
