"""Operator side of what plugins may reach: their secrets (write-only) and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from orchestrator.api.deps import ROW_ID_MAX, ApiTokensDep, HostDep, PrincipalDep, TrustDep
from orchestrator.security.access import NewToken, TokenView
from orchestrator.security.trust import TrustedKeyView

router = APIRouter(prefix="/v1", tags=["security"])


class SecretValue(BaseModel):
    value: str = Field(max_length=64 * 1024)


class SecretInfo(BaseModel):
    name: str
    updated_at: datetime


@router.put("/plugins/{plugin_id}/secrets/{name}", status_code=204, response_class=Response)
def set_secret(
    plugin_id: str, name: str, body: SecretValue, host: HostDep, _: PrincipalDep
) -> Response:
    """Store a secret the plugin reads with ``secrets:read``; its value is never shown again."""
    host.set_secret(plugin_id, name, body.value)
    return Response(status_code=204)


@router.get("/plugins/{plugin_id}/secrets", response_model=list[SecretInfo])
def list_secrets(plugin_id: str, host: HostDep, _: PrincipalDep) -> list[dict[str, Any]]:
    return host.list_secrets(plugin_id)


@router.delete("/plugins/{plugin_id}/secrets/{name}", status_code=204, response_class=Response)
def delete_secret(plugin_id: str, name: str, host: HostDep, _: PrincipalDep) -> Response:
    host.delete_secret(plugin_id, name)
    return Response(status_code=204)


class AuditRecordView(BaseModel):
    id: int
    at: datetime = Field(description="When the first of the calls was made")
    last_at: datetime | None = Field(description="When the latest of the calls was made")
    count: int = Field(
        description="How many calls this record stands for: refusals of one plugin, action and "
        "outcome within one minute fold into one record"
    )
    actor: str
    action: str
    outcome: str
    permission: str | None
    detail: str | None = Field(description="The first call's")


class AuditPage(BaseModel):
    records: list[AuditRecordView]
    next: int | None


@router.get("/audit", response_model=AuditPage)
def audit(
    host: HostDep,
    _: PrincipalDep,
    plugin: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(
        None, ge=1, le=ROW_ID_MAX, description="Only records older than this id (paging)"
    ),
) -> dict[str, Any]:
    """Refused host API calls and other security events, newest first (by their first call)."""
    records = host.audit_log(plugin_id=plugin, limit=limit, before_id=before)
    return {"records": records, "next": records[-1]["id"] if len(records) == limit else None}


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(description="admin, operator or viewer")


@router.post("/tokens", status_code=201, response_model=NewToken)
def create_token(body: TokenRequest, tokens: ApiTokensDep, _: PrincipalDep) -> NewToken:
    """A new API token; the token itself is in this answer only (it is stored hashed)."""
    return tokens.create(name=body.name, role=body.role)


@router.get("/tokens", response_model=list[TokenView])
def list_tokens(tokens: ApiTokensDep, _: PrincipalDep) -> list[TokenView]:
    return tokens.list()


@router.delete("/tokens/{token_id}", response_model=TokenView)
def revoke_token(token_id: str, tokens: ApiTokensDep, _: PrincipalDep) -> TokenView:
    return tokens.revoke(token_id)


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="Who the publisher is")
    public_key: str = Field(min_length=1, max_length=4096, description="Ed25519 public key, PEM")


@router.post("/trust/keys", status_code=201, response_model=TrustedKeyView)
def trust_key(body: KeyRequest, trust: TrustDep, _: PrincipalDep) -> TrustedKeyView:
    """Trust a publisher key (``summit-plugin keygen`` writes one)."""
    return trust.add(name=body.name, public_key=body.public_key)


@router.get("/trust/keys", response_model=list[TrustedKeyView])
def trusted_keys(trust: TrustDep, _: PrincipalDep) -> list[TrustedKeyView]:
    return trust.list()


@router.delete("/trust/keys/{key_id}", response_model=TrustedKeyView)
def distrust_key(key_id: str, trust: TrustDep, _: PrincipalDep) -> TrustedKeyView:
    """Revoke a key: plugins it signs are refused from now on (installed ones keep running)."""
    return trust.revoke(key_id)
