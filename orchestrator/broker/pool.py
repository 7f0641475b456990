"""The broker: routes extension calls to the current container of each ACTIVE plugin.

Routes are swapped atomically on reload: new calls go to the new container at once, and the
old container is stopped only after its in-flight calls have finished (``wait_drained``).
One keep-alive connection pool per endpoint is kept for the life of the route.

Every call passes, in order: the plugin's circuit breaker, its rate limit, its concurrency
limit, the input schema; then the plugin is called with the caller's deadline (retried with
backoff and jitter only when the extension is marked idempotent), its answer is read up to
the size cap, decoded within the JSON depth limit (``domain/jsonlimits.py``; the input is held
to it too) and checked against the output schema.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import jsonschema
from summit_sdk.unixsock import checked_socket
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from orchestrator.broker.breaker import Breakers
from orchestrator.broker.client import PluginCallError, base_url_for
from orchestrator.broker.h1pool import BodyTooLarge, Connector, H1Pool
from orchestrator.broker.limits import (
    ConcurrencyLimits,
    MemoryRateLimiter,
    RateLimiter,
    TooManyRequests,
)
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import Extension, ExtensionPoint, schema_key
from orchestrator.monitor.metrics import BREAKER_VALUES, Metrics


class PluginTimeout(SummitError):
    status_code = 504
    code = "plugin_timeout"


class ResponseTooLarge(PluginCallError):
    code = "response_too_large"


class InvalidOutput(PluginCallError):
    code = "invalid_output"


class InvalidAnswer(PluginCallError):
    """The answer is JSON the broker will not take (nested deeper than the limit)."""

    code = "invalid_answer"


class PluginRejected(SummitError):
    """The plugin refused the input (it answered 4xx): the caller's problem, not a failure."""

    status_code = 422
    code = "plugin_rejected_input"


@dataclass(frozen=True)
class Route:
    plugin_id: str
    version: str
    endpoint: str
    extensions: tuple[Extension, ...]
    timeout_ms: int = 30000
    rate_limit_requests: int | None = None  # None: the broker's default
    rate_limit_window_s: float | None = None
    concurrency: int | None = None
    # Event types the plugin receives (its events.subscribe, when granted events:subscribe).
    subscribe: tuple[str, ...] = ()


@dataclass(frozen=True)
class BrokerLimits:
    rate_limit_requests: int = 100
    rate_limit_window_s: float = 900.0
    plugin_concurrency: int = 32
    max_response_bytes: int = 1024 * 1024
    retry_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0


_JSON = [(b"content-type", b"application/json")]
_POINTS = frozenset(p.value for p in ExtensionPoint)


def _connector(endpoint: str) -> Connector:
    """How to open a connection to a plugin: its unix socket, opened without following a link
    the plugin may have planted in its socket folder, or ``tcp://host:port``."""
    if endpoint.startswith("unix://"):
        path = endpoint.removeprefix("unix://")

        async def unix() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            with checked_socket(path) as safe:
                return await asyncio.open_unix_connection(safe)

        return _retrying_connect(unix)
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")

    async def tcp() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host.strip("[]"), int(port))

    return _retrying_connect(tcp)


# A connect that fails before a byte is written is safe to repeat for any extension: the
# plugin's accept queue was full for a moment (EAGAIN on a unix socket), or it is restarting
# (ECONNREFUSED). The caller's deadline (asyncio.timeout around the call) ends the retries.
_CONNECT_RETRYABLE = (BlockingIOError, ConnectionRefusedError)
CONNECT_BACKOFF_FIRST_S = 0.002
CONNECT_BACKOFF_CAP_S = 0.1


def _retrying_connect(connect: Connector) -> Connector:
    async def connect_with_retries() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        delay = CONNECT_BACKOFF_FIRST_S
        while True:
            try:
                return await connect()
            except _CONNECT_RETRYABLE:
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_BACKOFF_CAP_S)

    return connect_with_retries


@dataclass
class _Pool:
    client: H1Pool
    base_url: str
    inflight: int = 0
    retired: bool = False
    idle: threading.Event = field(default_factory=threading.Event)


