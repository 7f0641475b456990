"""Web UI sessions: an API token (or the admin token) exchanged at sign-in for a random
session id, kept in a signed cookie; the token stays on the server.

Sessions live in the orchestrator's database (``ui_sessions``, through
``store/ui_sessions.py``): any replica serves any session, without sticky sessions, and a
restart keeps people signed in. A row is keyed by the sha256 of the session id, never the id,
and holds the API token sealed with the secrets key (Fernet, as plugin secrets are:
``SUMMIT_SECRETS_KEY``, else the key generated in ``STATE_DIR``), never in clear: a copy of the
database names no cookie and gives no token. Replicas must share that key.

The cookie is ``<id>.<HMAC>`` under a key derived (HKDF) from the same secrets key, so every
replica checks it alike and a forged or altered cookie is refused before the database is
asked. The session's CSRF token is derived from its id under another derived key: the same on
every replica and after a restart, with nothing more to store.

The token is asked again on every request (:class:`UiSession` keeps it, never the role), so
revoking the API token ends its sessions at once, as it ends its REST calls.

A session ends ``IDLE_S`` after its last request or ``MAX_AGE_S`` after sign-in, whichever is
first, by the replicas' clocks (keep them synchronised). Its last-seen time is written at most
once a minute (:meth:`SessionStore.get` says why). Expired rows are deleted when met and at
every sign-in; past ``MAX_SESSIONS`` rows the least recently seen go.

Writes stay off the event loop: within a UI request (``guard.py`` runs every UI route inside
:func:`collect_writes`) signing in, the one-shot messages (:meth:`UiSession.flash`) and
signing out change the :class:`UiSession` only, and the guard writes them when the handler is
done, in the thread pool. Elsewhere (tests, scripts) each change is written at once.

A store made without an engine keeps its sessions in a private in-memory database under a key
made at start: one process only, for an app assembled without the orchestrator's database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orchestrator.store import ui_sessions as store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import UiSessionRecord

__all__ = [
    "COOKIE",
    "IDLE_S",
    "MAX_AGE_S",
    "SessionStore",
    "UiSession",
    "collect_writes",
    "write_collected",
]

COOKIE = "summit_ui"
IDLE_S = 60 * 60  # an hour without a request
MAX_AGE_S = 12 * 60 * 60  # a working day, however busy
MAX_SESSIONS = 10_000  # past this the least recently seen session is dropped: rows stay bounded
MAX_FLASHES = 5
TOUCH_S = 60.0  # the last-seen time is written at most this often

# HKDF labels: one secrets key, a separate key for each use.
_COOKIE_KEY_INFO = b"summit.web.session-cookie.v1"
_CSRF_KEY_INFO = b"summit.web.csrf.v1"

Flash = tuple[str, str]  # (kind, message)

# The sessions changed during the current UI request, written after its handler; None outside
# a request (each change is written at once).
_collected: ContextVar[list[UiSession] | None] = ContextVar("summit_ui_sessions", default=None)


@dataclass
class UiSession:
    id: str
    token: str
    actor: str
    csrf: str
    created: float
    seen: float
    flashes: list[Flash] = field(default_factory=list)
    # What this request changed, for SessionStore.save: messages made and messages shown (as
    # changes, applied to the row as it is when written, so two tabs lose none of each
    # other's), a sign-in not stored yet, a sign-out.
    _store: SessionStore | None = field(default=None, repr=False, compare=False)
    _added: list[Flash] = field(default_factory=list, repr=False, compare=False)
    _taken: list[Flash] = field(default_factory=list, repr=False, compare=False)
    _new: bool = field(default=False, repr=False, compare=False)
    _dropped: bool = field(default=False, repr=False, compare=False)

    def flash(self, kind: str, message: str) -> None:
        """A message shown once, on the next page (``kind``: ok or error)."""
        item = (kind, message)
        self.flashes = [*self.flashes[-(MAX_FLASHES - 1) :], item]
        self._added.append(item)
        self._changed()

    def take_flashes(self) -> list[Flash]:
        taken, self.flashes = self.flashes, []
        for item in taken:
            if item in self._added:
                self._added.remove(item)  # made and shown by this request: never written
            else:
                self._taken.append(item)
        if taken:
            self._changed()
        return taken

    @property
    def unsaved(self) -> bool:
        return self._new or self._dropped or bool(self._added or self._taken)

    def _changed(self) -> None:
        if self._store is not None:
            self._store.note_change(self)


@contextmanager
def collect_writes() -> Iterator[list[UiSession]]:
    """Within: session changes are collected in the yielded list instead of written; the
    caller writes them (:func:`write_collected`) where blocking on the database is fine."""
    collected: list[UiSession] = []
    reset = _collected.set(collected)
    try:
        yield collected
    finally:
        _collected.reset(reset)


def write_collected(sessions: Iterable[UiSession]) -> None:
    """Write the changes :func:`collect_writes` gathered (database I/O: off the event loop)."""
    for session in sessions:
        if session._store is not None:
            session._store.save(session)


class SessionStore:
    def __init__(
        self,
        *,
        engine: Engine | None = None,
        key: bytes | None = None,
        idle_s: float = IDLE_S,
        max_age_s: float = MAX_AGE_S,
        max_sessions: int = MAX_SESSIONS,
        touch_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``engine``: the orchestrator's database (None: a private one in memory); ``key``:
        the secrets key, a Fernet key that every replica shares (None, with no engine only: one
        made now). ``clock`` gives unix seconds: the rows outlive this process."""
        if engine is not None and key is None:
            raise ValueError("a store in a shared database needs the shared secrets key")
        self._serial: AbstractContextManager[Any] = nullcontext()
        if engine is None:
            engine = store.ui_sessions_in_memory()
            self._serial = threading.Lock()  # its one connection is not for two threads at once
        key = key or Fernet.generate_key()
        self.engine = engine
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        # Well below the idle timeout, or a busy session would look idle between two writes.
        self.touch_s = min(TOUCH_S, idle_s / 10) if touch_s is None else touch_s
        self.clock = clock
        self._fernet = Fernet(key)
        self._cookie_key = _derive(key, _COOKIE_KEY_INFO)
        self._csrf_key = _derive(key, _CSRF_KEY_INFO)

    @classmethod
    def from_settings(
        cls, engine: Engine, *, secrets_key: str | None, state_dir: Path
    ) -> SessionStore:
        """The store of an orchestrator: its database, under the key ``SecretBox`` uses (the
        ``SUMMIT_SECRETS_KEY`` setting, else the key file it generated in ``STATE_DIR``)."""
        key = secrets_key.encode() if secrets_key else (state_dir / "secrets.key").read_bytes()
        return cls(engine=engine, key=key.strip())

    # -- the cookie ------------------------------------------------------------------------------

    def _mac(self, session_id: str) -> str:
        return _b64(hmac.new(self._cookie_key, session_id.encode(), hashlib.sha256).digest())

    def cookie_value(self, session: UiSession) -> str:
        return f"{session.id}.{self._mac(session.id)}"

    def _id_of(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        session_id, mac = cookie.rsplit(".", 1)
        return session_id if hmac.compare_digest(mac, self._mac(session_id)) else None

    def _csrf_of(self, session_id: str) -> str:
        return _b64(hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).digest())

    # -- the store -------------------------------------------------------------------------------

    def create(self, *, token: str, actor: str) -> UiSession:
        """A new session for ``token``; stored at once, or with the request's other changes
        inside :func:`collect_writes`."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = UiSession(
            id=session_id,
            token=token,
            actor=actor,
            csrf=self._csrf_of(session_id),
            created=now,
            seen=now,
            _store=self,
            _new=True,
        )
        self.note_change(session)
        return session

    def get(self, cookie: str | None) -> UiSession | None:
        """The live session the cookie names, else None (an expired one is deleted).
        Database I/O: call it off the event loop."""
        session_id = self._id_of(cookie)
        if session_id is None:
            return None
        id_hash = _hash(session_id)
        now = self.clock()
        with self._serial, session_scope(self.engine) as db:
            row = store.get_ui_session(db, id_hash=id_hash)
            if row is None:
                return None
            token = self._open(row.token)
            if token is None or self._expired(row.created, row.seen, now):
                store.delete_ui_session(db, id_hash=id_hash)
                return None
            seen = row.seen
            if now - seen >= self.touch_s:
                # Not on every request: a page and its htmx polls would each write the row (on
                # SQLite every write takes the whole database's write lock; on PostgreSQL it is
                # a WAL record and a dead tuple per click). The price: the idle clock may start
                # up to touch_s before the last request, so a session can end that much early.
                store.touch_ui_session(db, id_hash=id_hash, seen=now)
                seen = now
            return UiSession(
                id=session_id,
                token=token,
                actor=row.actor,
                csrf=self._csrf_of(session_id),
                created=row.created,
                seen=seen,
                flashes=[(kind, message) for kind, message in row.flashes],
                _store=self,
            )

    def drop(self, session: UiSession) -> None:
        """End the session (sign-out, or its token no longer passes)."""
        session._dropped = True
        self.note_change(session)

    def note_change(self, session: UiSession) -> None:
        """Write the session's changes now, or after the request inside
        :func:`collect_writes`."""
        collected = _collected.get()
        if collected is None:
            self.save(session)
        elif not any(s is session for s in collected):
            collected.append(session)

    def save(self, session: UiSession) -> None:
        """Write what changed in ``session``: its row added (sign-in) or deleted (sign-out),
        or its waiting messages. Database I/O: off the event loop."""
        if not session.unsaved:
            return
        id_hash = _hash(session.id)
        with self._serial, session_scope(self.engine) as db:
            if session._dropped:
                if not session._new:
                    store.delete_ui_session(db, id_hash=id_hash)
            elif session._new:
                # Sign-ins are rare and take a write anyway: the time to keep the table small.
                now = self.clock()
                store.delete_expired_ui_sessions(
                    db, seen_before=now - self.idle_s, created_before=now - self.max_age_s
                )
                store.make_room_for_ui_session(db, limit=self.max_sessions)
                store.add_ui_session(
                    db,
                    record=UiSessionRecord(
                        id_hash=id_hash,
                        token=self._fernet.encrypt(session.token.encode()),
                        actor=session.actor,
                        created=session.created,
                        seen=session.seen,
                        flashes=[list(item) for item in session.flashes],
                    ),
                )
            else:
                store.change_ui_flashes(
                    db,
                    id_hash=id_hash,
                    taken=[list(item) for item in session._taken],
                    added=[list(item) for item in session._added],
                    keep=MAX_FLASHES,
                )
        session._new = False
        session._added, session._taken = [], []

    def __len__(self) -> int:
        with self._serial, session_scope(self.engine) as db:
            return store.count_ui_sessions(db)

    def _expired(self, created: float, seen: float, now: float) -> bool:
        return now - seen > self.idle_s or now - created > self.max_age_s

    def _open(self, sealed: bytes) -> str | None:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            return None  # sealed under another secrets key: the key changed, sign in again


def _derive(key: bytes, info: bytes) -> bytes:
    material = base64.urlsafe_b64decode(key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _hash(session_id: str) -> str:
    # A plain digest is enough: the id is 256 random bits, nothing to guess from its hash.
    return hashlib.sha256(session_id.encode()).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
