"""Events handed to a subscribed plugin (``POST /summit/v1/events``), over the same transport
as its extension calls. The event sender (``events/sender.py``) decides who gets what and
retries; this only makes one delivery and says whether the plugin took it."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.broker import wire
from orchestrator.broker.leases import TransportLeases
from orchestrator.broker.routes import Route

__all__ = ["deliver_event"]


async def deliver_event(
    leases: TransportLeases, route: Route, event: dict[str, Any], *, timeout_s: float
) -> None:
    """Deliver ``event`` to ``route``'s plugin; raises unless it answers 2xx in time."""
    content = wire.event_request(event)
    lease = leases.acquire(route)
    try:
        async with asyncio.timeout(timeout_s):
            answer = await lease.transport.request(
                b"POST", wire.EVENTS_TARGET, headers=wire.JSON_HEADERS, content=content
            )
    except Exception as exc:
        raise wire.event_failure(route.plugin_id, exc) from None
    finally:
        leases.release(lease)
    wire.refuse_event_answer(route.plugin_id, answer.status)
