"""The broker: routes extension calls to the current container of each ACTIVE plugin.

Routes are swapped atomically on reload: new calls go to the new container at once, and the
old container is stopped only after its in-flight calls have finished (``wait_drained``).
One transport per endpoint is kept for the life of the route (``leases.py``), built by the
injected :class:`~orchestrator.broker.transport.TransportFactory`.

Every call passes, in order: the plugin's circuit breaker, its rate limit, its concurrency
limit (``guards.py``), the input schema (``schemas.py``); then the plugin is called with the
caller's deadline (retried with backoff and jitter only when the extension is marked
idempotent, ``retries.py``), its answer is read up to the size cap, decoded within the JSON
depth limit (``wire.py``; the input is held to it too) and checked against the output schema.
``execute`` fans one input out to the providers of a point (``modes.py``).

A plugin with a canary (``canary.py``) has each call drawn: its weight's share goes to the
candidate version, the rest to the current one, each version's outcome and time counted. The
draw is one ``random()``; a plugin without a canary pays one lookup in an empty dict.

A call that gets no answer at all (no connection, a broken one) is sent once more where the
plugin is served now: the route this replica has for it, if that is another container (the
candidate went away, or the current version was replaced a moment ago); else, with several
replicas, ``refresh`` (the route as the database has it now, since another replica may have
moved the plugin a moment before this one hears of it): a plugin no longer ACTIVE answers 409
``not_active``; one that moved to a new container is called there, once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.broker import wire
from orchestrator.broker.breaker import Breakers
from orchestrator.broker.canary import Canary, CanaryCollector
from orchestrator.broker.errors import (
    InvalidOutput,
    PluginRejected,
    PluginTimeout,
    PluginUnreachable,
    counts_against_plugin,
)
from orchestrator.broker.event_delivery import deliver_event
from orchestrator.broker.guards import Guards
from orchestrator.broker.h1pool import Phases
from orchestrator.broker.leases import TransportLeases
from orchestrator.broker.limits import (
    BrokerLimits,
    ConcurrencyLimits,
    MemoryRateLimiter,
    RateLimiter,
    TooManyRequests,
)
from orchestrator.broker.modes import MODES, CallTally, fan_out
from orchestrator.broker.pause import PauseGate
from orchestrator.broker.profile import CallProfile
from orchestrator.broker.retries import with_retries
from orchestrator.broker.routes import POINTS, Provider, Route, RoutingTable
from orchestrator.broker.schemas import SchemaChecks
from orchestrator.broker.transport import TransportFactory, open_transport
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import Extension
from orchestrator.monitor.metrics import Metrics
from orchestrator.runtime.endpoints import Endpoint

__all__ = ["Broker", "RouteRefresh"]

# Named plugins a fan-out looks up in the database when this replica has no route for them.
MAX_REFRESH = 8

RouteRefresh = Callable[[str], Awaitable[Route | None]]
"""The plugin's route as the database has it now (None: it is not ACTIVE)."""


