"""A task of the orchestrator's event loop that runs ``tick`` every ``interval_s``; a failed
tick is logged and the next one runs as planned."""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    name = "periodic"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception("%s failed", self.name)
