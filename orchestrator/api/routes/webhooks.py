"""Webhook subscriptions: outside receivers of events, with signed deliveries, retries,
dead letters, replay and delivery history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.deps import ROW_ID_MAX, PrincipalDep, RowCursor, RowIdPath, WebhooksDep

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = None
    backoff_base_s: float | None = None
    backoff_cap_s: float | None = None
    timeout_s: float | None = None
    pause_after: int | None = Field(None, description="Dead letters in a row that pause it")


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) receiver")
    types: list[str] = Field(description="Event type patterns, e.g. ['plugin.*']")
    where: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Predicates that must all hold: {field: 'payload.x', op: 'eq', value: 1}",
    )
    transform: dict[str, Any] | None = Field(
        None, description="{'jmespath': '<expression>'} or {'template': <JSON with {{field}}>}"
    )
    description: str | None = Field(None, max_length=512)
    secret: str | None = Field(None, max_length=256, description="Default: one is generated")
    policy: Policy = Field(default_factory=Policy)


class WebhookChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2048)
    types: list[str] | None = None
    where: list[dict[str, Any]] | None = None
    transform: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=512)
    policy: Policy | None = None
    status: str | None = Field(None, description="'active' resumes, 'paused' pauses")


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_id: int | None = Field(None, ge=1, le=ROW_ID_MAX)
    dead_letters: bool = False
    since: datetime | None = None
    until: datetime | None = None


@router.post("", status_code=201)
def create(body: NewWebhook, service: WebhooksDep, _: PrincipalDep) -> dict[str, Any]:
    """Register a receiver. The answer carries the signing secret; it is not shown again."""
    return service.create(
        url=body.url,
        types=body.types,
        where=body.where,
        transform=body.transform,
        description=body.description,
        secret=body.secret,
        policy=body.policy.model_dump(exclude_none=True),
    )


@router.get("")
def list_webhooks(service: WebhooksDep, _: PrincipalDep) -> dict[str, Any]:
    return {"webhooks": service.list()}


@router.get("/{webhook_id}")
def get(webhook_id: str, service: WebhooksDep, _: PrincipalDep) -> dict[str, Any]:
    return service.get(webhook_id)


@router.patch("/{webhook_id}")
def change(
    webhook_id: str, body: WebhookChanges, service: WebhooksDep, _: PrincipalDep
) -> dict[str, Any]:
    """Change filters, transformation, URL or policy; ``status: active`` resumes a paused one."""
    changes = body.model_dump(exclude_unset=True)
    if body.policy is not None:
        changes["policy"] = body.policy.model_dump(exclude_none=True)
    return service.update(webhook_id, changes)


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def remove(webhook_id: str, service: WebhooksDep, _: PrincipalDep) -> Response:
    service.delete(webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries")
def deliveries(
    webhook_id: str,
    service: WebhooksDep,
    _: PrincipalDep,
    status: str | None = Query(None, description="pending, delivered, dead, replayed, cancelled"),
    limit: int = Query(100, ge=1, le=1000),
    before: RowCursor = None,
) -> dict[str, Any]:
    """Delivery history, newest first: status, attempts, last status code, latency."""
    return service.deliveries(webhook_id, status=status, limit=limit, before=before)


@router.get("/{webhook_id}/deliveries/{delivery_id}")
def delivery(
    webhook_id: str, delivery_id: RowIdPath, service: WebhooksDep, _: PrincipalDep
) -> dict[str, Any]:
    """One delivery with its event and every attempt."""
    return service.delivery(webhook_id, delivery_id)


@router.get("/{webhook_id}/dead-letters")
def dead_letters(
    webhook_id: str,
    service: WebhooksDep,
    _: PrincipalDep,
    limit: int = Query(100, ge=1, le=1000),
    before: RowCursor = None,
) -> dict[str, Any]:
    """Deliveries that failed every attempt (replay them with ``POST .../replay``)."""
    return service.deliveries(webhook_id, status="dead", limit=limit, before=before)


@router.post("/{webhook_id}/replay", status_code=202)
def replay(webhook_id: str, body: Replay, service: WebhooksDep, _: PrincipalDep) -> dict[str, Any]:
    """Send again: ``{delivery_id}``, ``{dead_letters: true}`` or ``{since, until?}``."""
    return service.replay(
        webhook_id,
        delivery_id=body.delivery_id,
        dead_letters=body.dead_letters,
        since=body.since,
        until=body.until,
    )
