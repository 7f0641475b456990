"""The event bus: events are written to the event log (the outbox) first, then handed to the
subscribers of this process.

``emit`` stores the event and then dispatches it; :meth:`EventBus.record` adds the event to a
transaction that is already open (the lifecycle service's, so a state change and its event
commit together) and dispatches it only once that transaction has committed. Either way a crash
never loses an emitted event: it is in the log, and readers page through the log
(``GET /v1/events``), follow it live (``GET /v1/events/stream``) or are handed it in process
(``on`` / ``once``). Patterns are shell-style on the dotted type: ``plugin.*``, ``*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import itertools
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.domain.errors import InvalidInput, TooLarge
from orchestrator.store import events as store
from orchestrator.store.db import Engine, Session, after_commit, session_scope
from orchestrator.store.models import EventRecord, utcnow

__all__ = ["Event", "EventBus", "Subscription"]

log = logging.getLogger(__name__)

Handler = Callable[["Event"], Awaitable[None] | None]
Fanout = Callable[[Session, list["Event"]], None]
"""Adds, to the emitting transaction, the deliveries each new event is owed."""
Committed = Callable[[list["Event"]], None]
"""Told (from the committing thread) of events once they are in the log."""
STREAM_BUFFER = 1000
MAX_PAYLOAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    source: str
    subject: str | None
    time: datetime
    payload: Any

    @classmethod
    def of(cls, row: EventRecord) -> Event:
        return cls(row.id, row.type, row.source, row.subject, row.time, row.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Subscription:
    id: int
    pattern: str
    handler: Handler
    once: bool


def check_type(event_type: str) -> str:
    parts = event_type.split(".")
    if len(event_type) > 128 or len(parts) < 2 or not all(p and p.isascii() for p in parts):
        raise InvalidInput(
            f"invalid event type {event_type!r}: dotted words, e.g. 'document.created'"
        )
    if any(c in event_type for c in "*?[] "):
        raise InvalidInput(f"invalid event type {event_type!r}: no wildcards or spaces")
    return event_type


class EventBus:
    def __init__(self, engine: Engine, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.engine = engine
        self.max_payload_bytes = max_payload_bytes
        self.fanout: Fanout | None = None
        self._committed: list[Committed] = []
        self._subs: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tails: set[asyncio.Queue[Event | None]] = set()
        self._tails_closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handlers run on this loop (the orchestrator's), whatever thread an event comes from."""
        self._loop = loop

    # -- subscribing --------------------------------------------------------------------------

    def on(self, pattern: str, handler: Handler) -> Subscription:
        return self._add(pattern, handler, once=False)

    def once(self, pattern: str, handler: Handler) -> Subscription:
        return self._add(pattern, handler, once=True)

    def off(self, subscription: Subscription) -> None:
        with self._lock:
            self._subs.pop(subscription.id, None)

    def on_committed(self, listener: Committed) -> None:
        """``listener(events)`` runs after every commit that logged events (any thread)."""
        self._committed.append(listener)

    def _add(self, pattern: str, handler: Handler, *, once: bool) -> Subscription:
        sub = Subscription(next(self._ids), pattern, handler, once)
        with self._lock:
            self._subs[sub.id] = sub
        return sub

    # -- emitting -------------------------------------------------------------------------------

    def new(
        self, event_type: str, *, source: str, subject: str | None = None, payload: Any = None
    ) -> EventRecord:
        self._check_payload(payload)
        return EventRecord(
            id=str(uuid.uuid4()),
            type=check_type(event_type),
            source=source,
            subject=subject,
            time=utcnow(),
            payload=payload,
        )

    def _check_payload(self, payload: Any) -> None:
        if payload is not None and self.max_payload_bytes:
            size = len(json.dumps(payload, separators=(",", ":"), default=str))
            if size > self.max_payload_bytes:
                raise TooLarge(
                    f"event payload is {size} bytes; the cap is {self.max_payload_bytes}",
                    details={"bytes": size, "cap": self.max_payload_bytes},
                )

    def emit_sync(
        self, event_type: str, *, source: str, subject: str | None = None, payload: Any = None
    ) -> Event:
        """Store, then dispatch; for threads. ``emit`` is the same for coroutines."""
        return self.emit_many_sync([(event_type, subject, payload)], source=source)[0]

    def emit_many_sync(
        self, items: list[tuple[str, str | None, Any]], *, source: str
    ) -> list[Event]:
        """Log ``(type, subject, payload)`` events in one transaction, then dispatch them."""
        now = utcnow()
        events = []
        for event_type, subject, payload in items:
            self._check_payload(payload)
            events.append(
                Event(str(uuid.uuid4()), check_type(event_type), source, subject, now, payload)
            )
        with session_scope(self.engine) as session:
            store.add_events(
                session,
                events=[
                    {
                        "id": e.id,
                        "type": e.type,
                        "source": e.source,
                        "subject": e.subject,
                        "time": e.time,
                        "payload": e.payload,
                    }
                    for e in events
                ],
            )
            if self.fanout is not None:
                self.fanout(session, events)
        self._after_commit(events)
        return events

    async def emit(
        self, event_type: str, *, source: str, subject: str | None = None, payload: Any = None
    ) -> Event:
        return await asyncio.to_thread(
            self.emit_sync, event_type, source=source, subject=subject, payload=payload
        )

    def record(
        self,
        session: Session,
        event_type: str,
        *,
        source: str,
        subject: str | None = None,
        payload: Any = None,
    ) -> None:
        """Add an event to ``session``'s transaction; it is dispatched once that commits."""
        row = self.new(event_type, source=source, subject=subject, payload=payload)
        store.add_event(session, event=row)
        event = Event.of(row)
        if self.fanout is not None:
            self.fanout(session, [event])
        after_commit(session, lambda: self._after_commit([event]))

    def _after_commit(self, events: list[Event]) -> None:
        for event in events:
            self.dispatch(event)
        for listener in self._committed:
            try:
                listener(events)
            except Exception:
                log.exception("event commit listener failed")

    def dispatch(self, event: Event) -> None:
        """Hand ``event`` to the matching subscribers (thread-safe; never raises)."""
        with self._lock:
            matching = [
                s for s in self._subs.values() if fnmatch.fnmatchcase(event.type, s.pattern)
            ]
            for sub in matching:
                if sub.once:
                    self._subs.pop(sub.id, None)
        if not matching:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for sub in matching:
            loop.call_soon_threadsafe(self._run, sub, event)

    def _run(self, sub: Subscription, event: Event) -> None:
        try:
            result = sub.handler(event)
        except Exception:
            log.exception("event handler for %s failed on %s", sub.pattern, event.type)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_failure)

    # -- reading ----------------------------------------------------------------------------------

    def page(
        self,
        *,
        type_pattern: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        """Events oldest first; ``after`` is the ``next`` cursor of the previous page."""
        with session_scope(self.engine) as session:
            rows = store.list_events(
                session,
                type_pattern=type_pattern,
                source=source,
                subject=subject,
                since=since,
                until=until,
                after_id=after,
                limit=limit + 1,
            )
        more = len(rows) > limit
        events = [Event.of(r).to_json() for r in rows[:limit]]
        return {"events": events, "next": events[-1]["id"] if more else None}

    @contextlib.asynccontextmanager
    async def tail(self, pattern: str = "*") -> AsyncIterator[asyncio.Queue[Event | None]]:
        """A queue of the events dispatched from now on (for the live stream); ``None`` in it
        means the orchestrator is stopping and the stream should end."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(STREAM_BUFFER)

        def put(event: Event) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader drops, not us
                queue.put_nowait(event)

        if self._tails_closed:
            queue.put_nowait(None)
        sub = self.on(pattern, put)
        self._tails.add(queue)
        try:
            yield queue
        finally:
            self._tails.discard(queue)
            self.off(sub)

    def close_tails(self) -> None:
        """End every live stream (call on the loop when the server starts to stop): a stream
        is a request that never finishes by itself, and the server waits for requests."""
        self._tails_closed = True
        for queue in self._tails:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
            if queue.full():  # a stalled reader: make room for the end mark
                queue.get_nowait()
                queue.put_nowait(None)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event handler failed", exc_info=task.exception())