class _SchemaCheck:
    """A JSON Schema compiled to Python for the yes/no check every call makes; jsonschema
    (slower, complete) only runs to list the errors of a value that fails."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._full = jsonschema.Draft202012Validator(schema)
        try:
            self._fast: Any = fastjsonschema.compile(schema)
        except Exception:  # a construct fastjsonschema lacks: jsonschema alone decides
            self._fast = None

    def is_valid(self, value: Any) -> bool:
        if self._fast is None:
            return bool(self._full.is_valid(value))
        try:
            self._fast(value)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def errors(self, value: Any) -> list[jsonschema.ValidationError]:
        return list(self._full.iter_errors(value))


def _breaker_failure(exc: BaseException) -> bool:
    """Failures that say the plugin is unwell (not the caller's fault, not our refusal)."""
    return isinstance(exc, PluginTimeout | PluginCallError)


def _retryable(exc: BaseException) -> bool:
    return _breaker_failure(exc) and not isinstance(
        exc, ResponseTooLarge | InvalidOutput | InvalidAnswer
    )


class Broker:
    def __init__(
        self,
        *,
        limits: BrokerLimits | None = None,
        metrics: Metrics | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.limits = limits or BrokerLimits()
        self.metrics = metrics or Metrics()
        self.rate_limiter: RateLimiter = rate_limiter or MemoryRateLimiter()
        self.breakers = Breakers(
            failures=self.limits.breaker_failures, cooldown_s=self.limits.breaker_cooldown_s
        )
        self.concurrency = ConcurrencyLimits()
        self._routes: dict[str, Route] = {}
        # point -> its providers, highest priority first; built on first use, dropped on every
        # route change (both under _lock, so a build never outlives the routes it read).
        self._providers: dict[str, tuple[tuple[Route, Extension], ...]] = {}
        self._pools: dict[str, _Pool] = {}
        self._validators: dict[tuple[str, str, ExtensionPoint, str, str], _SchemaCheck] = {}
        # Identical schemas (copies of one plugin, shared input types) share one compiled
        # check, and a fan-out checks its input once per distinct schema.
        self._checks_by_schema: dict[str, _SchemaCheck] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        # (point, plugin) -> [calls, errors, total ms, max ms]; plugin -> rate-limit refusals.
        # Taken and reset by the periodic extension.executed / quota.rate_limited summaries.
        self._tally: dict[tuple[str, str], list[float]] = {}
        self._refused: dict[str, int] = {}

    def take_tally(self) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
        """The calls and rate-limit refusals counted since the last take (loop thread)."""
        tally, self._tally = self._tally, {}
        refused, self._refused = self._refused, {}
        return tally, refused

    @property
    def max_response_bytes(self) -> int:
        return self.limits.max_response_bytes

    # -- routing table (called from lifecycle threads) ---------------------------------------

    def set_route(self, route: Route) -> Route | None:
        with self._lock:
            old = self._routes.get(route.plugin_id)
            self._routes[route.plugin_id] = route
            self._providers.clear()
        if old is None or old.version != route.version:
            self.breakers.forget(route.plugin_id)
        return old

    def drop_route(self, plugin_id: str) -> Route | None:
        with self._lock:
            route = self._routes.pop(plugin_id, None)
            self._providers.clear()
        self.breakers.forget(plugin_id)
        return route

    def route(self, plugin_id: str) -> Route | None:
        return self._routes.get(plugin_id)

    def routes(self) -> list[Route]:
        with self._lock:
            return list(self._routes.values())

    def wait_drained(self, endpoint: str, *, timeout_s: float) -> bool:
        """Block until no call is in flight on ``endpoint``, then close its pool."""
        with self._lock:
            pool = self._pools.get(endpoint)
            if pool is None:
                return True
            pool.retired = True
            if pool.inflight == 0:
                pool.idle.set()
        drained = pool.idle.wait(timeout_s)
        with self._lock:
            self._pools.pop(endpoint, None)
        self._close_later(pool.client)
        return drained

    def _close_later(self, client: H1Pool) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)

    # -- calls (event loop) ------------------------------------------------------------------

    def _acquire(self, route: Route) -> _Pool:
        endpoint = route.endpoint
        with self._lock:
            pool = self._pools.get(endpoint)
            if pool is None or pool.retired:
                # H1Pool (httptools on asyncio streams): httpx's models and httpcore's pool cost
                # more CPU than the plugin's own work on small calls. A call that fails on a
                # reused connection is not sent again: only idempotent extensions are retried.
                client = H1Pool(
                    _connector(endpoint),
                    host_header=b"plugin",
                    # No more connections than calls the plugin may have in flight: a burst
                    # of callers queues here instead of flooding its accept queue.
                    max_connections=route.concurrency or self.limits.plugin_concurrency,
                    retry_stale=False,
                )
                pool = _Pool(client=client, base_url=base_url_for(endpoint))
                if endpoint not in self._pools:
                    self._pools[endpoint] = pool
            pool.inflight += 1
            pool.idle.clear()
            return pool

    def _release(self, pool: _Pool) -> None:
        with self._lock:
            pool.inflight -= 1
            if pool.inflight == 0 and pool.retired:
                pool.idle.set()

    def providers(self, point: str) -> list[tuple[Route, Extension]]:
        """(route, extension) pairs for ``point``, highest priority first."""
        found = self._providers.get(point)
        if found is None:
            with self._lock:
                pairs = [
                    (route, ext)
                    for route in self._routes.values()
                    for ext in route.extensions
                    if ext.point.value == point
                ]
                pairs.sort(key=lambda pair: (-pair[1].priority, pair[0].plugin_id, pair[1].name))
                found = tuple(pairs)
                if point in _POINTS:  # only the known points: the table stays bounded
                    self._providers[point] = found
        return list(found)

    def _validator(self, route: Route, ext: Extension, which: str) -> _SchemaCheck | None:
        schema = ext.input_schema if which == "input" else ext.output_schema
        if schema is None:
            return None
        # The member, not .value: an enum's value is a property lookup, and this runs for
        # every provider of every call.
        key = (route.plugin_id, route.version, ext.point, ext.name, which)
        check = self._validators.get(key)
        if check is None:
            text = schema_key(schema)
            check = self._checks_by_schema.get(text) if text is not None else None
            if check is None:
                check = _SchemaCheck(schema)
                if text is not None:  # shared only by schemas that are the same JSON
                    self._checks_by_schema[text] = check
            self._validators[key] = check
        return check

    def schema_errors(
        self, route: Route, ext: Extension, value: Any, which: str
    ) -> list[dict[str, str]]:
        check = self._validator(route, ext, which)
        if check is None or check.is_valid(value):
            return []
        return self._described(route, ext, check, value, which)

    def _input_errors(self, providers: list[tuple[Route, Extension]], value: Any) -> list[Any]:
        verdicts: dict[int, bool] = {}
        errors: list[dict[str, str]] = []
        for route, ext in providers:
            check = self._validator(route, ext, "input")
            if check is None:
                continue
            ok = verdicts.get(id(check))
            if ok is None:
                ok = verdicts[id(check)] = check.is_valid(value)
            if not ok:
                errors += self._described(route, ext, check, value, "input")
        return errors

    @staticmethod
    def _described(
        route: Route, ext: Extension, check: _SchemaCheck, value: Any, which: str
    ) -> list[dict[str, str]]:
        return [
            {
                "plugin": route.plugin_id,
                "extension": ext.name,
                "path": which + "".join(f"[{p!r}]" for p in e.absolute_path),
                "message": e.message,
            }
            for e in check.errors(value)
        ]

    async def call(
        self,
        route: Route,
        ext: Extension,
        payload: Any,
        *,
        timeout_ms: int | None = None,
        encoded: bytes | None = None,
    ) -> Any:
        """Call one extension of one plugin with every guard of the broker.

        ``encoded`` is ``payload`` as JSON already (a fan-out encodes its input once)."""
        self._loop = asyncio.get_running_loop()
        plugin, point = route.plugin_id, ext.point.value
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                self.breakers.before_call(plugin)
            except SummitError:
                self.metrics.refused.labels(plugin, "circuit_open").inc()
                raise
            await self._check_rate(route)
            self.concurrency.enter(plugin, route.concurrency or self.limits.plugin_concurrency)
            try:
                raw = encoded if encoded is not None else json.dumps(payload).encode()
                output = await self._call_with_retries(route, ext, raw, timeout_ms)
            except BaseException as exc:
                if _breaker_failure(exc):
                    self._breaker(plugin, ok=False)
                elif isinstance(exc, PluginRejected):
                    self._breaker(plugin, ok=True)  # it answered sensibly
                raise
            finally:
                self.concurrency.leave(plugin)
            errors = self.schema_errors(route, ext, output, "output")
            if errors:
                self._breaker(plugin, ok=False)
                raise InvalidOutput(
                    f"plugin {plugin} answered output that does not match its output_schema",
                    details=errors,
                )
            self._breaker(plugin, ok=True)
            return output
        except SummitError as exc:
            outcome = exc.code
            if isinstance(exc, TooManyRequests):
                self.metrics.refused.labels(plugin, exc.code).inc()
            raise
        finally:
            self.metrics.observe_call(plugin, point, outcome, time.perf_counter() - started)

    def _breaker(self, plugin_id: str, *, ok: bool) -> None:
        state = self.breakers.record(plugin_id, ok=ok)
        self.metrics.set_breaker(plugin_id, BREAKER_VALUES[state])

    async def _check_rate(self, route: Route) -> None:
        limit = (
            route.rate_limit_requests
            if route.rate_limit_requests is not None
            else self.limits.rate_limit_requests
        )
        if limit <= 0:
            return
        window = route.rate_limit_window_s or self.limits.rate_limit_window_s
        wait = await self.rate_limiter.acquire(route.plugin_id, limit=limit, window_s=window)
        if wait > 0:
            self._refused[route.plugin_id] = self._refused.get(route.plugin_id, 0) + 1
            raise TooManyRequests(
                f"plugin {route.plugin_id} is limited to {limit} calls per {window:g}s",
                plugin_id=route.plugin_id,
                retry_after_s=wait,
                code="rate_limited",
            )

    async def _call_with_retries(
        self, route: Route, ext: Extension, payload: bytes, timeout_ms: int | None
    ) -> Any:
        budget_ms = timeout_ms or ext.timeout_ms or route.timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        if not ext.idempotent or self.limits.retry_attempts <= 1:
            return await self._send(route, ext, payload, deadline)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.limits.retry_attempts)
            | stop_before_delay(budget_ms / 1000),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.metrics.retries.labels(route.plugin_id, ext.point.value).inc()
                return await self._send(route, ext, payload, deadline)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _send(self, route: Route, ext: Extension, payload: bytes, deadline: float) -> Any:
        """POST the ExtensionRequest with ``payload`` (JSON) as its input."""
        plugin = route.plugin_id
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PluginTimeout(f"no time left to call plugin {plugin}", details={"plugin": plugin})
        context = b'{"request_id":"%s","deadline_ms":%d}' % (
            uuid.uuid4().hex.encode(),
            int(remaining * 1000),
        )
        cap = self.limits.max_response_bytes
        content = b'{"input":' + payload + b',"context":' + context + b"}"
        pool = self._acquire(route)
        target = f"/summit/v1/extensions/{ext.point.value}/{ext.name}".encode()
        try:
            async with asyncio.timeout(remaining):
                answer = await pool.client.request(
                    b"POST", target, headers=_JSON, content=content, max_body=cap
                )
        except TimeoutError:
            raise PluginTimeout(
                f"plugin {plugin} did not answer within the deadline",
                details={"plugin": plugin},
            ) from None
        except BodyTooLarge:
            raise ResponseTooLarge(
                f"plugin {plugin} answered more than {cap} bytes",
                details={"plugin": plugin, "cap_bytes": cap},
            ) from None
        except Exception as exc:  # connect, read and protocol errors share no base
            raise PluginCallError(
                f"plugin {plugin} could not be reached or broke the connection: "
                f"{type(exc).__name__}",
                details={"plugin": plugin},
            ) from None
        finally:
            self._release(pool)
        status, chunks = answer.status, [answer.body]
        return _decode_answer(plugin, status, b"".join(chunks))

    async def deliver_event(self, route: Route, event: dict[str, Any], *, timeout_s: float) -> None:
        """POST one event to the plugin's ``/summit/v1/events``; raises unless it answers 2xx."""
        content = json.dumps({"event": event}).encode()
        pool = self._acquire(route)
        try:
            async with asyncio.timeout(timeout_s):
                r = await pool.client.request(
                    b"POST", b"/summit/v1/events", headers=_JSON, content=content
                )
        except TimeoutError:
            raise PluginTimeout(
                f"plugin {route.plugin_id} did not take the event in time",
                details={"plugin": route.plugin_id},
            ) from None
        except Exception as exc:
            raise PluginCallError(
                f"plugin {route.plugin_id} could not be reached: {type(exc).__name__}",
                details={"plugin": route.plugin_id},
            ) from None
        finally:
            self._release(pool)
        if not 200 <= r.status < 300:
            raise PluginCallError(
                f"plugin {route.plugin_id} answered {r.status} to an event",
                details={"plugin": route.plugin_id},
            )

    async def execute(
        self,
        point: str,
        payload: Any,
        *,
        mode: str = "all",
        plugins: list[str] | None = None,
        timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        if point not in _POINTS:
            raise NotFound(f"unknown extension point {point!r}", code="unknown_point")
        if mode not in ("all", "pipeline", "first"):
            raise InvalidInput(
                f"unknown mode {mode!r}", details={"allowed": ["all", "pipeline", "first"]}
            )
        providers = self.providers(point)
        if plugins is not None:
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
        errors = self._input_errors(checked, payload)
        if errors:
            raise InvalidInput(
                "the input does not match the provider's input_schema",
                code="invalid_input",
                details=errors,
            )

        failures: list[SummitError] = []

        async def one(
            route: Route, ext: Extension, value: Any, raw: bytes | None = None
        ) -> dict[str, Any]:
            started = time.perf_counter()
            entry: dict[str, Any] = {"plugin": route.plugin_id, "extension": ext.name}
            try:
                entry["output"] = await self.call(
                    route, ext, value, timeout_ms=timeout_ms, encoded=raw
                )
            except SummitError as exc:
                failures.append(exc)
                entry["error"] = {"code": exc.code, "message": exc.message}
                entry["status"] = exc.status_code
            ms = (time.perf_counter() - started) * 1000
            entry["ms"] = round(ms, 3)
            counts = self._tally.get((point, route.plugin_id))
            if counts is None:
                counts = self._tally[(point, route.plugin_id)] = [0, 0, 0.0, 0.0]
            counts[0] += 1
            counts[1] += "error" in entry
            counts[2] += ms
            counts[3] = max(counts[3], ms)
            return entry

        if mode == "all":
            if len(providers) == 1:  # no task to spawn for a single provider
                results = [await one(*providers[0], payload, raw)]
            else:
                results = list(
                    await asyncio.gather(*(one(r, e, payload, raw) for r, e in providers))
                )
            if failures and all("error" in entry for entry in results):
                raise _with_results(failures[0], results)
            return {"mode": mode, "results": results}
        steps: list[dict[str, Any]] = []
        value = payload
        for i, (route, ext) in enumerate(providers):
            if mode == "pipeline" and i > 0:
                bad = self.schema_errors(route, ext, value, "input")
                if bad:
                    failures.append(
                        InvalidOutput(
                            f"{steps[-1]['plugin']}'s output does not fit {route.plugin_id}'s "
                            "input_schema",
                            details=bad,
                        )
                    )
                    raise _with_results(failures[-1], steps, failed_at=route.plugin_id)
            entry = await one(route, ext, value, raw if value is payload else None)
            steps.append(entry)
            if "output" in entry:
                if mode == "first":
                    return {"mode": mode, "output": entry["output"], "results": steps}
                value = entry["output"]
            elif mode == "pipeline":
                raise _with_results(failures[-1], steps, failed_at=route.plugin_id)
        if mode == "first":
            raise _with_results(failures[-1], steps)
        return {"mode": mode, "output": value, "results": steps}

    async def aclose(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            await pool.client.aclose()


def _with_results(
    exc: SummitError, results: list[dict[str, Any]], *, failed_at: str | None = None
) -> SummitError:
    """The error that answers the whole execute, carrying every provider's result."""
    details = exc.details if isinstance(exc.details, dict) else {"errors": exc.details}
    exc.details = {**details, "results": results}
    if failed_at is not None:
        exc.details["failed_at"] = failed_at
    return exc


def _decode_answer(plugin: str, status: int, raw: bytes) -> Any:
    try:
        # One level more than the limit: the {"output": ...} envelope is the first.
        data = jsonlimits.decode(raw, max_depth=jsonlimits.MAX_DEPTH + 1)
    except jsonlimits.TooDeep:
        raise InvalidAnswer(
            f"plugin {plugin} answered JSON nested deeper than {jsonlimits.MAX_DEPTH} levels",
            details={"plugin": plugin, "status": status, "max_depth": jsonlimits.MAX_DEPTH},
        ) from None
    except ValueError:
        raise PluginCallError(
            f"plugin {plugin} answered a body that is not JSON (HTTP {status})",
            details={"plugin": plugin, "status": status},
        ) from None
    if status == 200 and isinstance(data, dict) and "output" in data:
        return data["output"]
    error = data.get("error") if isinstance(data, dict) else None
    message = (
        f"{error.get('code')}: {error.get('message')}"
        if isinstance(error, dict)
        else f"HTTP {status} without an error body"
    )
    details = {"plugin": plugin, "status": status, "error": error}
    if status == 200:
        raise PluginCallError(f"plugin {plugin} answered without 'output'", details=details)
    if status == 504:
        raise PluginTimeout(f"plugin {plugin} ran out of time: {message}", details=details)
    if status == 429:
        raise TooManyRequests(
            f"plugin {plugin} is busy: {message}",
            plugin_id=plugin,
            retry_after_s=1.0,
            code="plugin_busy",
        )
    if 400 <= status < 500:
        raise PluginRejected(f"plugin {plugin} refused the input: {message}", details=details)
    raise PluginCallError(f"plugin {plugin} failed: {message}", details=details)