class Broker:
    def __init__(
        self,
        *,
        limits: BrokerLimits | None = None,
        metrics: Metrics | None = None,
        rate_limiter: RateLimiter | None = None,
        transport_factory: TransportFactory = open_transport,
    ) -> None:
        self.limits = limits or BrokerLimits()
        self.metrics = metrics or Metrics()
        self.guards = Guards(self.limits, self.metrics, rate_limiter or MemoryRateLimiter())
        self.table = RoutingTable()
        self.schemas = SchemaChecks()
        self.leases = TransportLeases(
            transport_factory, max_connections=self.limits.plugin_concurrency
        )
        self.tally = CallTally()
        self.refresh: RouteRefresh | None = None
        self.profile = CallProfile()
        self.pauses = PauseGate()
        # The canary draw: uniform in [0, 1); a test seeds its own.
        self.draw: Callable[[], float] = random.random
        self.metrics.registry.register(
            CanaryCollector(self.table.canaries, lambda pid: _version(self.table.get(pid)))
        )

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.guards.rate_limiter

    @property
    def breakers(self) -> Breakers:
        return self.guards.breakers

    @property
    def concurrency(self) -> ConcurrencyLimits:
        return self.guards.concurrency

    @property
    def max_response_bytes(self) -> int:
        return self.limits.max_response_bytes

    def take_tally(self) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
        """The calls and rate-limit refusals counted since the last take (loop thread)."""
        return self.tally.take(), self.guards.take_refused()

    # -- routing table (called from lifecycle threads) ---------------------------------------

    def set_route(self, route: Route) -> Route | None:
        old = self.table.set(route)
        if old is None or old.version != route.version:
            self.breakers.forget(route.plugin_id)
        if old is not None and old.endpoint != route.endpoint:
            self.pauses.paused.discard(route.plugin_id)  # a new container: not frozen
        return old

    def drop_route(self, plugin_id: str) -> Route | None:
        """Take the plugin out (its canary too: nothing of a plugin not ACTIVE is called)."""
        route = self.table.drop(plugin_id)
        self.breakers.forget(plugin_id)
        self.profile.forget(plugin_id)
        self.pauses.forget(plugin_id)
        return route

    def route(self, plugin_id: str) -> Route | None:
        return self.table.get(plugin_id)

    def set_canary(self, route: Route, weight: int) -> Canary:
        """Send ``weight`` percent of the plugin's calls to ``route`` (its candidate version)
        from now on. The same candidate container (another weight, other limits) keeps its
        statistics."""
        current = self.table.canaries.get(route.plugin_id)
        if current is not None and current.route == route and current.weight == weight:
            return current
        if current is not None and current.route.endpoint == route.endpoint:
            canary = Canary(route, weight, current.stats)
        else:
            canary = Canary(route, weight)
        self.table.set_canary(canary)
        return canary

    def drop_canary(self, plugin_id: str) -> Canary | None:
        """Send every call to the current version again; the canary ended (its endpoint is
        still to be drained)."""
        return self.table.drop_canary(plugin_id)

    def promote_canary(self, plugin_id: str) -> tuple[Route | None, Canary] | None:
        """Make the candidate the plugin's route in one step; the route it replaced (to be
        drained) and the canary, or None without a canary."""
        moved = self.table.promote(plugin_id)
        if moved is not None:
            old, canary = moved
            self.breakers.forget(plugin_id)
            if old is not None and old.endpoint != canary.route.endpoint:
                self.pauses.paused.discard(plugin_id)
        return moved

    def canary(self, plugin_id: str) -> Canary | None:
        return self.table.canaries.get(plugin_id)

    def canaries(self) -> list[Canary]:
        return list(self.table.canaries.values())

    def routes(self) -> list[Route]:
        return self.table.all()

    def providers(self, point: str) -> list[Provider]:
        """(route, extension) pairs for ``point``, highest priority first."""
        return self.table.providers(point)

    def in_flight(self, endpoint: Endpoint) -> int:
        """Calls and event deliveries on ``endpoint`` awaiting their answer now."""
        return self.leases.in_flight(endpoint)

    def wait_drained(self, endpoint: Endpoint, *, timeout_s: float) -> bool:
        """Block until no call is in flight on ``endpoint``, then close its transport."""
        return self.leases.retire(endpoint, timeout_s=timeout_s)

    def schema_errors(
        self, route: Route, ext: Extension, value: Any, which: str
    ) -> list[dict[str, str]]:
        return self.schemas.errors(route, ext, value, which)

    # -- calls (event loop) ------------------------------------------------------------------

    async def call(
        self,
        route: Route,
        ext: Extension,
        payload: Any,
        *,
        timeout_ms: int | None = None,
        encoded: bytes | None = None,
    ) -> Any:
        """Call one extension of one plugin with every guard of the broker (the plugin's
        candidate version instead, for a call its canary draws).

        ``encoded`` is ``payload`` as JSON already (a fan-out encodes its input once)."""
        canaries = self.table.canaries
        if canaries:
            canary = canaries.get(route.plugin_id)
            if canary is not None:
                return await self._call_drawn(canary, route, ext, payload, timeout_ms, encoded)
        try:
            return await self._guarded_call(route, ext, payload, timeout_ms, encoded)
        except PluginUnreachable as exc:
            return await self._call_moved(exc, route, ext, payload, timeout_ms, encoded)

    async def _call_drawn(
        self,
        canary: Canary,
        route: Route,
        ext: Extension,
        payload: Any,
        timeout_ms: int | None,
        encoded: bytes | None,
    ) -> Any:
        """One call of a plugin with a canary: to the version the draw picks, counted there."""
        target, target_ext, side = route, ext, canary.stats.current
        chosen = canary.pick(ext, self.draw())
        if chosen is not None and (
            chosen.input_schema == ext.input_schema
            or not self.schemas.errors(canary.route, chosen, payload, "input")
        ):
            # A candidate whose input schema refuses this input is not asked: the current
            # version, which accepted it, answers.
            target, target_ext, side = canary.route, chosen, canary.stats.candidate
        started = time.perf_counter()
        try:
            output = await self._guarded_call(target, target_ext, payload, timeout_ms, encoded)
        except PluginUnreachable as exc:
            side.add(time.perf_counter() - started, failed=True)
            return await self._call_moved(exc, target, ext, payload, timeout_ms, encoded)
        except SummitError:
            side.add(time.perf_counter() - started, failed=True)
            raise
        side.add(time.perf_counter() - started, failed=False)
        return output

    async def _call_moved(
        self,
        exc: PluginUnreachable,
        tried: Route,
        ext: Extension,
        payload: Any,
        timeout_ms: int | None,
        encoded: bytes | None,
    ) -> Any:
        """After ``tried`` gave no answer: call the plugin once more where it is served now
        (this replica's route, else the database's), or raise ``exc``."""
        here = self.table.get(tried.plugin_id)
        if here is not None and here.endpoint != tried.endpoint:
            same = _same_extension(here, ext)
            if same is not None:
                return await self._guarded_call(here, same, payload, timeout_ms, encoded)
        if self.refresh is None:
            raise exc
        fresh = await self.refresh(tried.plugin_id)
        if fresh is None:
            raise Conflict(
                f"plugin {tried.plugin_id} is not ACTIVE",
                code="not_active",
                details={"plugins": [tried.plugin_id]},
            ) from None
        same = _same_extension(fresh, ext)
        if fresh.endpoint == tried.endpoint or same is None:
            raise exc
        return await self._guarded_call(fresh, same, payload, timeout_ms, encoded)

    async def _guarded_call(
        self,
        route: Route,
        ext: Extension,
        payload: Any,
        timeout_ms: int | None,
        encoded: bytes | None,
    ) -> Any:
        plugin, point = route.plugin_id, ext.point.value
        guards = self.guards
        started = time.perf_counter()
        outcome = "ok"
        try:
            await guards.enter(route)
            admitted = time.perf_counter()
            try:
                raw = encoded if encoded is not None else json.dumps(payload).encode()
                output, phases, decode_s = await self._call_with_retries(
                    route, ext, raw, timeout_ms
                )
            except BaseException as exc:
                if counts_against_plugin(exc):
                    guards.record(plugin, ok=False)
                elif isinstance(exc, PluginRejected):
                    guards.record(plugin, ok=True)  # it answered sensibly
                else:
                    guards.release(plugin)  # cancelled (mode first), or not the plugin's doing
                raise
            finally:
                guards.leave(plugin)
            checking = time.perf_counter()
            errors = self.schemas.errors(route, ext, output, "output")
            if errors:
                guards.record(plugin, ok=False)
                raise InvalidOutput(
                    f"plugin {plugin} answered output that does not match its output_schema",
                    details=errors,
                )
            guards.record(plugin, ok=True)
            self.profile.record(
                plugin,
                admitted - started + phases.waited_s,
                phases.connect_s,
                phases.peer_s,
                phases.read_s + decode_s + time.perf_counter() - checking,
            )
            return output
        except SummitError as exc:
            outcome = exc.code
            if isinstance(exc, TooManyRequests):
                self.metrics.refused.labels(plugin, exc.code).inc()
            raise
        finally:
            self.metrics.observe_call(plugin, point, outcome, time.perf_counter() - started)

    async def _call_with_retries(
        self, route: Route, ext: Extension, payload: bytes, timeout_ms: int | None
    ) -> tuple[Any, Phases, float]:
        budget_ms = timeout_ms or ext.timeout_ms or route.timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        if not ext.idempotent or self.limits.retry_attempts <= 1:
            return await self._send(route, ext, payload, deadline)
        return await with_retries(
            lambda: self._send(route, ext, payload, deadline),
            attempts=self.limits.retry_attempts,
            budget_s=budget_ms / 1000,
            on_retry=lambda: self.metrics.retries.labels(route.plugin_id, ext.point.value).inc(),
        )

    async def _send(
        self, route: Route, ext: Extension, payload: bytes, deadline: float
    ) -> tuple[Any, Phases, float]:
        """POST the ExtensionRequest with ``payload`` (JSON) as its input; the output, where
        the exchange's time went, and the time its decoding took."""
        plugin = route.plugin_id
        await self.pauses.ready(plugin)  # a thaw counts against the caller's deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PluginTimeout(f"no time left to call plugin {plugin}", details={"plugin": plugin})
        content = wire.extension_request(payload, remaining)
        cap = self.limits.max_response_bytes
        lease = self.leases.acquire(route)
        try:
            async with asyncio.timeout(remaining):
                answer = await lease.transport.request(
                    b"POST",
                    wire.extension_target(ext),
                    headers=wire.JSON_HEADERS,
                    content=content,
                    max_body=cap,
                )
        except Exception as exc:
            raise wire.call_failure(plugin, exc, cap) from None
        finally:
            self.leases.release(lease)
        decoding = time.perf_counter()
        output = wire.decode_answer(plugin, answer.status, answer.body)
        return output, answer.phases, time.perf_counter() - decoding

    async def deliver_event(self, route: Route, event: dict[str, Any], *, timeout_s: float) -> None:
        """POST one event to the plugin's ``/summit/v1/events``; raises unless it answers 2xx."""
        await self.pauses.ready(route.plugin_id)
        await deliver_event(self.leases, route, event, timeout_s=timeout_s)

    async def execute(
        self,
        point: str,
        payload: Any,
        *,
        mode: str = "all",
        plugins: list[str] | None = None,
        timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        if point not in POINTS:
            raise NotFound(f"unknown extension point {point!r}", code="unknown_point")
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}", details={"allowed": list(MODES)})
        providers = self.providers(point)
        if plugins is not None:
            active = {route.plugin_id for route, _ in providers}
            missing = [p for p in plugins if p not in active]
            if missing and self.refresh is not None and len(missing) <= MAX_REFRESH:
                # Perhaps enabled a moment ago through another replica: ask the database.
                for plugin_id in missing:
                    await self.refresh(plugin_id)
                providers = self.providers(point)
                active = {route.plugin_id for route, _ in providers}
                missing = [p for p in plugins if p not in active]
            if missing:
                raise Conflict(
                    f"not ACTIVE providers of {point}: {', '.join(missing)}",
                    code="not_active",
                    details={"plugins": missing},
                )
            providers = [pair for pair in providers if pair[0].plugin_id in plugins]
        if not providers:
            raise NotFound(f"no ACTIVE plugin provides {point}", code="no_provider")
        # Encoded once for every call that takes the input as it came; the depth limit goes
        # first, before any schema check walks the value.
        raw = json.dumps(payload).encode()
        jsonlimits.check_depth(raw, payload, what="the input")
        checked = providers if mode != "pipeline" else providers[:1]
        errors = self.schemas.input_errors(checked, payload)
        if errors:
            raise InvalidInput(
                "the input does not match the provider's input_schema",
                code="invalid_input",
                details=errors,
            )
        return await fan_out(
            mode,
            point,
            providers,
            payload,
            raw,
            call=self.call,
            schemas=self.schemas,
            tally=self.tally,
            timeout_ms=timeout_ms,
        )

    async def aclose(self) -> None:
        await self.leases.aclose()


def _same_extension(route: Route, ext: Extension) -> Extension | None:
    """``route``'s extension of the same point and name as ``ext``."""
    return next((e for e in route.extensions if (e.point, e.name) == (ext.point, ext.name)), None)


def _version(route: Route | None) -> str | None:
    return route.version if route is not None else None
