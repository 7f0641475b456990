"""Events across orchestrator replicas, through one Redis Stream (``<instance>:events``;
the replicas of one deployment share the instance name, as they share the job queue).

Every committed event is appended to the stream (``XADD``, trimmed to about
``STREAM_MAXLEN`` entries). Two readers run in each replica:

- the consumer group ``summit-senders``: each entry goes to one replica, which sends the
  deliveries that event is owed at once (the database lease still decides who sends what, so a
  wake-up that reaches no one only waits for the next poll, and never doubles a delivery);
  entries a replica read but never acknowledged (it died) are claimed by another after
  ``CLAIM_IDLE_MS``;
- a plain reader that hands events logged by *other* replicas to this replica's in-process
  subscribers (``on``, ``once``, the live stream), so ``GET /v1/events/stream`` on any replica
  shows every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
import redis.asyncio as aredis

from orchestrator.events.bus import Event, EventBus

__all__ = ["EventStream"]

log = logging.getLogger(__name__)

GROUP = "summit-senders"
STREAM_MAXLEN = 100_000
CLAIM_IDLE_MS = 30_000


class EventStream:
    def __init__(
        self,
        url: str,
        *,
        bus: EventBus,
        replica: str,
        on_work: Callable[[], None],
        prefix: str = "summit",
    ) -> None:
        self.url = url
        self.stream = f"{prefix}:events"
        self.bus = bus
        self.replica = replica
        self.on_work = on_work
        self._sync = redis.Redis.from_url(url, socket_timeout=5)
        self._async: aredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def publish(self, events: list[Event]) -> None:
        """Append committed events to the stream (called from the committing thread)."""
        try:
            with self._sync.pipeline(transaction=False) as pipe:
                for event in events:
                    data = json.dumps(event.to_json(), separators=(",", ":"), default=str)
                    pipe.xadd(
                        self.stream,
                        {"origin": self.replica, "event": data},
                        maxlen=STREAM_MAXLEN,
                        approximate=True,
                    )
                pipe.execute()
        except redis.RedisError as exc:
            # The event and its deliveries are in the database: the senders' poll finds them.
            log.warning("could not append %d events to %s: %s", len(events), self.stream, exc)

    async def start(self) -> None:
        self._async = aredis.Redis.from_url(self.url)
        try:
            await self._async.xgroup_create(self.stream, GROUP, id="$", mkstream=True)
        except redis.ResponseError:
            pass  # BUSYGROUP: it exists already
        except redis.RedisError as exc:
            # Redis is away: the readers keep trying (and create the group on NOGROUP), and
            # deliveries do not wait for it; the senders' poll finds them in the database.
            log.warning("Redis is not reachable at start-up (%s); events follow when it is", exc)
        self.bus.on_committed(self.publish)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(), name="events-group"),
            loop.create_task(self._follow(), name="events-follow"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._async is not None:
            await self._async.aclose()
        self._sync.close()

    async def _consume(self) -> None:
        assert self._async is not None
        client = self._async
        next_claim = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() >= next_claim:
                    next_claim = loop.time() + CLAIM_IDLE_MS / 1000
                    reply: Any = await client.xautoclaim(
                        self.stream, GROUP, self.replica, min_idle_time=CLAIM_IDLE_MS, count=100
                    )
                    claimed = reply[1]
                    await self._handle(client, [entry_id for entry_id, _ in claimed])
                answer: Any = await client.xreadgroup(
                    GROUP, self.replica, {self.stream: ">"}, count=500, block=1000
                )
                for _stream, entries in answer or []:
                    await self._handle(client, [entry_id for entry_id, _ in entries])
            except asyncio.CancelledError:
                raise
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    with contextlib.suppress(redis.ResponseError):
                        await client.xgroup_create(self.stream, GROUP, id="$", mkstream=True)
                    continue
                log.warning("reading %s failed: %s", self.stream, exc)
                await asyncio.sleep(1.0)
            except redis.RedisError as exc:
                log.warning("reading %s failed: %s", self.stream, exc)
                await asyncio.sleep(1.0)

    async def _handle(self, client: aredis.Redis, entry_ids: list[Any]) -> None:
        if not entry_ids:
            return
        self.on_work()
        await client.xack(self.stream, GROUP, *entry_ids)

    async def _follow(self) -> None:
        assert self._async is not None
        client = self._async
        last = "$"
        while True:
            try:
                answer: Any = await client.xread({self.stream: last}, count=500, block=1000)
            except asyncio.CancelledError:
                raise
            except redis.RedisError as exc:
                log.warning("following %s failed: %s", self.stream, exc)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get(b"origin", b"").decode() == self.replica:
                        continue  # this replica dispatched it when it committed
                    try:
                        raw = json.loads(fields[b"event"])
                        event = Event(
                            raw["id"],
                            raw["type"],
                            raw["source"],
                            raw["subject"],
                            datetime.fromisoformat(raw["time"]),
                            raw["payload"],
                        )
                    except (KeyError, ValueError, TypeError):
                        log.warning("skipping malformed entry %s in %s", entry_id, self.stream)
                        continue
                    self.bus.dispatch(event)
