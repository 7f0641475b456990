"""Operations pages: the event log (filtered, and followed live through server-sent events),
webhooks with their deliveries and dead letters (replay), the audit log, and API tokens
(admin)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.services.webhooks import DELIVERY_STATUSES
from orchestrator.web.guard import UiContext, UiDep, UiRoute
from orchestrator.web.templating import templates

router = APIRouter(route_class=UiRoute)

EVENTS_PAGE = 100
# A live stream re-asks the role this often (a revoked token ends it) and says it is alive.
STREAM_CHECK_S = 15.0
# How often a live stream reads the log for what other replicas logged.
RESCAN_S = 2.0
# The name of the server-sent event that carries one rendered event (``sse-swap``).
STREAM_EVENT = "summit-event"
DEFAULT_WINDOW = timedelta(hours=1)
TOKEN_ROLES = ("viewer", "publisher", "operator", "admin")


def _since(value: str) -> datetime:
    """The ``since`` filter: an ISO time, else the last hour."""
    if not value:
        return datetime.now(UTC) - DEFAULT_WINDOW
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"since: {value[:40]!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _event_filters(type: str, source: str, subject: str) -> dict[str, Any]:
    return {
        "type_pattern": type.strip() or None,
        "source": source.strip() or None,
        "subject": subject.strip() or None,
    }


@router.get("/events", name="ui_events")
async def events(
    ui: UiDep,
    type: str = Query("", max_length=128),
    source: str = Query("", max_length=256),
    subject: str = Query("", max_length=256),
    since: str = Query("", max_length=64),
    after: str = Query("", max_length=64),
) -> Response:
    await ui.require("GET", "/v1/events")
    start = _since(since)
    found = await run_in_threadpool(
        ui.request.app.state.events.page,
        since=start,
        limit=EVENTS_PAGE,
        after=after or None,
        **_event_filters(type, source, subject),
    )
    return ui.render(
        "events.html",
        found=found,
        filters={"type": type, "source": source, "subject": subject, "since": since},
        start=start,
        last=found["events"][-1]["id"] if found["events"] else "",
    )


def _sse(event: dict[str, Any]) -> bytes:
    """One event as a server-sent event whose data is its rendered list item (a data line
    per line of HTML, as the format asks)."""
    html = templates.get_template("_event_item.html").render(e=event)
    data = "".join(f"data: {line}\n" for line in html.strip().splitlines())
    return f"id: {event['id']}\nevent: {STREAM_EVENT}\n{data}\n".encode()


@router.get("/events/stream", name="ui_events_stream")
async def events_stream(
    ui: UiDep,
    type: str = Query("", max_length=128),
    source: str = Query("", max_length=256),
    subject: str = Query("", max_length=256),
    since: str = Query("", max_length=64),
    after: str = Query("", max_length=64),
) -> Response:
    """The events logged after ``after`` (the last one the page shows, or the browser's
    ``Last-Event-ID`` when it reconnects), then every new one, each as the page's list item:
    what the events page and a plugin's page follow live.

    The log in the database is what is sent, read after a cursor, so nothing is sent twice
    or skipped. This replica's own events wake the stream at once; other replicas' events
    (their dispatch is their own) are found by a read every ``RESCAN_S``."""
    await ui.require("GET", "/v1/events")
    filters = _event_filters(type, source, subject)
    start = _since(since)
    bus = ui.request.app.state.events
    cursor = ui.request.headers.get("last-event-id", "")[:64] or after or None

    async def lines() -> AsyncIterator[bytes]:
        nonlocal cursor
        checked = time.monotonic()
        async with bus.tail(filters["type_pattern"] or "*") as queue:
            yield b": following\n\n"
            while True:
                found = await run_in_threadpool(
                    bus.page, since=start, limit=EVENTS_PAGE, after=cursor, **filters
                )
                for event in found["events"]:
                    cursor = event["id"]
                    yield _sse(event)
                if found["next"]:
                    continue  # more than a page behind: read on before waiting
                if await _news(queue, RESCAN_S) is None or await ui.request.is_disconnected():
                    return
                if time.monotonic() - checked > STREAM_CHECK_S:
                    if not await _still_allowed(ui):
                        return
                    checked = time.monotonic()
                    yield b": alive\n\n"

    return StreamingResponse(
        lines(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


async def _news(queue: asyncio.Queue[Any], wait_s: float) -> bool | None:
    """Wait up to ``wait_s`` for this replica's next event; drain what else came with it.
    None: the orchestrator is stopping (the stream ends)."""
    try:
        async with asyncio.timeout(wait_s):
            item = await queue.get()
    except TimeoutError:
        return False
    while item is not None and not queue.empty():
        item = queue.get_nowait()
    return None if item is None else True


async def _still_allowed(ui: UiContext) -> bool:
    try:
        await ui.require("GET", "/v1/events")
    except SummitError:
        return False
    return True


@router.get("/webhooks", name="ui_webhooks")
async def webhooks(ui: UiDep) -> Response:
    await ui.require("GET", "/v1/webhooks")
    hooks = await run_in_threadpool(ui.request.app.state.webhooks.list)
    return ui.render("webhooks.html", hooks=hooks)


@router.get("/webhooks/{webhook_id}", name="ui_webhook")
async def webhook(
    webhook_id: str,
    ui: UiDep,
    status: str = "",
    before: int | None = Query(None, ge=1, le=2**31 - 1),
) -> Response:
    await ui.require("GET", f"/v1/webhooks/{webhook_id}/deliveries")
    service = ui.request.app.state.webhooks
    hook = await run_in_threadpool(service.get, webhook_id)
    found = await run_in_threadpool(
        lambda: service.deliveries(webhook_id, status=status or None, limit=50, before=before)
    )
    return ui.render(
        "webhook.html",
        hook=hook,
        found=found,
        status_filter=status,
        statuses=DELIVERY_STATUSES,
        can_replay=ui.can("POST", f"/v1/webhooks/{webhook_id}/replay"),
        can_change=ui.can("PATCH", f"/v1/webhooks/{webhook_id}"),
    )


@router.post("/webhooks/{webhook_id}/replay")
async def webhook_replay(webhook_id: str, ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("POST", f"/v1/webhooks/{webhook_id}/replay")
    service = ui.request.app.state.webhooks
    delivery = str(form.get("delivery_id") or "")
    try:
        if delivery:
            if not delivery.isdigit() or not 1 <= int(delivery) <= 2**31 - 1:
                raise InvalidInput("delivery_id: a delivery's number")
            answer = await run_in_threadpool(
                lambda: service.replay(webhook_id, delivery_id=int(delivery))
            )
        else:
            answer = await run_in_threadpool(lambda: service.replay(webhook_id, dead_letters=True))
        note = f" {answer['note']}." if answer.get("note") else ""
        ui.flash("ok", f"Queued {answer['queued']} deliveries again.{note}")
    except SummitError as exc:
        ui.flash("error", f"replay: {exc.message}")
    return ui.back(f"/ui/webhooks/{webhook_id}", form)


@router.post("/webhooks/{webhook_id}/status")
async def webhook_status(webhook_id: str, ui: UiDep) -> Response:
    """Pause or resume the subscription (``PATCH /v1/webhooks/{id} {"status"}``)."""
    form = await ui.form()
    await ui.require("PATCH", f"/v1/webhooks/{webhook_id}")
    status = str(form.get("status") or "")
    try:
        await run_in_threadpool(
            ui.request.app.state.webhooks.update, webhook_id, {"status": status}
        )
        ui.flash("ok", f"Webhook {webhook_id} is {status}.")
    except SummitError as exc:
        ui.flash("error", f"webhook {webhook_id}: {exc.message}")
    return ui.back(f"/ui/webhooks/{webhook_id}", form)


@router.get("/audit", name="ui_audit")
async def audit(
    ui: UiDep,
    plugin: str = Query("", max_length=128),
    before: int | None = Query(None, ge=1, le=2**31 - 1),
) -> Response:
    await ui.require("GET", "/v1/audit")
    limit = 100
    records = await run_in_threadpool(
        lambda: ui.request.app.state.host.audit_log(
            plugin_id=plugin.strip() or None, limit=limit, before_id=before
        )
    )
    return ui.render(
        "audit.html",
        records=records,
        plugin_filter=plugin,
        next=records[-1]["id"] if len(records) == limit else None,
    )


async def _tokens_page(ui: Any, *, created: Any = None, status_code: int = 200) -> Response:
    tokens = await run_in_threadpool(ui.request.app.state.api_tokens.list)
    return ui.render(
        "tokens.html",
        status_code,
        tokens=tokens,
        created=created,
        roles=TOKEN_ROLES,
        can_change=ui.can("POST", "/v1/tokens"),
    )


@router.get("/tokens", name="ui_tokens")
async def tokens(ui: UiDep) -> Response:
    await ui.require("GET", "/v1/tokens")
    return await _tokens_page(ui)


@router.post("/tokens")
async def create_token(ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("POST", "/v1/tokens")
    try:
        created = await run_in_threadpool(
            lambda: ui.request.app.state.api_tokens.create(
                name=str(form.get("name") or ""), role=str(form.get("role") or "")
            )
        )
    except SummitError as exc:
        ui.flash("error", f"new token: {exc.message}")
        return await _tokens_page(ui, status_code=exc.status_code)
    # Shown on this answer only (the token is stored hashed): no redirect that would lose it.
    return await _tokens_page(ui, created=created, status_code=201)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(token_id: str, ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("DELETE", f"/v1/tokens/{token_id}")
    try:
        await run_in_threadpool(ui.request.app.state.api_tokens.revoke, token_id)
        ui.flash("ok", f"Token {token_id} revoked.")
    except SummitError as exc:
        ui.flash("error", f"revoke {token_id}: {exc.message}")
    return ui.back("/ui/tokens", form)
