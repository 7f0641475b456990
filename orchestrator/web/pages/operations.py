"""Operations pages: the event log (filtered, and followed live by polling), webhooks with
their deliveries and dead letters (replay), the audit log, and API tokens (admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.services.webhooks import DELIVERY_STATUSES
from orchestrator.web.guard import UiDep, UiRoute

router = APIRouter(route_class=UiRoute)

EVENTS_PAGE = 100
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


@router.get("/events/tail", name="ui_events_tail")
async def events_tail(
    ui: UiDep,
    type: str = Query("", max_length=128),
    source: str = Query("", max_length=256),
    subject: str = Query("", max_length=256),
    since: str = Query("", max_length=64),
    after: str = Query("", max_length=64),
) -> Response:
    """The events logged after ``after`` (the live view polls this), as list items followed
    by the next poller."""
    await ui.require("GET", "/v1/events")
    found = await run_in_threadpool(
        ui.request.app.state.events.page,
        since=_since(since),
        limit=EVENTS_PAGE,
        after=after or None,
        **_event_filters(type, source, subject),
    )
    items = found["events"]
    return ui.render(
        "events_tail.html",
        items=items,
        filters={"type": type, "source": source, "subject": subject, "since": since},
        last=items[-1]["id"] if items else after,
    )


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
