"""Events to the plugins that subscribed to them (``events.subscribe``, with the
``events:subscribe`` permission), through ``POST /summit/v1/events``.

Each plugin has one queue, delivered in order, so events reach it in the order they were
logged (in order per subject, in particular). A delivery that fails (the plugin is reloading,
restarting, briefly stuck) is retried with backoff for ``retry_for_s``; the plugin is looked
up again for every attempt, so a reload in between is followed. Plugins never see types they
did not subscribe to. Delivery is at least once: a plugin that crashes after handling an
event but before answering gets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time

from orchestrator.broker.pool import Broker
from orchestrator.domain.errors import SummitError
from orchestrator.events.bus import Event, EventBus, Subscription

__all__ = ["PluginEventDelivery"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000


class PluginEventDelivery:
    def __init__(
        self,
        bus: EventBus,
        broker: Broker,
        *,
        retry_for_s: float = 60.0,
        attempt_timeout_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.broker = broker
        self.retry_for_s = retry_for_s
        self.attempt_timeout_s = attempt_timeout_s
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._subscription = self.bus.on("*", self._route)

    async def aclose(self) -> None:
        if self._subscription is not None:
            self.bus.off(self._subscription)
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _route(self, event: Event) -> None:
        """On the loop: queue the event for every ACTIVE plugin that subscribed to its type."""
        for route in self.broker.routes():
            if not any(fnmatch.fnmatchcase(event.type, p) for p in route.subscribe):
                continue
            if event.source == f"plugin:{route.plugin_id}":
                continue  # its own publication is not echoed back
            queue = self._queues.get(route.plugin_id)
            if queue is None:
                queue = self._queues[route.plugin_id] = asyncio.Queue(QUEUE_LIMIT)
                self._tasks[route.plugin_id] = asyncio.get_running_loop().create_task(
                    self._drain(route.plugin_id, queue)
                )
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.error("event queue of %s is full; %s dropped", route.plugin_id, event.id)

    async def _drain(self, plugin_id: str, queue: asyncio.Queue[Event]) -> None:
        while True:
            event = await queue.get()
            await self._deliver(plugin_id, event)

    async def _deliver(self, plugin_id: str, event: Event) -> None:
        give_up = time.monotonic() + self.retry_for_s
        delay = 0.2
        while True:
            route = self.broker.route(plugin_id)
            if route is not None:
                try:
                    await self.broker.deliver_event(
                        route, event.to_json(), timeout_s=self.attempt_timeout_s
                    )
                    return
                except SummitError as exc:
                    reason = exc.message
            else:
                reason = "not ACTIVE"
            if time.monotonic() + delay > give_up:
                log.warning("event %s not delivered to %s: %s", event.id, plugin_id, reason)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
