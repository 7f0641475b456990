"""Subscriptions, over ``graphql-transport-ws`` only: plugin state changes and events, as the
event bus hands them to this process (the REST API's ``GET /v1/events/stream`` follows the
same tail).

Each subscription holds one :meth:`EventBus.tail` for as long as it runs; when the client
completes it or the socket closes, Strawberry closes the generator and the tail unsubscribes
from the bus. When the orchestrator stops, the bus ends every tail and the subscriptions
complete. A subscriber that falls more than the bus's buffer behind loses events rather than
holding the orchestrator's memory (``EventBus.tail``); the event log keeps them all
(``events`` query, ``after`` cursor).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from orchestrator.domain.errors import InvalidInput
from orchestrator.events.bus import Event as BusEvent
from orchestrator.services.lifecycle import LIFECYCLE_EVENTS

from .permissions import IsViewer
from .types import Event, Plugin, context_of

__all__ = ["PluginStateChange", "Subscription"]

_STATE_EVENTS = frozenset(LIFECYCLE_EVENTS.values())
MAX_PATTERN = 128


@strawberry.type(description="A plugin took an edge of the lifecycle state machine.")
class PluginStateChange:
    plugin_id: str
    version: str | None
    from_state: str
    to_state: str
    reason: str | None
    event_type: str = strawberry.field(description="e.g. plugin.enabled, plugin.failed")
    event_id: str
    at: datetime

    @strawberry.field(description="The plugin as it is when this change is sent (null: gone)")
    async def plugin(self, info: Info) -> Plugin | None:
        summary = await context_of(info).loaders.plugin.load(self.plugin_id)
        return Plugin.of(summary) if summary is not None else None


def _state_change(event: BusEvent) -> PluginStateChange | None:
    payload = event.payload
    if event.type not in _STATE_EVENTS or not isinstance(payload, dict):
        return None
    return PluginStateChange(
        plugin_id=str(payload.get("plugin") or event.subject or ""),
        version=payload.get("version"),
        from_state=str(payload.get("from")),
        to_state=str(payload.get("to")),
        reason=payload.get("reason"),
        event_type=event.type,
        event_id=event.id,
        at=event.time,
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[IsViewer],
        description="Every state change of every plugin, or of the plugin pluginId",
    )
    async def plugin_state_changed(
        self, info: Info, plugin_id: str | None = None
    ) -> AsyncGenerator[PluginStateChange, None]:
        context = context_of(info)
        async with context.state.events.tail("plugin.*") as queue:
            while True:
                event = await queue.get()
                if event is None:  # the orchestrator is stopping
                    return
                change = _state_change(event)
                if change is None or (plugin_id is not None and change.plugin_id != plugin_id):
                    continue
                context.fresh_loaders()  # the plugin as it is now, not as first read
                yield change

    @strawberry.subscription(
        permission_classes=[IsViewer],
        description="Every event logged from now on whose type matches typePattern "
        "(shell-style on the dotted type: plugin.*, document.created, *)",
    )
    async def events(self, info: Info, type_pattern: str = "*") -> AsyncGenerator[Event, None]:
        if not type_pattern or len(type_pattern) > MAX_PATTERN:
            raise InvalidInput(
                f"typePattern: 1 to {MAX_PATTERN} characters",
                code="invalid_request",
                details=[{"path": "typePattern", "message": f"1 to {MAX_PATTERN} characters"}],
            )
        async with context_of(info).state.events.tail(type_pattern) as queue:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield Event(
                    id=event.id,
                    type=event.type,
                    source=event.source,
                    subject=event.subject,
                    time=event.time,
                    payload=JSON(event.payload),
                )
