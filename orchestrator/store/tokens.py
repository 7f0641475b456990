"""Credentials, kept only as sha256 digests: admin API tokens and plugins' host API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orchestrator.domain.errors import Duplicate
from orchestrator.store.models import ApiToken, HostToken, utcnow

__all__ = [
    "add_api_token",
    "add_host_token",
    "get_api_token",
    "get_api_token_by_hash",
    "get_host_token",
    "list_api_tokens",
    "revoke_api_token",
    "revoke_host_tokens",
]

# -- admin API tokens ---------------------------------------------------------------------------


def add_api_token(session: Session, *, token: ApiToken) -> ApiToken:
    """Store ``token``; :class:`Duplicate` when its id or digest is taken."""
    session.add(token)
    try:
        session.flush()
    except IntegrityError:
        raise Duplicate(f"API token {token.id} exists") from None
    return token


def list_api_tokens(session: Session) -> Sequence[ApiToken]:
    return session.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()


def get_api_token(session: Session, *, token_id: str) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def get_api_token_by_hash(session: Session, *, token_hash: str) -> ApiToken | None:
    return session.exec(select(ApiToken).where(col(ApiToken.token_hash) == token_hash)).first()


def revoke_api_token(
    session: Session, *, token_id: str, at: datetime | None = None
) -> ApiToken | None:
    """The token, revoked at ``at`` unless it already was; None when there is no such token."""
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = at or utcnow()
        session.add(row)
    return row


# -- host API tokens ----------------------------------------------------------------------------


def add_host_token(session: Session, *, token_hash: str, plugin_id: str, container_id: str) -> None:
    session.add(HostToken(token_hash=token_hash, plugin_id=plugin_id, container_id=container_id))


def get_host_token(session: Session, *, token_hash: str) -> HostToken | None:
    return session.get(HostToken, token_hash)


def revoke_host_tokens(
    session: Session, *, plugin_id: str | None = None, container_id: str | None = None
) -> int:
    query = select(HostToken).where(col(HostToken.revoked_at).is_(None))
    if plugin_id is not None:
        query = query.where(col(HostToken.plugin_id) == plugin_id)
    if container_id is not None:
        query = query.where(col(HostToken.container_id) == container_id)
    now = utcnow()
    rows = session.exec(query).all()
    for row in rows:
        row.revoked_at = now
        session.add(row)
    return len(rows)
