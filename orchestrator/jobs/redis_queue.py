"""The durable job queue in Redis. Every change of a job is one Lua script, so it is atomic.

Keys, under one namespace ``ns`` (``<SUMMIT_INSTANCE>:jobs`` by default):

``ns:job:<id>``  hash: id, kind, status, attempts, max_attempts, payload, result, error (JSON),
                 worker, created_at, started_at, finished_at (epoch seconds, Redis clock).
                 No expiry until the job finishes, then ``ttl_s``.
``ns:ready``     list of queued job ids: submit LPUSHes, claim RPOPs (oldest first), a job
                 taken back from a dead worker is RPUSHed (next in line).
``ns:leases``    sorted set: running job id -> lease expiry (epoch seconds, Redis clock).
                 Claim adds it, ``heartbeat`` pushes it forward, ``recover_stale`` takes back
                 the expired ones, complete/fail/release remove it.
``ns:progress:<id>``  list of the job's last progress lines (capped), expiring with the job.
``ns:wake``      list of wake-up tokens: every push to ``ready`` adds one, and idle workers
                 wait on it with BLPOP, so a claim needs no polling. Tokens are only hints: a
                 lost one costs at most the claim timeout.

Claim pops ``ready`` and leases the job in the same script, so there is no moment when a job
is in neither structure: a worker that dies right after claiming leaves a lease that expires.
A job id met in ``ready`` whose status is no longer ``queued`` (it was completed by a worker
presumed dead) is dropped there, which is why a succeeded job never runs again. All times come
from the Redis server's clock, so workers' clocks need not agree.

The scripts build job keys from the namespace, so the namespace must live on one Redis node
(true of a single Redis or a primary with replicas; for Redis Cluster put it in a hash tag,
e.g. ``{summit}:jobs``). Run Redis with persistence (AOF) for jobs to survive a Redis restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any

import redis

from orchestrator.jobs.model import (
    PROGRESS_LINES,
    Job,
    JobError,
    JobStatus,
    new_job_id,
    timestamp,
)
from orchestrator.jobs.queue import DEFAULT_LEASE_S, DEFAULT_TTL_S, worker_lost_error

_MAX_WAKE_TOKENS = 63

_PRELUDE = (
    """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(t) return string.format('%.6f', t) end
local function wake(key)
  redis.call('LPUSH', key, 1)
  redis.call('LTRIM', key, 0, """
    + str(_MAX_WAKE_TOKENS)
    + """)
end
"""
)

# KEYS: job, ready, wake. ARGV: id, kind, payload, max_attempts.
_SUBMIT = (
    _PRELUDE
    + """
local at = fmt(now())
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'kind', ARGV[2], 'status', 'queued',
  'attempts', 0, 'max_attempts', ARGV[4], 'payload', ARGV[3], 'created_at', at)
redis.call('LPUSH', KEYS[2], ARGV[1])
wake(KEYS[3])
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: ready, leases, wake. ARGV: job key prefix, worker, lease_s.
_CLAIM = (
    _PRELUDE
    + """
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then
    redis.call('DEL', KEYS[3])
    return false
  end
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    local t = now()
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'status', 'running', 'worker', ARGV[2], 'started_at', fmt(t))
    redis.call('ZADD', KEYS[2], t + tonumber(ARGV[3]), id)
    return redis.call('HGETALL', key)
  end
end
"""
)

# KEYS: job, leases. ARGV: id, result, ttl_s. Returns 1 recorded, 0 already finished, -1 gone.
_COMPLETE = (
    _PRELUDE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'succeeded', 'result', ARGV[2], 'finished_at', fmt(now()))
redis.call('HDEL', KEYS[1], 'error')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: job, leases, ready, wake. ARGV: id, error, retryable (1|0), ttl_s, attempt ('' = any).
_FAIL = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'max_attempts')
if f[1] ~= 'running' then return false end
if ARGV[5] ~= '' and f[2] ~= ARGV[5] then return false end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'error', ARGV[2])
if ARGV[3] == '1' and tonumber(f[2]) < tonumber(f[3]) then
  redis.call('HSET', KEYS[1], 'status', 'queued')
  redis.call('LPUSH', KEYS[3], ARGV[1])
  wake(KEYS[4])
  return 'queued'
end
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', fmt(now()))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 'failed'
"""
)

# KEYS: job, leases, ready, wake. ARGV: id, attempt.
_RELEASE = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('RPUSH', KEYS[3], ARGV[1])
wake(KEYS[4])
return 1
"""
)

# KEYS: leases. ARGV: job key prefix, worker, lease_s, job ids...
_HEARTBEAT = (
    _PRELUDE
    + """
local until_t = now() + tonumber(ARGV[3])
local held = {}
for i = 4, #ARGV do
  local f = redis.call('HMGET', ARGV[1] .. ARGV[i], 'status', 'worker')
  if f[1] == 'running' and f[2] == ARGV[2] then
    redis.call('ZADD', KEYS[1], until_t, ARGV[i])
    table.insert(held, ARGV[i])
  end
end
return held
"""
)

# KEYS: leases, ready, wake. ARGV: job key prefix, ttl_s, error, batch size.
_RECOVER = (
    _PRELUDE
    + """
local t = now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', t, 'LIMIT', 0, tonumber(ARGV[4]))
local taken = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts')
  if f[1] == 'running' then
    redis.call('HSET', key, 'error', ARGV[3])
    if tonumber(f[2]) < tonumber(f[3]) then
      redis.call('HSET', key, 'status', 'queued')
      redis.call('RPUSH', KEYS[2], id)
      wake(KEYS[3])
    else
      redis.call('HSET', key, 'status', 'failed', 'finished_at', fmt(t))
      redis.call('EXPIRE', key, ARGV[2])
    end
    table.insert(taken, id)
  end
end
return taken
"""
)


