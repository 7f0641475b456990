"""Periodic summaries of what the broker did, as events: one ``extension.executed`` per
extension point that was called (calls, errors and timings per plugin) and one
``quota.rate_limited`` per plugin whose callers were refused by its rate limit. Summaries,
not one event per call: the broker's hot path never writes to the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from orchestrator.broker import Broker
from orchestrator.events.bus import EventBus
from orchestrator.events.periodic import Periodic

__all__ = ["BrokerSummaries"]

log = logging.getLogger(__name__)


class BrokerSummaries(Periodic):
    name = "broker summaries"

    def __init__(self, broker: Broker, bus: EventBus, *, interval_s: float) -> None:
        super().__init__(interval_s)
        self.broker = broker
        self.bus = bus

    async def aclose(self) -> None:
        await super().aclose()
        with contextlib.suppress(Exception):
            await self.flush()  # what was counted since the last tick

    async def tick(self) -> None:
        await self.flush()

    async def flush(self) -> None:
        tally, refused = self.broker.take_tally()
        items: list[tuple[str, str | None, Any]] = []
        points: dict[str, dict[str, Any]] = {}
        for (point, plugin_id), (calls, errors, total_ms, max_ms) in sorted(tally.items()):
            entry = points.setdefault(
                point,
                {
                    "point": point,
                    "period_s": self.interval_s,
                    "calls": 0,
                    "errors": 0,
                    "plugins": {},
                },
            )
            entry["calls"] += int(calls)
            entry["errors"] += int(errors)
            entry["plugins"][plugin_id] = {
                "calls": int(calls),
                "errors": int(errors),
                "mean_ms": round(total_ms / calls, 3) if calls else 0.0,
                "max_ms": round(max_ms, 3),
            }
        items += [("extension.executed", point, entry) for point, entry in points.items()]
        items += [
            (
                "quota.rate_limited",
                plugin_id,
                {"plugin_id": plugin_id, "refused": n, "period_s": self.interval_s},
            )
            for plugin_id, n in sorted(refused.items())
        ]
        if items:
            await asyncio.to_thread(self.bus.emit_many_sync, items, source="orchestrator")
