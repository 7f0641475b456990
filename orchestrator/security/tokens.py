"""Host API tokens: random, shown once (to the plugin at initialize), stored only as sha256.

A token is bound to one plugin and one container; it is revoked when that container is
retired, and every token of a plugin is revoked when it is disabled or uninstalled. A token
of one plugin never authenticates another: the plugin id is part of the check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from orchestrator.store import tokens as store
from orchestrator.store.db import Engine, session_scope

__all__ = ["HostTokens", "hash_token"]

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    # The token carries 256 random bits: a plain digest is enough (no password stretching).
    return hashlib.sha256(token.encode()).hexdigest()


class HostTokens:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def issue(self, *, plugin_id: str, container_id: str) -> str:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with session_scope(self.engine) as session:
            store.add_host_token(
                session,
                token_hash=hash_token(token),
                plugin_id=plugin_id,
                container_id=container_id,
            )
        return token

    def verify(self, *, plugin_id: str, token: str | None) -> bool:
        if not token:
            return False
        with session_scope(self.engine) as session:
            row = store.get_host_token(session, token_hash=hash_token(token))
            if row is None or row.revoked_at is not None:
                return False
            # The lookup was by hash; still compare the binding in constant time.
            return hmac.compare_digest(row.plugin_id.encode(), plugin_id.encode())

    def plugin_of(self, token: str | None) -> str | None:
        """The plugin a live token was issued to (a listener on a network address serves
        every plugin and learns which one calls from its token)."""
        if not token:
            return None
        with session_scope(self.engine) as session:
            row = store.get_host_token(session, token_hash=hash_token(token))
            if row is None or row.revoked_at is not None:
                return None
            return row.plugin_id

    def revoke(self, *, plugin_id: str | None = None, container_id: str | None = None) -> int:
        with session_scope(self.engine) as session:
            return store.revoke_host_tokens(session, plugin_id=plugin_id, container_id=container_id)