class RedisJobQueue:
    """Jobs in Redis, shared by every orchestrator and worker that uses ``namespace``."""

    def __init__(
        self,
        redis_url: str,
        namespace: str = "summit:jobs",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.namespace = namespace
        self.lease_s = lease_s
        self.ttl_s = ttl_s
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._job_prefix = f"{namespace}:job:"
        self._progress_prefix = f"{namespace}:progress:"
        self._ready = f"{namespace}:ready"
        self._leases = f"{namespace}:leases"
        self._wake = f"{namespace}:wake"
        self._submit = self._redis.register_script(_SUBMIT)
        self._claim = self._redis.register_script(_CLAIM)
        self._complete = self._redis.register_script(_COMPLETE)
        self._fail = self._redis.register_script(_FAIL)
        self._release = self._redis.register_script(_RELEASE)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._recover = self._redis.register_script(_RECOVER)

    @property
    def keys_pattern(self) -> str:
        """Every key of this queue (for operators and tests that clean up)."""
        return f"{self.namespace}:*"

    def _key(self, job_id: str) -> str:
        return self._job_prefix + job_id

    def submit(self, kind: str, payload: dict[str, Any], *, max_attempts: int = 3) -> Job:
        job_id = new_job_id()
        fields = self._submit(
            keys=[self._key(job_id), self._ready, self._wake],
            args=[job_id, kind, _dumps(payload), max(1, max_attempts)],
        )
        return _job(_pairs(fields))

    def get(self, job_id: str) -> Job | None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key(job_id))
            pipe.lrange(self._progress_prefix + job_id, 0, -1)
            fields, progress = pipe.execute()
        if not fields:
            return None
        job = _job({str(k): str(v) for k, v in fields.items()})
        job.progress = [str(line) for line in progress]
        return job

    def add_progress(self, job_id: str, line: str) -> None:
        key = self._progress_prefix + job_id
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, line)
            pipe.ltrim(key, -PROGRESS_LINES, -1)
            # Outlives the job a little: a finished job's own key expires after ttl_s.
            pipe.expire(key, int(self.ttl_s) + 60)
            pipe.execute()

    def claim(self, worker_id: str, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + timeout_s
        while True:
            fields = self._claim(
                keys=[self._ready, self._leases, self._wake],
                args=[self._job_prefix, worker_id, self.lease_s],
            )
            if fields:
                return _job(_pairs(fields))
            remaining = deadline - time.monotonic()
            if remaining < 0.01:  # BLPOP's timeout 0 would mean "forever"
                return None
            self._redis.blpop([self._wake], timeout=remaining)

    def complete(self, job_id: str, result: Any) -> bool:
        done = self._complete(
            keys=[self._key(job_id), self._leases],
            args=[job_id, _dumps(result), self._ttl()],
        )
        return int(done) == 1

    def fail(
        self, job_id: str, error: JobError, retryable: bool, *, attempt: int | None = None
    ) -> JobStatus | None:
        status = self._fail(
            keys=[self._key(job_id), self._leases, self._ready, self._wake],
            args=[
                job_id,
                error.model_dump_json(),
                "1" if retryable else "0",
                self._ttl(),
                "" if attempt is None else str(attempt),
            ],
        )
        return JobStatus(status) if status else None

    def release(self, job_id: str, *, attempt: int) -> bool:
        done = self._release(
            keys=[self._key(job_id), self._leases, self._ready, self._wake],
            args=[job_id, str(attempt)],
        )
        return int(done) == 1

    def heartbeat(self, worker_id: str, job_ids: Collection[str]) -> list[str]:
        if not job_ids:
            return []
        held = self._heartbeat(
            keys=[self._leases], args=[self._job_prefix, worker_id, self.lease_s, *job_ids]
        )
        return list(held)

    def recover_stale(self, *, batch: int = 100) -> list[str]:
        taken: list[str] = []
        while True:
            ids = self._recover(
                keys=[self._leases, self._ready, self._wake],
                args=[self._job_prefix, self._ttl(), worker_lost_error().model_dump_json(), batch],
            )
            taken.extend(ids)
            if len(ids) < batch:
                return taken

    def depth(self) -> int:
        return int(self._redis.llen(self._ready))

    def close(self) -> None:
        self._redis.close()

    def _ttl(self) -> int:
        return max(1, int(self.ttl_s))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _pairs(flat: Any) -> dict[str, str]:
    items = list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def _job(fields: dict[str, str]) -> Job:
    return Job(
        id=fields["id"],
        kind=fields["kind"],
        status=JobStatus(fields["status"]),
        attempts=int(fields.get("attempts", 0)),
        max_attempts=int(fields.get("max_attempts", 1)),
        payload=json.loads(fields.get("payload") or "{}"),
        result=json.loads(fields["result"]) if "result" in fields else None,
        error=JobError.model_validate_json(fields["error"]) if "error" in fields else None,
        worker=fields.get("worker"),
        created_at=timestamp(fields["created_at"]),
        started_at=timestamp(fields.get("started_at")),
        finished_at=timestamp(fields.get("finished_at")),
    )
