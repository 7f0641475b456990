"""Who may call the admin API, and what each role may do there.

Credentials: the bootstrap ``SUMMIT_ADMIN_TOKEN`` (role admin), API tokens created through
the API (``/v1/tokens``; stored as sha256, shown once), or, when ``SUMMIT_AUTH_PROVIDER``
names an ``auth_provider`` plugin, whatever that plugin accepts (it maps the caller to a role).

Roles are ordered: ``viewer`` reads, ``operator`` also changes plugin lifecycle and executes
extensions, ``admin`` also manages tokens, secrets, limits and the audit log. The rule for a
request is taken from its method and path in one table (:func:`required_role`), so a new route
is covered without touching its handler.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from pydantic import BaseModel

from orchestrator.domain.errors import Conflict, Duplicate, InvalidInput, NotFound
from orchestrator.security.tokens import hash_token
from orchestrator.store import tokens as store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import ApiToken

__all__ = ["ApiTokens", "Caller", "NewToken", "Role", "TokenView", "required_role"]

TOKEN_PREFIX = "smt_"


class Role(IntEnum):
    """Ordered: each role may do what the ones below it may. A publisher reads as a viewer
    does and publishes to the catalog, but only under the namespaces its publisher owns (the
    catalog checks that); it cannot run plugins."""

    VIEWER = 1
    PUBLISHER = 2
    OPERATOR = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidInput(
                f"unknown role {name!r}",
                details={"allowed": ["admin", "operator", "publisher", "viewer"]},
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


# (method or "*", path pattern, role). First match wins; anything unmatched needs admin.
_RULES: tuple[tuple[str, re.Pattern[str], Role], ...] = tuple(
    (method, re.compile(pattern), role)
    for method, pattern, role in (
        ("*", r"^/v1/tokens(/.*)?$", Role.ADMIN),
        ("*", r"^/v1/trust(/.*)?$", Role.ADMIN),
        ("*", r"^/v1/plugins/[^/]+/secrets(/.*)?$", Role.ADMIN),
        ("*", r"^/v1/plugins/[^/]+/limits$", Role.ADMIN),
        ("GET", r"^/v1/audit$", Role.ADMIN),
        ("GET", r"^/v1/metering$", Role.ADMIN),
        ("*", r"^/v1/catalog/publishers(/.*)?$", Role.ADMIN),
        ("GET", r"^/v1/.*$", Role.VIEWER),
        ("POST", r"^/v1/catalog/plugins/[^/]+/versions$", Role.PUBLISHER),
        ("POST", r"^/v1/catalog/plugins/[^/]+/versions/[^/]+/(yank|unyank)$", Role.PUBLISHER),
        ("POST", r"^/v1/catalog/plugins/[^/]+/(deprecate|undeprecate)$", Role.PUBLISHER),
        ("POST", r"^/v1/catalog/collections/[^/]+/versions$", Role.PUBLISHER),
        ("POST", r"^/v1/catalog/plugins/[^/]+/versions/[^/]+/installs$", Role.VIEWER),
        ("POST", r"^/v1/plugins$", Role.OPERATOR),
        (
            "POST",
            r"^/v1/plugins/[^/]+/(enable|disable|reload|upgrade|rollback|pause|resume)$",
            Role.OPERATOR,
        ),
        ("POST", r"^/v1/plugins/[^/]+/canary(/promote|/abort)?$", Role.OPERATOR),
        ("PUT", r"^/v1/plugins/[^/]+/config$", Role.OPERATOR),
        ("DELETE", r"^/v1/plugins/[^/]+$", Role.OPERATOR),
        ("POST", r"^/v1/extension-points/[^/]+/execute$", Role.OPERATOR),
        ("*", r"^/v1/jobs(/.*)?$", Role.OPERATOR),
    )
)


def required_role(method: str, path: str) -> Role:
    method = "GET" if method == "HEAD" else method
    for rule_method, pattern, role in _RULES:
        if rule_method in ("*", method) and pattern.match(path):
            return role
    return Role.ADMIN


@dataclass(frozen=True)
class Caller:
    """Who makes an authorized request: its role, its API token's id (None for the bootstrap
    admin token and the auth provider) and how records name it (``actor``)."""

    role: Role
    token_id: str | None
    actor: str


class TokenView(BaseModel):
    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None


class NewToken(TokenView):
    token: str


_MAX_VERIFIED = 10_000  # distinct tokens remembered at once


class ApiTokens:
    """Admin API tokens: stored as SHA-256 digests, each with one role.

    A verified token's role is remembered for ``cache_s`` seconds, so a caller making many
    calls does not cost a database read each time. Revoking on this process forgets it at
    once; another replica sharing the database stops accepting it within ``cache_s``.
    """

    def __init__(self, engine: Engine, *, cache_s: float = 5.0) -> None:
        self.engine = engine
        self.cache_s = cache_s
        # digest -> (role, monotonic expiry); written from the thread pool, read on the event
        # loop: single dict operations, atomic under the GIL.
        self._verified: dict[str, tuple[Role, float]] = {}
        self._revocations = 0  # a lookup overlapping a revoke does not cache its answer

    def create(self, *, name: str, role: str) -> NewToken:
        parsed = Role.parse(role)
        if not name.strip() or len(name) > 128:
            raise InvalidInput("a token needs a name of 1 to 128 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(
            id="tok_" + secrets.token_hex(6),
            name=name.strip(),
            role=parsed.label,
            token_hash=hash_token(token),
        )
        try:
            with session_scope(self.engine) as session:
                store.add_api_token(session, token=row)
        except Duplicate:  # a 48-bit id collision: vanishingly rare, but never silent
            raise Conflict("token id collision; try again") from None
        return NewToken(
            token=token, **TokenView.model_validate(row, from_attributes=True).model_dump()
        )

    def list(self) -> list[TokenView]:
        with session_scope(self.engine) as session:
            return [
                TokenView.model_validate(row, from_attributes=True)
                for row in store.list_api_tokens(session)
            ]

    def revoke(self, token_id: str) -> TokenView:
        with session_scope(self.engine) as session:
            row = store.revoke_api_token(session, token_id=token_id)
            if row is None:
                raise NotFound(f"no API token {token_id}")
            digest = row.token_hash
            view = TokenView.model_validate(row, from_attributes=True)
        # After the commit: a lookup that read the row before it may not cache what it saw.
        self._revocations += 1
        self._verified.pop(digest, None)
        return view

    def cached_role(self, token: str) -> Role | None:
        """The role of ``token`` if it was verified less than ``cache_s`` ago; no I/O."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        found = self._verified.get(hash_token(token))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def role_of(self, token: str) -> Role | None:
        """The role of a valid, unrevoked token; None otherwise."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        revocations = self._revocations
        with session_scope(self.engine) as session:
            row = store.get_api_token_by_hash(session, token_hash=digest)
            # The index lookup found the row; the final comparison still takes constant time.
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return None
            if row.revoked_at is not None:
                self._verified.pop(digest, None)
                return None
            role = Role.parse(row.role)
            if self.cache_s > 0 and revocations == self._revocations:
                if len(self._verified) >= _MAX_VERIFIED:
                    self._forget_expired()
                self._verified[digest] = (role, time.monotonic() + self.cache_s)
            return role

    def identity(self, token: str) -> TokenView | None:
        """Who a valid, unrevoked API token is (one database read; for the record of a
        change, not for every call)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        with session_scope(self.engine) as session:
            row = store.get_api_token_by_hash(session, token_hash=digest)
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return None
            if row.revoked_at is not None:
                return None
            return TokenView.model_validate(row, from_attributes=True)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for digest, (_, expiry) in list(self._verified.items()):
            if expiry <= now:
                self._verified.pop(digest, None)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
