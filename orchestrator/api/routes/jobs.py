"""``/v1/jobs``: the status, result or error, and timings of async calls."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.domain.errors import NotFound
from orchestrator.jobs.model import Job

from ..deps import JobsDep, PrincipalDep

__all__ = ["JobsDep", "router"]  # JobsDep: routes/plugins.py still takes it from here

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
