"""Jobs: a queue (Redis, or in-process without it) and the workers that run async calls."""

from orchestrator.jobs.model import Job, JobError, JobStatus
from orchestrator.jobs.queue import JobQueue, MemoryJobQueue
from orchestrator.jobs.redis_queue import RedisJobQueue
from orchestrator.jobs.worker import EXECUTE, ExecutePayload, Worker, execute_handler

__all__ = [
    "EXECUTE",
    "ExecutePayload",
    "Job",
    "JobError",
    "JobQueue",
    "JobStatus",
    "MemoryJobQueue",
    "RedisJobQueue",
    "Worker",
    "execute_handler",
]
