"""The job queue's promises, against both backends: real Redis and the in-process one."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator.jobs import JobError, JobQueue, JobStatus, MemoryJobQueue, RedisJobQueue

REDIS_URL = os.environ.get("SUMMIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
LEASE_S = 0.5


def redis_queue(**kwargs: float) -> RedisJobQueue:
    return RedisJobQueue(REDIS_URL, f"summit-test-{secrets.token_hex(4)}:jobs", **kwargs)


def drop_keys(queue: RedisJobQueue) -> None:
    client = queue._redis
    keys = list(client.scan_iter(match=queue.keys_pattern, count=500))
    if keys:
        client.delete(*keys)
    queue.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest) -> Iterator[JobQueue]:
    if request.param == "memory":
        yield MemoryJobQueue(lease_s=LEASE_S)
        return
    q = redis_queue(lease_s=LEASE_S)
    try:
        yield q
    finally:
        drop_keys(q)


def boom(code: str = "plugin_error") -> JobError:
    return JobError(code=code, message="it broke")


def test_submit_claim_complete(queue: JobQueue) -> None:
    job = queue.submit("execute", {"point": "analyzer", "input": {"n": 1}}, max_attempts=2)
    assert job.status is JobStatus.QUEUED
    assert (job.attempts, job.max_attempts) == (0, 2)
    assert job.created_at is not None and job.started_at is None
    assert queue.depth() == 1

    claimed = queue.claim("w1", 1.0)
    assert claimed is not None and claimed.id == job.id
    assert claimed.status is JobStatus.RUNNING
    assert claimed.attempts == 1
    assert claimed.worker == "w1"
    assert claimed.payload == {"point": "analyzer", "input": {"n": 1}}
    assert claimed.started_at is not None and claimed.started_at >= job.created_at
    assert queue.depth() == 0
    assert queue.claim("w2", 0.05) is None

    assert queue.complete(job.id, {"results": [1, "two", None]}) is True
    done = queue.get(job.id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"results": [1, "two", None]}
    assert done.error is None
    assert done.finished_at is not None and done.started_at is not None
    assert done.finished_at >= done.started_at


def test_jobs_are_claimed_oldest_first(queue: JobQueue) -> None:
    ids = [queue.submit("execute", {"n": i}).id for i in range(3)]
    assert [queue.claim("w", 0.1).id for _ in ids] == ids  # type: ignore[union-attr]


def test_unknown_job_is_none(queue: JobQueue) -> None:
    assert queue.get("no-such-job") is None
    assert queue.complete("no-such-job", 1) is False
    assert queue.fail("no-such-job", boom(), True) is None


def test_completion_is_idempotent_and_first_result_wins(queue: JobQueue) -> None:
    job = queue.submit("execute", {})
    queue.claim("w1", 1.0)
    assert queue.complete(job.id, {"first": True}) is True
    assert queue.complete(job.id, {"second": True}) is False
    assert queue.fail(job.id, boom(), False) is None
    got = queue.get(job.id)
    assert got is not None
    assert got.status is JobStatus.SUCCEEDED
    assert got.result == {"first": True}
    assert got.error is None


def test_retryable_failures_requeue_until_attempts_are_used_up(queue: JobQueue) -> None:
    job = queue.submit("execute", {}, max_attempts=3)
    for attempt in (1, 2):
        claimed = queue.claim("w", 1.0)
        assert claimed is not None and claimed.attempts == attempt
        assert queue.fail(job.id, boom(f"e{attempt}"), True) is JobStatus.QUEUED
        again = queue.get(job.id)
        assert again is not None and again.status is JobStatus.QUEUED
        assert again.error is not None and again.error.code == f"e{attempt}"
        assert queue.depth() == 1
    claimed = queue.claim("w", 1.0)
    assert claimed is not None and claimed.attempts == 3
    assert queue.fail(job.id, boom("last"), True) is JobStatus.FAILED
    failed = queue.get(job.id)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 3
    assert failed.error == JobError(code="last", message="it broke")
    assert failed.finished_at is not None
    assert queue.depth() == 0
    assert queue.claim("w", 0.05) is None


def test_non_retryable_failure_fails_at_once(queue: JobQueue) -> None:
    job = queue.submit("execute", {}, max_attempts=3)
    queue.claim("w", 1.0)
    assert queue.fail(job.id, boom("unknown_point"), False) is JobStatus.FAILED
    got = queue.get(job.id)
    assert got is not None and got.status is JobStatus.FAILED and got.attempts == 1


def test_a_stale_attempt_cannot_fail_a_newer_one(queue: JobQueue) -> None:
    job = queue.submit("execute", {}, max_attempts=3)
    queue.claim("w1", 1.0)
    queue.fail(job.id, boom(), True, attempt=1)
    queue.claim("w2", 1.0)
    assert queue.fail(job.id, boom("stale"), False, attempt=1) is None
    got = queue.get(job.id)
    assert got is not None and got.status is JobStatus.RUNNING and got.worker == "w2"


def test_job_of_a_dead_worker_is_recovered_and_completed_exactly_once(queue: JobQueue) -> None:
    job = queue.submit("execute", {"x": 1}, max_attempts=3)
    assert queue.claim("dead", 1.0) is not None
    assert queue.recover_stale() == []  # the lease is still fresh
    time.sleep(LEASE_S + 0.2)  # "dead" never renews its lease

    assert queue.recover_stale() == [job.id]
    assert queue.recover_stale() == []
    back = queue.get(job.id)
    assert back is not None and back.status is JobStatus.QUEUED
    assert back.error is not None and back.error.code == "worker_lost"

    again = queue.claim("alive", 1.0)
    assert again is not None and again.id == job.id and again.attempts == 2
    assert queue.heartbeat("dead", [job.id]) == []  # the dead worker no longer holds it
    assert queue.complete(job.id, {"by": "alive"}) is True
    assert queue.complete(job.id, {"by": "dead"}) is False  # it wakes up too late
    got = queue.get(job.id)
    assert got is not None
    assert (got.status, got.result, got.attempts) == (JobStatus.SUCCEEDED, {"by": "alive"}, 2)
    assert queue.claim("anyone", 0.05) is None


def test_a_job_completed_by_a_presumed_dead_worker_is_not_run_again(queue: JobQueue) -> None:
    job = queue.submit("execute", {})
    queue.claim("slow", 1.0)
    time.sleep(LEASE_S + 0.2)
    assert queue.recover_stale() == [job.id]
    # Back in the queue, but the slow worker finishes before anyone claims it again.
    assert queue.complete(job.id, {"by": "slow"}) is True
    assert queue.claim("other", 0.05) is None
    got = queue.get(job.id)
    assert got is not None and got.status is JobStatus.SUCCEEDED and got.result == {"by": "slow"}


def test_heartbeat_keeps_the_lease(queue: JobQueue) -> None:
    job = queue.submit("execute", {})
    queue.claim("w", 1.0)
    for _ in range(4):
        time.sleep(LEASE_S / 3)
        assert queue.heartbeat("w", [job.id]) == [job.id]
        assert queue.recover_stale() == []
    got = queue.get(job.id)
    assert got is not None and got.status is JobStatus.RUNNING


def test_a_job_whose_worker_dies_on_its_last_attempt_fails(queue: JobQueue) -> None:
    job = queue.submit("execute", {}, max_attempts=1)
    queue.claim("dead", 1.0)
    time.sleep(LEASE_S + 0.2)
    assert queue.recover_stale() == [job.id]
    got = queue.get(job.id)
    assert got is not None and got.status is JobStatus.FAILED
    assert got.error is not None and got.error.code == "worker_lost"
    assert queue.depth() == 0


def test_claim_waits_for_a_submit(queue: JobQueue) -> None:
    timer = threading.Timer(0.2, queue.submit, args=("execute", {"late": True}))
    timer.start()
    try:
        job = queue.claim("w", 10.0)
    finally:
        timer.join()
    assert job is not None and job.payload == {"late": True}


def test_concurrent_claimers_take_each_job_once(queue: JobQueue) -> None:
    ids = {queue.submit("execute", {"n": i}).id for i in range(40)}
    taken: list[str] = []
    lock = threading.Lock()

    def drain(worker: str) -> None:
        while (job := queue.claim(worker, 0.2)) is not None:
            with lock:
                taken.append(job.id)
            queue.complete(job.id, worker)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)
    assert queue.depth() == 0


def test_finished_jobs_are_forgotten_after_the_ttl() -> None:
    queue = MemoryJobQueue(ttl_s=0.2)
    job = queue.submit("execute", {})
    queue.claim("w", 1.0)
    queue.complete(job.id, 1)
    assert queue.get(job.id) is not None
    time.sleep(0.3)
    assert queue.get(job.id) is None


@pytest.mark.redis
def test_redis_keeps_unfinished_jobs_and_expires_finished_ones() -> None:
    queue = redis_queue(ttl_s=3600)
    try:
        client = queue._redis
        running = queue.submit("execute", {})
        done = queue.submit("execute", {})
        queue.claim("w", 1.0)
        queue.claim("w", 1.0)
        queue.complete(done.id, 1)
        assert client.ttl(f"{queue.namespace}:job:{running.id}") == -1  # never expires
        assert 3500 < client.ttl(f"{queue.namespace}:job:{done.id}") <= 3600  # type: ignore[operator]
    finally:
        drop_keys(queue)


@pytest.mark.redis
def test_redis_jobs_survive_a_new_client() -> None:
    """Another process (an orchestrator restarted, a worker) sees the same queue."""
    first = redis_queue()
    try:
        job = first.submit("execute", {"keep": True})
        second = RedisJobQueue(REDIS_URL, first.namespace)
        assert second.depth() == 1
        claimed = second.claim("w", 1.0)
        assert claimed is not None and claimed.id == job.id
        second.complete(job.id, "ok")
        second.close()
        got = first.get(job.id)
        assert got is not None and got.status is JobStatus.SUCCEEDED and got.result == "ok"
    finally:
        drop_keys(first)


def test_a_released_job_is_next_in_line_and_its_attempt_does_not_count(queue: JobQueue) -> None:
    first = queue.submit("execute", {"n": 1})
    second = queue.submit("execute", {"n": 2})
    claimed = queue.claim("stopping", 1.0)
    assert claimed is not None and claimed.id == first.id
    assert queue.release(first.id, attempt=2) is False  # not the attempt it holds
    assert queue.release(first.id, attempt=1) is True
    assert queue.release(first.id, attempt=1) is False  # no longer running
    back = queue.get(first.id)
    assert back is not None and (back.status, back.attempts) == (JobStatus.QUEUED, 0)
    again = queue.claim("other", 1.0)
    assert again is not None and again.id == first.id and again.attempts == 1
    assert queue.claim("other", 1.0).id == second.id  # type: ignore[union-attr]
    time.sleep(LEASE_S + 0.2)
    assert sorted(queue.recover_stale()) == sorted([first.id, second.id])  # leases still kept
