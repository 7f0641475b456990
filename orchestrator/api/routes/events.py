"""The event log: emit (admin), page through it, or follow it live (server-sent events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from orchestrator.api.deps import EventsDep, PrincipalDep

router = APIRouter(prefix="/v1/events", tags=["events"])

KEEPALIVE_S = 15.0


class EmitBody(BaseModel):
    type: str = Field(min_length=3, max_length=128, description="Dotted, e.g. 'document.created'")
    subject: str | None = Field(None, max_length=256)
    payload: Any = None


class EmitBatch(BaseModel):
    events: list[EmitBody] = Field(min_length=1, max_length=1000)


@router.post("", status_code=201)
async def emit(body: EmitBody, bus: EventsDep, principal: PrincipalDep) -> dict[str, Any]:
    """Emit an event as the operator (source ``admin``): logged first, then delivered."""
    event = await bus.emit(
        body.type, source=f"api:{principal}", subject=body.subject, payload=body.payload
    )
    return event.to_json()


@router.post("/batch", status_code=201)
async def emit_batch(body: EmitBatch, bus: EventsDep, principal: PrincipalDep) -> dict[str, Any]:
    """Emit up to 1000 events in one transaction (all are logged, or none)."""
    logged = await run_in_threadpool(
        bus.emit_many_sync,
        [(e.type, e.subject, e.payload) for e in body.events],
        source=f"api:{principal}",
    )
    return {"ids": [e.id for e in logged]}


@router.get("")
async def list_events(
    bus: EventsDep,
    _: PrincipalDep,
    type: str | None = Query(None, description="Type or pattern, e.g. plugin.*"),
    source: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    after: str | None = Query(None, description="The 'next' cursor of the previous page"),
) -> dict[str, Any]:
    """The event log, oldest first, filtered; ``next`` continues it."""
    return await run_in_threadpool(
        bus.page,
        type_pattern=type,
        source=source,
        subject=subject,
        since=since,
        until=until,
        limit=limit,
        after=after,
    )


@router.get("/stream")
async def stream(
    request: Request,
    bus: EventsDep,
    _: PrincipalDep,
    type: str = Query("*", description="Type or pattern to follow"),
) -> StreamingResponse:
    """Server-sent events: every event logged from now on that matches ``type``."""

    async def lines() -> AsyncIterator[bytes]:
        async with bus.tail(type) as queue:
            yield b": following " + type.encode() + b"\n\n"
            while not await request.is_disconnected():
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        event = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:  # the orchestrator is stopping
                    return
                data = json.dumps(event.to_json(), separators=(",", ":"))
                yield f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()

    return StreamingResponse(
        lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
