"""Retries of a call to an idempotent extension: with backoff and jitter, within the caller's
deadline, and only after a failure another attempt may cure (``errors.retryable``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from orchestrator.broker.errors import retryable

__all__ = ["with_retries"]

T = TypeVar("T")


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    budget_s: float,
    on_retry: Callable[[], None],
) -> T:
    """Await ``attempt()`` until it succeeds, fails for good, ``attempts`` are used up, or the
    next wait would end past ``budget_s``; the last error is raised as it was."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(budget_s),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        retry=retry_if_exception(retryable),
        reraise=True,
    )
    async for state in retrying:
        with state:
            if state.retry_state.attempt_number > 1:
                on_retry()
            return await attempt()
    raise AssertionError("unreachable: tenacity reraises the last error")
