"""Build the job queue and workers an orchestrator or ``summit worker`` process uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from orchestrator.broker import Broker
from orchestrator.config import Settings
from orchestrator.jobs.install import INSTALL, install_handler
from orchestrator.jobs.queue import JobQueue, MemoryJobQueue
from orchestrator.jobs.worker import EXECUTE, Worker, execute_handler
from orchestrator.services.install import InstallService

log = logging.getLogger("orchestrator.jobs")


def make_queue(settings: Settings) -> JobQueue:
    """Redis when ``SUMMIT_REDIS_URL`` is set, else this process's memory (not durable)."""
    if settings.redis_url:
        from orchestrator.jobs.redis_queue import RedisJobQueue

        return RedisJobQueue(
            settings.redis_url,
            f"{settings.instance}:jobs",
            lease_s=settings.worker_lease_s,
            ttl_s=settings.job_ttl_s,
        )
    return MemoryJobQueue(lease_s=settings.worker_lease_s, ttl_s=settings.job_ttl_s)


class EmbeddedWorker:
    """A worker on the orchestrator's own event loop, calling through its own broker."""

    def __init__(self, worker: Worker, *, grace_s: float) -> None:
        self.worker = worker
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.worker.run(self._stop))

    async def stop(self) -> None:
        """Let the jobs in flight finish for ``grace_s``, then hand the rest back."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, self.grace_s)
        except TimeoutError:
            log.warning("jobs still running after %.0f s were handed back", self.grace_s)
        except Exception:
            log.exception("the embedded worker failed")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._task, return_exceptions=True)


def start_embedded_worker(
    settings: Settings, queue: JobQueue, broker: Broker, installs: InstallService
) -> EmbeddedWorker | None:
    """Run jobs inside the orchestrator: always without Redis (no one else could), and with
    Redis unless ``SUMMIT_EMBEDDED_WORKER=false`` leaves them to ``summit worker``."""
    if settings.redis_url and not settings.embedded_worker:
        return None
    worker = Worker(
        queue,
        {EXECUTE: execute_handler(broker), INSTALL: install_handler(installs, queue)},
        concurrency=settings.worker_concurrency,
        lease_s=settings.worker_lease_s,
    )
    embedded = EmbeddedWorker(worker, grace_s=settings.worker_grace_s)
    embedded.start()
    return embedded
