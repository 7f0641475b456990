"""The job record, as stored by every queue backend and shown by ``GET /v1/jobs/{id}``."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})
PROGRESS_LINES = 50


class JobError(BaseModel):
    code: str
    message: str
    details: Any = None


class Job(BaseModel):
    id: str
    kind: str
    status: JobStatus = JobStatus.QUEUED
    attempts: int = Field(0, description="Attempts started so far (the running one included)")
    max_attempts: int = 3
    payload: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: JobError | None = Field(None, description="The last attempt's error")
    worker: str | None = Field(None, description="The worker running or that ran the job")
    created_at: datetime
    started_at: datetime | None = Field(None, description="Start of the latest attempt")
    finished_at: datetime | None = None
    progress: list[str] = Field(
        default_factory=list, description=f"The last {PROGRESS_LINES} progress lines"
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def new_job_id() -> str:
    return secrets.token_hex(12)


def timestamp(epoch_s: float | str | None) -> datetime | None:
    if epoch_s in (None, ""):
        return None
    return datetime.fromtimestamp(float(epoch_s), tz=UTC)
