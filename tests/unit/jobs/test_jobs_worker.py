"""The worker against the in-process queue: outcomes, retries, concurrency and stopping."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from orchestrator.domain.errors import Conflict, NotFound, ServiceUnavailable
from orchestrator.jobs import Job, JobStatus, MemoryJobQueue, Worker
from orchestrator.jobs.worker import Handler, execute_handler, job_error


@contextmanager
def running(worker: Worker) -> Iterator[threading.Event]:
    """The worker on a thread of its own (as in ``summit worker``); stopped on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=asyncio.run, args=(worker.run(stop),), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait_for(queue: MemoryJobQueue, job_id: str, *statuses: JobStatus) -> Job:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job is not None and job.status in statuses:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} is {queue.get(job_id)}, not {statuses}")


def make_worker(queue: MemoryJobQueue, handlers: dict[str, Handler], **kw: Any) -> Worker:
    return Worker(queue, handlers, "test-worker", claim_timeout_s=0.1, **kw)


def test_a_handler_result_completes_the_job() -> None:
    queue = MemoryJobQueue()

    async def double(job: Job) -> Any:
        return {"twice": job.payload["n"] * 2}

    with running(make_worker(queue, {"double": double})):
        job = queue.submit("double", {"n": 21})
        done = wait_for(queue, job.id, JobStatus.SUCCEEDED)
    assert done.result == {"twice": 42}
    assert done.worker == "test-worker"
    assert done.attempts == 1


def test_caller_errors_fail_at_once_and_service_errors_are_retried() -> None:
    queue = MemoryJobQueue()
    calls: dict[str, int] = {"bad": 0, "flaky": 0}

    async def bad(job: Job) -> Any:
        calls["bad"] += 1
        raise NotFound("unknown extension point 'nope'", code="unknown_point")

    async def flaky(job: Job) -> Any:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ServiceUnavailable("breaker open", code="breaker_open")
        return "third time lucky"

    with running(make_worker(queue, {"bad": bad, "flaky": flaky})):
        b = queue.submit("bad", {}, max_attempts=3)
        f = queue.submit("flaky", {}, max_attempts=3)
        failed = wait_for(queue, b.id, JobStatus.FAILED)
        lucky = wait_for(queue, f.id, JobStatus.SUCCEEDED)
    assert calls["bad"] == 1
    assert failed.error is not None and failed.error.code == "unknown_point"
    assert (lucky.result, lucky.attempts) == ("third time lucky", 3)


def test_a_job_that_keeps_failing_is_kept_failed_with_its_last_error() -> None:
    queue = MemoryJobQueue()
    attempts = []

    async def broken(job: Job) -> Any:
        attempts.append(job.attempts)
        raise RuntimeError(f"attempt {job.attempts} broke")

    with running(make_worker(queue, {"broken": broken})):
        job = queue.submit("broken", {}, max_attempts=2)
        failed = wait_for(queue, job.id, JobStatus.FAILED)
    assert attempts == [1, 2]
    assert failed.error is not None
    assert failed.error.code == "internal_error"
    assert failed.error.message == "RuntimeError: attempt 2 broke"


def test_an_unknown_kind_fails() -> None:
    queue = MemoryJobQueue()
    with running(make_worker(queue, {})):
        job = queue.submit("mystery", {})
        failed = wait_for(queue, job.id, JobStatus.FAILED)
    assert failed.error is not None and failed.error.code == "unknown_kind"


def test_jobs_run_concurrently_up_to_the_limit() -> None:
    queue = MemoryJobQueue()
    inflight = 0
    peak = 0
    release = asyncio.Event()

    async def slow(job: Job) -> Any:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            while not release.is_set() and peak < 3:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            return job.payload["n"]
        finally:
            inflight -= 1

    with running(make_worker(queue, {"slow": slow}, concurrency=3)):
        ids = [queue.submit("slow", {"n": i}).id for i in range(7)]
        results = [wait_for(queue, i, JobStatus.SUCCEEDED).result for i in ids]
    assert results == list(range(7))
    assert peak == 3


def test_stopping_lets_the_job_in_flight_finish() -> None:
    queue = MemoryJobQueue()
    started = threading.Event()

    async def slow(job: Job) -> Any:
        started.set()
        await asyncio.sleep(0.5)
        return "finished"

    # One slot: it is busy with the first job, so no claim is waiting when stop comes.
    with running(make_worker(queue, {"slow": slow}, concurrency=1)) as stop:
        job = queue.submit("slow", {})
        assert started.wait(5)
        stop.set()
        queued = queue.submit("slow", {})
    # The context manager joined the worker: the first job finished, the second never started.
    done = queue.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    left = queue.get(queued.id)
    assert left is not None and left.status is JobStatus.QUEUED


def test_a_cancelled_worker_hands_its_job_back() -> None:
    queue = MemoryJobQueue()
    started = threading.Event()

    async def forever(job: Job) -> Any:
        started.set()
        await asyncio.sleep(3600)

    async def scenario() -> None:
        worker = make_worker(queue, {"forever": forever})
        task = asyncio.create_task(worker.run(threading.Event()))
        job = queue.submit("forever", {}, max_attempts=3)
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        back = queue.get(job.id)
        assert back is not None and back.status is JobStatus.QUEUED
        assert back.attempts == 0  # the interrupted attempt does not count
        assert queue.depth() == 1

    asyncio.run(scenario())


def test_job_error_classification() -> None:
    error, retryable = job_error(Conflict("not ACTIVE", code="not_active", details={"p": 1}))
    assert (error.code, error.details, retryable) == ("not_active", {"p": 1}, False)
    assert job_error(ServiceUnavailable("down"))[1] is True
    assert job_error(ValueError("x"))[1] is True


class FakeBroker:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def execute(self, point: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((point, payload, kwargs))
        return {"mode": kwargs["mode"], "results": []}


def test_execute_jobs_call_the_broker_after_refreshing_its_routes() -> None:
    broker = FakeBroker()
    refreshed = []
    handler = execute_handler(broker, refresh=lambda: refreshed.append(True))  # type: ignore[arg-type]
    job = Job(
        id="j",
        kind="execute",
        payload={"point": "analyzer", "input": {"a": 1}, "mode": "first", "timeout_ms": 50},
        created_at="2024-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    assert asyncio.run(handler(job)) == {"mode": "first", "results": []}
    assert refreshed == [True]
    assert broker.calls == [
        ("analyzer", {"a": 1}, {"mode": "first", "plugins": None, "timeout_ms": 50})
    ]


def test_an_execute_job_with_a_bad_payload_is_not_retried() -> None:
    handler = execute_handler(FakeBroker())  # type: ignore[arg-type]
    job = Job(
        id="j", kind="execute", payload={"mode": "sideways"}, created_at="2024-01-01T00:00:00Z"
    )  # type: ignore[arg-type]
    with pytest.raises(Exception) as info:
        asyncio.run(handler(job))
    assert job_error(info.value)[1] is False
