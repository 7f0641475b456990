"""The broker's side of the idle pause: when each plugin was last called here, which plugins
are frozen, and the wait for a thaw before a call or an event delivery goes out.

The pausing itself (who decides, the runtime, the database, the other replicas) is
``services/idle.py``'s, plugged in as ``thaw``. On the call path this costs a clock read, a
dict write and a set lookup; only a call to a frozen plugin waits, and concurrent calls to one
frozen plugin wait on a single thaw.

Ordering with a pause (which runs on a thread): a call first notes its time, then looks at the
frozen set. The pauser first adds the plugin to the set, then checks that nothing is in flight
and that the last call is old enough. Whichever way the two interleave, either the pauser sees
the call and backs off, or the call sees the plugin frozen and waits for the thaw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["PauseGate", "Thaw"]

Thaw = Callable[[str], Awaitable[None]]
"""Resume a frozen plugin (on the event loop); returns once it can take calls."""


class PauseGate:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # Wall-clock seconds, so that replicas can compare them (shared through Redis).
        self.last_call: dict[str, float] = {}
        self.paused: set[str] = set()
        self.thaw: Thaw | None = None
        # The same from a thread that must talk to the plugin itself (a new config).
        self.thaw_blocking: Callable[[str], None] | None = None
        self._thawing: dict[str, asyncio.Task[None]] = {}

    def touch(self, plugin_id: str) -> None:
        self.last_call[plugin_id] = self.clock()

    async def ready(self, plugin_id: str) -> None:
        """Note a call to ``plugin_id``; if it is frozen, wait until it is thawed."""
        self.last_call[plugin_id] = self.clock()
        if plugin_id in self.paused and self.thaw is not None:
            await self.thaw_now(plugin_id)

    async def thaw_now(self, plugin_id: str) -> None:
        """Thaw ``plugin_id`` once however many callers ask at the same moment."""
        task = self._thawing.get(plugin_id)
        if task is None:
            assert self.thaw is not None
            task = asyncio.ensure_future(self.thaw(plugin_id))
            self._thawing[plugin_id] = task
            task.add_done_callback(lambda _: self._thawing.pop(plugin_id, None))
        # Shielded: a caller that gives up (its deadline, mode ``first``) does not cancel
        # the thaw the others wait for.
        await asyncio.shield(task)

    def forget(self, plugin_id: str) -> None:
        """The plugin's container is gone or replaced: nothing of it is frozen any more."""
        self.paused.discard(plugin_id)
        self.last_call.pop(plugin_id, None)
