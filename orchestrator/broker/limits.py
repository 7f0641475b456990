"""The broker's limits: per-plugin rate limits (sliding window), in-flight concurrency limits,
and the defaults an operator sets for every plugin (:class:`BrokerLimits`).

With Redis the sliding window is a sorted set per plugin updated by one Lua script, so the
limit holds across orchestrator replicas; without Redis it is kept in this process.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.domain.errors import SummitError


@dataclass(frozen=True)
class BrokerLimits:
    """Defaults for every plugin (a route may override rate and concurrency), from settings."""

    rate_limit_requests: int = 100
    rate_limit_window_s: float = 900.0
    plugin_concurrency: int = 32
    max_response_bytes: int = 1024 * 1024
    retry_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0


class TooManyRequests(SummitError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, plugin_id: str, retry_after_s: float, code: str) -> None:
        super().__init__(
            message,
            code=code,
            details={"plugin": plugin_id, "retry_after_s": round(retry_after_s, 3)},
        )
        self.headers = {"Retry-After": str(max(1, int(retry_after_s + 0.999)))}


class RateLimiter(Protocol):
    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        """Count one call; return 0 when allowed, else the seconds until one would be."""


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - window_s:
                hits.popleft()
            if len(hits) >= limit:
                return hits[0] + window_s - now
            hits.append(now)
            return 0.0


# KEYS[1] = window key; ARGV = window_ms, limit, member. Redis' own clock is "now", so
# replicas on different hosts agree on it, and the whole check is one round trip.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class RedisRateLimiter:
    def __init__(self, redis: Any, *, prefix: str = "summit:ratelimit:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def acquire(self, key: str, *, limit: int, window_s: float) -> float:
        wait_ms = await self._script(
            keys=[self.prefix + key], args=[int(window_s * 1000), limit, secrets.token_hex(6)]
        )
        return max(0.0, float(wait_ms) / 1000.0)


class ConcurrencyLimits:
    """Counts calls in flight per plugin; refuses past the limit instead of queueing."""

    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, plugin_id: str, limit: int) -> None:
        with self._lock:
            n = self._inflight.get(plugin_id, 0)
            if limit > 0 and n >= limit:
                raise TooManyRequests(
                    f"plugin {plugin_id} already has {n} calls in flight (limit {limit})",
                    plugin_id=plugin_id,
                    retry_after_s=1.0,
                    code="concurrency_limited",
                )
            self._inflight[plugin_id] = n + 1

    def leave(self, plugin_id: str) -> None:
        with self._lock:
            self._inflight[plugin_id] = max(0, self._inflight.get(plugin_id, 1) - 1)

    def inflight(self, plugin_id: str) -> int:
        return self._inflight.get(plugin_id, 0)
