"""Build the broker an orchestrator process uses, from its settings."""

from __future__ import annotations

from orchestrator.broker.broker import Broker
from orchestrator.broker.limits import (
    BrokerLimits,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from orchestrator.broker.transport import TransportFactory, open_transport
from orchestrator.config import Settings
from orchestrator.monitor.metrics import Metrics


def make_broker(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    transport_factory: TransportFactory = open_transport,
) -> Broker:
    limiter: RateLimiter
    if settings.redis_url:
        import redis.asyncio as aioredis

        # One client per process; its pool is created lazily on the running loop.
        limiter = RedisRateLimiter(aioredis.from_url(settings.redis_url))
    else:
        limiter = MemoryRateLimiter()
    return Broker(
        limits=BrokerLimits(
            rate_limit_requests=settings.rate_limit_requests,
            rate_limit_window_s=settings.rate_limit_window_s,
            plugin_concurrency=settings.plugin_concurrency,
            max_response_bytes=settings.max_response_bytes,
            retry_attempts=settings.retry_attempts,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        ),
        metrics=metrics,
        rate_limiter=limiter,
        transport_factory=transport_factory,
    )


async def close_rate_limiter(broker: Broker) -> None:
    redis = getattr(broker.rate_limiter, "redis", None)
    if redis is not None:
        await redis.aclose()
