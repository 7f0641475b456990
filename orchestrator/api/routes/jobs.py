"""``/v1/jobs``: the status, result or error, and timings of async calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from orchestrator.domain.errors import NotFound
from orchestrator.domain.manifest import ExtensionPoint
from orchestrator.jobs.model import Job
from orchestrator.jobs.queue import JobQueue
from orchestrator.jobs.worker import EXECUTE, ExecutePayload

from ..deps import PrincipalDep

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def get_jobs(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.jobs
    return queue


JobsDep = Annotated[JobQueue, Depends(get_jobs)]


def job_links(job_id: str) -> dict[str, str]:
    return {"self": f"{router.prefix}/{job_id}"}


async def submit_execute(
    queue: JobQueue, payload: ExecutePayload, *, max_attempts: int
) -> dict[str, Any]:
    """Queue an execute call; the 202 answer of ``execute`` with ``async: true``."""
    if payload.point not in {p.value for p in ExtensionPoint}:
        raise NotFound(f"unknown extension point {payload.point!r}", code="unknown_point")
    job = await run_in_threadpool(
        queue.submit,
        EXECUTE,
        payload.model_dump(mode="json"),
        max_attempts=max_attempts,
    )
    return {"job_id": job.id, "status": job.status.value, "links": job_links(job.id)}


@router.get("/{job_id}")
def get_job(job_id: str, queue: JobsDep, _: PrincipalDep) -> Job:
    """A job: ``queued``, ``running``, ``succeeded`` (with its ``result``) or ``failed``
    (with the last ``error``), its attempts and timings."""
    job = queue.get(job_id)
    if job is None:
        raise NotFound(
            f"no job {job_id!r} (finished jobs are kept for a while)", code="job_not_found"
        )
    return job
