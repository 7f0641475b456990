"""One operation per plugin at a time: in this process, and across replicas on PostgreSQL.

In process, each plugin has a re-entrant lock. On PostgreSQL a thread that takes a plugin's
lock first (not re-entering it) also takes a session-level advisory lock keyed by the
deployment's instance name and the plugin id, on a connection of its own that it holds until
it lets go; a replica whose process dies loses its connection, and with it the lock, at once.
SQLite is single-process by nature (one file, one orchestrator), so the in-process lock is all
it needs.

``attempt`` does not wait: supervision uses it to leave alone a plugin that another replica is
busy with (a container half-started there is not an orphan).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

from orchestrator.store.db import Engine

__all__ = ["PluginLocks"]


@dataclass
class _Held:
    lock: threading.RLock = field(default_factory=threading.RLock)
    owner: int | None = None  # thread ident holding it
    depth: int = 0
    connection: Connection | None = None


class PluginLocks:
    def __init__(self, engine: Engine | None = None, *, namespace: str = "summit") -> None:
        self.namespace = namespace
        self._engine = engine if engine is not None and _is_postgres(engine) else None
        self._locks: dict[str, _Held] = {}
        self._guard = threading.Lock()

    @property
    def shared(self) -> bool:
        """True when the locks also hold across replicas (PostgreSQL)."""
        return self._engine is not None

    def key(self, plugin_id: str) -> int:
        """The advisory lock key: 64 bits of a hash of the namespace and the plugin id."""
        digest = hashlib.blake2b(f"{self.namespace}\0{plugin_id}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def _held(self, plugin_id: str) -> _Held:
        with self._guard:
            return self._locks.setdefault(plugin_id, _Held())

    @contextmanager
    def hold(self, plugin_id: str) -> Iterator[None]:
        """Wait for, then hold, the plugin's lock."""
        held = self._held(plugin_id)
        with held.lock:
            self._enter(held, plugin_id, wait=True)
            try:
                yield
            finally:
                self._leave(held, plugin_id)

    @contextmanager
    def attempt(self, plugin_id: str) -> Iterator[bool]:
        """Hold the plugin's lock if nobody (here or on another replica) does; yields whether
        it is held. Never waits."""
        held = self._held(plugin_id)
        if not held.lock.acquire(blocking=False):
            yield False
            return
        try:
            if not self._enter(held, plugin_id, wait=False):
                yield False
                return
            try:
                yield True
            finally:
                self._leave(held, plugin_id)
        finally:
            held.lock.release()

    @contextmanager
    def attempt_local(self, plugin_id: str) -> Iterator[bool]:
        """Hold the plugin's lock in this process only, if free; yields whether it is held.
        For work that must not interleave with this replica's own operations on the plugin
        but need not exclude other replicas' (re-reading its route)."""
        held = self._held(plugin_id)
        got = held.lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                held.lock.release()

    def _enter(self, held: _Held, plugin_id: str, *, wait: bool) -> bool:
        held.depth += 1
        if held.depth > 1 or self._engine is None:
            return True
        connection = self._engine.connect()
        try:
            if wait:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key(plugin_id)})
                got = True
            else:
                got = bool(
                    connection.execute(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key(plugin_id)}
                    ).scalar()
                )
            connection.commit()
        except BaseException:
            held.depth -= 1
            connection.close()
            raise
        if not got:
            held.depth -= 1
            connection.close()
            return False
        held.connection = connection
        return True

    def _leave(self, held: _Held, plugin_id: str) -> None:
        held.depth -= 1
        if held.depth > 0 or held.connection is None:
            return
        connection, held.connection = held.connection, None
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key(plugin_id)})
            connection.commit()
        except BaseException:
            # Not known to be unlocked: end that server session, which lets the lock go,
            # rather than hand a connection holding it back to the pool.
            connection.invalidate()
            raise
        finally:
            connection.close()


def _is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
