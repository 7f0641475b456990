"""The job queue: one interface, two backends.

``RedisJobQueue`` (``SUMMIT_REDIS_URL`` set) is durable and shared by every orchestrator and
``summit worker`` process. ``MemoryJobQueue`` keeps jobs in this process only: it lets
``async: true`` work on one machine without Redis, but its jobs are lost when the process stops.

Both backends keep the same promises:

* a claimed job carries a lease that the worker renews with ``heartbeat``; when a worker stops
  renewing (it died), ``recover_stale`` puts its jobs back in the queue (or marks them failed
  once ``max_attempts`` attempts have been started);
* the first ``complete`` wins: a job that has succeeded is never claimed again and a second
  completion (say, by a worker that was presumed dead) changes nothing;
* ``fail`` with ``retryable=True`` re-queues the job until its attempts are used up, then keeps
  it as ``failed`` with the last error;
* finished jobs are kept for ``ttl_s`` seconds, unfinished ones until they finish.

Execution is therefore at-least-once (a worker that dies mid-job leaves its attempt to be run
again) and completion is exactly-once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.jobs.model import (
    FINISHED,
    PROGRESS_LINES,
    Job,
    JobError,
    JobStatus,
    new_job_id,
)

DEFAULT_LEASE_S = 30.0
DEFAULT_TTL_S = 7 * 24 * 3600.0

WORKER_LOST = "worker_lost"


class JobQueue(Protocol):
    def submit(self, kind: str, payload: dict[str, Any], *, max_attempts: int = 3) -> Job:
        """Store a new ``queued`` job and make it claimable."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def claim(self, worker_id: str, timeout_s: float) -> Job | None:
        """Take the oldest queued job (waiting up to ``timeout_s``), now ``running`` and leased
        to ``worker_id``; ``None`` when nothing came."""
        ...

    def complete(self, job_id: str, result: Any) -> bool:
        """Record success; False (and no change) when the job had already finished."""
        ...

    def fail(
        self, job_id: str, error: JobError, retryable: bool, *, attempt: int | None = None
    ) -> JobStatus | None:
        """Record a failed attempt: ``queued`` again while attempts remain and ``retryable``,
        else ``failed``. ``attempt`` guards against a stale worker failing a newer attempt.
        None when the job was not running (already finished or taken back)."""
        ...

    def release(self, job_id: str, *, attempt: int) -> bool:
        """Put a running job back at the head of the queue, its attempt not counted (a worker
        that stops before running it, or gives up on it); False if it was not running."""
        ...

    def heartbeat(self, worker_id: str, job_ids: Collection[str]) -> list[str]:
        """Renew the leases ``worker_id`` holds on ``job_ids``; return those it still holds."""
        ...

    def recover_stale(self) -> list[str]:
        """Take back the jobs whose lease expired; return their ids."""
        ...

    def add_progress(self, job_id: str, line: str) -> None:
        """Append a progress line to the job (the last ``PROGRESS_LINES`` are kept)."""

    def depth(self) -> int:
        """Jobs waiting to be claimed."""
        ...

    def close(self) -> None: ...


def worker_lost_error() -> JobError:
    return JobError(
        code=WORKER_LOST, message="the worker running this job stopped renewing its lease"
    )


class MemoryJobQueue:
    """Jobs in this process's memory: for one machine without Redis. Not durable."""

    def __init__(self, *, lease_s: float = DEFAULT_LEASE_S, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.lease_s = lease_s
        self.ttl_s = ttl_s
        self._jobs: dict[str, Job] = {}
        self._ready: deque[str] = deque()
        self._leases: dict[str, float] = {}  # job id -> monotonic expiry
        self._expiry: dict[str, float] = {}  # finished job id -> monotonic time to forget it
        self._progress: dict[str, deque[str]] = {}
        self._cond = threading.Condition()

    def submit(self, kind: str, payload: dict[str, Any], *, max_attempts: int = 3) -> Job:
        job = Job(
            id=new_job_id(),
            kind=kind,
            payload=payload,
            max_attempts=max_attempts,
            created_at=_now(),
        )
        with self._cond:
            self._forget_expired()
            self._jobs[job.id] = job
            self._ready.append(job.id)
            self._cond.notify()
            return job.model_copy(deep=True)

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            self._forget_expired()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            copy = job.model_copy(deep=True)
            copy.progress = list(self._progress.get(job_id, ()))
            return copy

    def add_progress(self, job_id: str, line: str) -> None:
        with self._cond:
            if job_id in self._jobs:
                lines = self._progress.setdefault(job_id, deque(maxlen=PROGRESS_LINES))
                lines.append(line)

    def claim(self, worker_id: str, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                while self._ready:
                    job = self._jobs.get(self._ready.popleft())
                    if job is None or job.status is not JobStatus.QUEUED:
                        continue  # finished while it waited, or forgotten
                    job.status = JobStatus.RUNNING
                    job.attempts += 1
                    job.worker = worker_id
                    job.started_at = _now()
                    self._leases[job.id] = time.monotonic() + self.lease_s
                    return job.model_copy(deep=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def complete(self, job_id: str, result: Any) -> bool:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.status in FINISHED:
                return False
            job.status = JobStatus.SUCCEEDED
            job.result = result
            job.error = None
            job.finished_at = _now()
            self._finish(job)
            return True

    def fail(
        self, job_id: str, error: JobError, retryable: bool, *, attempt: int | None = None
    ) -> JobStatus | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                return None
            if attempt is not None and job.attempts != attempt:
                return None
            self._leases.pop(job_id, None)
            job.error = error
            if retryable and job.attempts < job.max_attempts:
                job.status = JobStatus.QUEUED
                self._ready.append(job_id)
                self._cond.notify()
            else:
                job.status = JobStatus.FAILED
                job.finished_at = _now()
                self._finish(job)
            return job.status

    def release(self, job_id: str, *, attempt: int) -> bool:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
                return False
            self._leases.pop(job_id, None)
            job.status = JobStatus.QUEUED
            job.attempts -= 1
            self._ready.appendleft(job_id)
            self._cond.notify()
            return True

    def heartbeat(self, worker_id: str, job_ids: Collection[str]) -> list[str]:
        held = []
        with self._cond:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job and job.status is JobStatus.RUNNING and job.worker == worker_id:
                    self._leases[job_id] = time.monotonic() + self.lease_s
                    held.append(job_id)
        return held

    def recover_stale(self) -> list[str]:
        now = time.monotonic()
        taken = []
        with self._cond:
            for job_id, expiry in list(self._leases.items()):
                if expiry > now:
                    continue
                del self._leases[job_id]
                job = self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.RUNNING:
                    continue
                job.error = worker_lost_error()
                if job.attempts < job.max_attempts:
                    job.status = JobStatus.QUEUED
                    self._ready.appendleft(job_id)  # it has waited long enough: next in line
                    self._cond.notify()
                else:
                    job.status = JobStatus.FAILED
                    job.finished_at = _now()
                    self._finish(job)
                taken.append(job_id)
        return taken

    def depth(self) -> int:
        with self._cond:
            return sum(
                1
                for job_id in self._ready
                if (job := self._jobs.get(job_id)) and job.status is JobStatus.QUEUED
            )

    def close(self) -> None:
        pass

    def _finish(self, job: Job) -> None:
        self._leases.pop(job.id, None)
        self._expiry[job.id] = time.monotonic() + self.ttl_s

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for job_id in [j for j, at in self._expiry.items() if at <= now]:
            del self._expiry[job_id]
            self._jobs.pop(job_id, None)
            self._progress.pop(job_id, None)


def _now() -> datetime:
    return datetime.now(UTC)
