"""The worker: claims jobs, runs their handler, records the outcome, keeps its leases alive.

One ``Worker`` runs ``concurrency`` claim-and-run slots on one event loop. Queue calls (which
block) go to a small thread pool of the worker's own. A second task renews the leases of the
jobs in flight and, on every worker, takes back the jobs of workers that died
(``recover_stale``), so no supervisor is needed.

Stopping: set the ``stop`` event; every slot finishes the job it is running and claims no
more (a claim already waiting, for at most ``claim_timeout_s``, may still take one job, which
it runs). A slot cancelled mid-job (the grace time ran out) hands its job back to the head of the
queue, that attempt not counted, so another worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from orchestrator.broker import Broker
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.jobs.model import Job, JobError
from orchestrator.jobs.queue import JobQueue

log = logging.getLogger("orchestrator.jobs")

Handler = Callable[[Job], Awaitable[Any]]
T = TypeVar("T")

EXECUTE = "execute"


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def job_error(exc: BaseException) -> tuple[JobError, bool]:
    """The error recorded for ``exc`` and whether another attempt may succeed.

    The caller's mistakes (a ``SummitError`` below 500: unknown point, not ACTIVE, bad input)
    would fail the same way again; failures of plugins or of the service may not.
    """
    if isinstance(exc, SummitError):
        return JobError(code=exc.code, message=exc.message, details=exc.details), (
            exc.status_code >= 500
        )
    return JobError(code="internal_error", message=f"{type(exc).__name__}: {exc}"), True


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: dict[str, Handler],
        worker_id: str | None = None,
        *,
        concurrency: int = 4,
        lease_s: float = 30.0,
        claim_timeout_s: float = 1.0,
    ) -> None:
        self.queue = queue
        self.handlers = handlers
        self.worker_id = worker_id or new_worker_id()
        self.concurrency = max(1, concurrency)
        self.heartbeat_s = max(0.05, lease_s / 3)
        self.recover_s = max(0.1, lease_s / 2)
        self.claim_timeout_s = claim_timeout_s
        self._inflight: dict[str, int] = {}  # job id -> attempt
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    async def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set and the jobs in flight have finished."""
        self._closing = False
        executor = self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency + 2, thread_name_prefix="summit-jobs"
        )
        log.info("worker %s started (concurrency %d)", self.worker_id, self.concurrency)
        keeper = asyncio.create_task(self._keep_leases(stop))
        try:
            await asyncio.gather(*(self._slot(stop) for _ in range(self.concurrency)))
        finally:
            self._closing = True
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            # Claims still waiting (cancelled slots) end within claim_timeout_s and hand back
            # whatever they took; wait for them so no job stays leased to a stopped worker.
            loop = asyncio.get_running_loop()
            await asyncio.shield(loop.run_in_executor(None, executor.shutdown, True))
            log.info("worker %s stopped", self.worker_id)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def _slot(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                job = await self._claim()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("claiming a job failed: %r", exc)
                await asyncio.sleep(min(5.0, 0.2 * 2**failures))
                continue
            if job is not None:
                await self._process(job)

    async def _claim(self) -> Job | None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._claim_blocking)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The claim may still land after we were cancelled: hand that job straight back.
            future.add_done_callback(self._release_late_claim)
            raise

    def _claim_blocking(self) -> Job | None:
        if self._closing:
            return None
        job = self.queue.claim(self.worker_id, self.claim_timeout_s)
        if job is not None and self._closing:
            self._give_back(job)
            return None
        return job

    def _release_late_claim(self, future: asyncio.Future[Job | None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        job = future.result()
        if job is not None:
            self._give_back(job)

    def _give_back(self, job: Job) -> None:
        """Return a job this stopping worker will not finish; the attempt does not count."""
        try:
            self.queue.release(job.id, attempt=job.attempts)
        except Exception as exc:  # the lease will expire and recovery takes it back
            log.warning("could not hand job %s back: %r", job.id, exc)

    async def _process(self, job: Job) -> None:
        self._inflight[job.id] = job.attempts
        log.info("job %s (%s) attempt %d/%d", job.id, job.kind, job.attempts, job.max_attempts)
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                error = JobError(code="unknown_kind", message=f"no handler for {job.kind!r}")
                await self._fail(job, error, retryable=False)
                return
            try:
                result = await handler(job)
            except asyncio.CancelledError:
                self._give_back(job)
                raise
            except Exception as exc:
                error, retryable = job_error(exc)
                await self._fail(job, error, retryable=retryable)
                return
            recorded = await self._call(self.queue.complete, job.id, result)
            if recorded:
                log.info("job %s succeeded", job.id)
            else:
                log.warning("job %s had already finished; this result was dropped", job.id)
        finally:
            self._inflight.pop(job.id, None)

    async def _fail(self, job: Job, error: JobError, *, retryable: bool) -> None:
        status = await self._call(self.queue.fail, job.id, error, retryable, attempt=job.attempts)
        log.info("job %s attempt %d failed (%s): %s", job.id, job.attempts, status, error.code)

    async def _keep_leases(self, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        next_recover = 0.0
        while True:
            try:
                if self._inflight:
                    ids = list(self._inflight)
                    held = await self._call(self.queue.heartbeat, self.worker_id, ids)
                    for lost in set(ids) - set(held):
                        log.warning("job %s was taken back from this worker", lost)
                if loop.time() >= next_recover and not stop.is_set():
                    next_recover = loop.time() + self.recover_s
                    for job_id in await self._call(self.queue.recover_stale):
                        log.warning("job %s lost its worker; taken back", job_id)
            except Exception as exc:
                log.warning("renewing leases failed: %r", exc)
            await asyncio.sleep(self.heartbeat_s)


# --------------------------------------------------------------------------- execute jobs


class ExecutePayload(BaseModel):
    """What ``POST /v1/extension-points/{point}/execute`` with ``async: true`` queues."""

    point: str
    input: Any = None
    mode: Literal["all", "pipeline", "first"] = "all"
    plugins: list[str] | None = None
    timeout_ms: int | None = Field(None, ge=1, le=600_000)


def execute_handler(broker: Broker, *, refresh: Callable[[], Any] | None = None) -> Handler:
    """Run an ``execute`` job through ``broker``; ``refresh`` first brings its routes up to
    date (a worker process has no lifecycle service to keep them current)."""

    async def handle(job: Job) -> Any:
        try:
            p = ExecutePayload.model_validate(job.payload)
        except ValidationError as exc:
            raise InvalidInput("the job's payload is not valid", code="invalid_job") from exc
        if refresh is not None:
            await asyncio.to_thread(refresh)
        return await broker.execute(
            p.point, p.input, mode=p.mode, plugins=p.plugins, timeout_ms=p.timeout_ms
        )

    return handle
