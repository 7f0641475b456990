"""Rate limits (memory and real Redis), concurrency limits and the circuit breaker."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from orchestrator.broker.breaker import Breakers, CircuitOpen
from orchestrator.broker.limits import (
    ConcurrencyLimits,
    MemoryRateLimiter,
    RedisRateLimiter,
    TooManyRequests,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_memory_window_slides() -> None:
    async def scenario() -> list[float]:
        limiter = MemoryRateLimiter()
        waits = [await limiter.acquire("p", limit=2, window_s=0.3) for _ in range(3)]
        await asyncio.sleep(0.35)
        waits.append(await limiter.acquire("p", limit=2, window_s=0.3))
        waits.append(await limiter.acquire("other", limit=2, window_s=0.3))
        return waits

    waits = asyncio.run(scenario())
    assert waits[0] == waits[1] == 0
    assert 0 < waits[2] <= 0.3
    assert waits[3] == 0 and waits[4] == 0


@pytest.mark.redis
def test_redis_limit_holds_across_replicas() -> None:
    """Two limiters with their own connections (two orchestrator replicas) share one limit."""
    import redis.asyncio as aioredis

    async def scenario() -> tuple[list[float], list[float]]:
        prefix = f"summit-test:{secrets.token_hex(4)}:"
        a = RedisRateLimiter(aioredis.from_url(REDIS_URL), prefix=prefix)
        b = RedisRateLimiter(aioredis.from_url(REDIS_URL), prefix=prefix)
        try:
            first = [
                await limiter.acquire("plugin", limit=3, window_s=60) for limiter in (a, b, a, b, a)
            ]
            await a.redis.delete(prefix + "plugin")
            after_reset = [await b.acquire("plugin", limit=3, window_s=60)]
            return first, after_reset
        finally:
            await a.redis.delete(prefix + "plugin")
            await a.redis.aclose()
            await b.redis.aclose()

    first, after_reset = asyncio.run(scenario())
    assert first[:3] == [0, 0, 0]
    assert all(55 < w <= 60 for w in first[3:])
    assert after_reset == [0]


@pytest.mark.redis
def test_redis_window_expires() -> None:
    import redis.asyncio as aioredis

    async def scenario() -> list[float]:
        prefix = f"summit-test:{secrets.token_hex(4)}:"
        limiter = RedisRateLimiter(aioredis.from_url(REDIS_URL), prefix=prefix)
        try:
            waits = [await limiter.acquire("p", limit=1, window_s=0.2) for _ in range(2)]
            await asyncio.sleep(0.25)
            waits.append(await limiter.acquire("p", limit=1, window_s=0.2))
            return waits
        finally:
            await limiter.redis.delete(prefix + "p")
            await limiter.redis.aclose()

    waits = asyncio.run(scenario())
    assert waits[0] == 0 and waits[1] > 0 and waits[2] == 0


def test_concurrency_limit_refuses_past_the_limit() -> None:
    limits = ConcurrencyLimits()
    limits.enter("p", 2)
    limits.enter("p", 2)
    with pytest.raises(TooManyRequests) as caught:
        limits.enter("p", 2)
    assert caught.value.code == "concurrency_limited"
    assert caught.value.headers["Retry-After"] == "1"
    limits.leave("p")
    limits.enter("p", 2)
    assert limits.inflight("p") == 2


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = Breakers(failures=3, cooldown_s=0.2)
    for ok in (False, False, True, False, False):
        b.before_call("p")
        b.record("p", ok=ok)
    assert b.state("p") == "closed"  # the success reset the count
    b.record("p", ok=False)
    assert b.state("p") == "open"
    with pytest.raises(CircuitOpen) as caught:
        b.before_call("p")
    assert caught.value.status_code == 503
    assert caught.value.details["retry_in_s"] <= 0.2
    b.before_call("other")  # other plugins are not affected


def test_breaker_half_open_lets_one_probe_through() -> None:
    b = Breakers(failures=1, cooldown_s=0.1)
    b.record("p", ok=False)
    time.sleep(0.12)
    assert b.state("p") == "half_open"
    b.before_call("p")  # the probe
    with pytest.raises(CircuitOpen):
        b.before_call("p")  # a second caller while the probe is out
    b.record("p", ok=False)  # the probe failed: open again for a full cool-down
    assert b.state("p") == "open"
    time.sleep(0.12)
    b.before_call("p")
    b.record("p", ok=True)
    assert b.state("p") == "closed"
    b.before_call("p")


def test_a_probe_that_never_reached_the_plugin_frees_the_next_one() -> None:
    b = Breakers(failures=1, cooldown_s=0.05)
    b.record("p", ok=False)
    time.sleep(0.07)
    b.before_call("p")  # the probe ...
    b.release_probe("p")  # ... refused by a limit, or cancelled, before it reached the plugin
    b.before_call("p")  # the next call probes instead of being refused for ever
    b.record("p", ok=True)
    assert b.state("p") == "closed"
