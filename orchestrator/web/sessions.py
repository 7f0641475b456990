"""Web UI sessions: an API token (or the admin token) exchanged at sign-in for a random
session id, kept in a signed cookie; the token stays on the server.

The store is in memory, one per orchestrator process: a restart signs everyone out, and with
several replicas behind one address the load balancer must keep a browser on one replica
(sticky sessions) or the operator signs in again. The token is asked again on every request
(:class:`UiSession` keeps it, never the role), so revoking the API token ends its sessions at
once, as it ends its REST calls.

A session ends ``IDLE_S`` after its last request or ``MAX_AGE_S`` after sign-in, whichever is
first. The cookie is ``<id>.<HMAC>`` under a key made at start: a forged or altered cookie is
refused before the store is even asked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["COOKIE", "IDLE_S", "MAX_AGE_S", "SessionStore", "UiSession"]

COOKIE = "summit_ui"
IDLE_S = 60 * 60  # an hour without a request
MAX_AGE_S = 12 * 60 * 60  # a working day, however busy
MAX_SESSIONS = 10_000  # past this the oldest session is dropped: memory stays bounded
MAX_FLASHES = 5


@dataclass
class UiSession:
    id: str
    token: str
    actor: str
    csrf: str
    created: float
    seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)

    def flash(self, kind: str, message: str) -> None:
        """A message shown once, on the next page (``kind``: ok or error)."""
        self.flashes = [*self.flashes[-(MAX_FLASHES - 1) :], (kind, message)]

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


class SessionStore:
    def __init__(
        self,
        *,
        idle_s: float = IDLE_S,
        max_age_s: float = MAX_AGE_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, UiSession] = {}
        self._lock = threading.Lock()

    # -- the cookie ------------------------------------------------------------------------------

    def _mac(self, session_id: str) -> str:
        digest = hmac.new(self._key, session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def cookie_value(self, session: UiSession) -> str:
        return f"{session.id}.{self._mac(session.id)}"

    def _id_of(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        session_id, mac = cookie.rsplit(".", 1)
        return session_id if hmac.compare_digest(mac, self._mac(session_id)) else None

    # -- the store -------------------------------------------------------------------------------

    def create(self, *, token: str, actor: str) -> UiSession:
        now = self.clock()
        session = UiSession(
            id=secrets.token_urlsafe(32),
            token=token,
            actor=actor,
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
        )
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self._drop_expired(now)
            while len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session

    def get(self, cookie: str | None) -> UiSession | None:
        """The live session the cookie names (its idle clock restarted), else None."""
        session_id = self._id_of(cookie)
        if session_id is None:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def drop(self, session: UiSession) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: UiSession, now: float) -> bool:
        return now - session.seen > self.idle_s or now - session.created > self.max_age_s

    def _drop_expired(self, now: float) -> None:
        for session_id, session in list(self._sessions.items()):
            if self._expired(session, now):
                del self._sessions[session_id]
