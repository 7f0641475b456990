"""The guards a call passes before it is sent, in order: the plugin's circuit breaker, its rate
limit, its concurrency limit. Afterwards its outcome is recorded on the breaker.

The guards themselves are in ``breaker.py`` and ``limits.py``; here they are applied with a
route's own limits (or the broker's defaults), and every refusal is counted.
"""

from __future__ import annotations

from orchestrator.broker.breaker import Breakers
from orchestrator.broker.limits import BrokerLimits, ConcurrencyLimits, RateLimiter, TooManyRequests
from orchestrator.broker.routes import Route
from orchestrator.domain.errors import SummitError
from orchestrator.monitor.metrics import BREAKER_VALUES, Metrics

__all__ = ["Guards"]


class Guards:
    def __init__(self, limits: BrokerLimits, metrics: Metrics, rate_limiter: RateLimiter) -> None:
        self.limits = limits
        self.metrics = metrics
        self.rate_limiter = rate_limiter
        self.breakers = Breakers(
            failures=limits.breaker_failures, cooldown_s=limits.breaker_cooldown_s
        )
        self.concurrency = ConcurrencyLimits()
        # Bound once: leave() runs on every call, and a wrapper would add a frame for nothing.
        self.leave = self.concurrency.leave
        # plugin -> rate-limit refusals, taken and reset by the quota.rate_limited summary.
        self._refused: dict[str, int] = {}

    async def enter(self, route: Route) -> None:
        """Let one call to ``route``'s plugin in (it must ``leave(plugin_id)``), or raise
        :class:`~orchestrator.broker.breaker.CircuitOpen` or :class:`TooManyRequests`."""
        plugin = route.plugin_id
        try:
            self.breakers.before_call(plugin)
        except SummitError:
            self.metrics.refused.labels(plugin, "circuit_open").inc()
            raise
        # Inline, not a coroutine of its own: this runs for every provider of every call.
        try:
            limit = (
                route.rate_limit_requests
                if route.rate_limit_requests is not None
                else self.limits.rate_limit_requests
            )
            if limit > 0:
                window = route.rate_limit_window_s or self.limits.rate_limit_window_s
                wait = await self.rate_limiter.acquire(plugin, limit=limit, window_s=window)
                if wait > 0:
                    self._refused[plugin] = self._refused.get(plugin, 0) + 1
                    raise TooManyRequests(
                        f"plugin {plugin} is limited to {limit} calls per {window:g}s",
                        plugin_id=plugin,
                        retry_after_s=wait,
                        code="rate_limited",
                    )
            self.concurrency.enter(plugin, route.concurrency or self.limits.plugin_concurrency)
        except BaseException:
            # A half-open probe refused here never reached the plugin: free it for the next.
            self.breakers.release_probe(plugin)
            raise

    def record(self, plugin_id: str, *, ok: bool) -> None:
        """The call's outcome, for the breaker: did the plugin behave?"""
        state = self.breakers.record(plugin_id, ok=ok)
        self.metrics.set_breaker(plugin_id, BREAKER_VALUES[state])

    def release(self, plugin_id: str) -> None:
        """The call ended without telling whether the plugin behaved (cancelled, say)."""
        self.breakers.release_probe(plugin_id)

    def take_refused(self) -> dict[str, int]:
        """Rate-limit refusals per plugin since the last take (loop thread)."""
        refused, self._refused = self._refused, {}
        return refused
