"""The broker over a fake ``PluginTransport`` (no sockets, no containers): the fan-out modes,
the guards, retries, draining, and what each kind of plugin failure becomes for the caller."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.broker import Broker, BrokerLimits, Route
from orchestrator.broker.breaker import CircuitOpen
from orchestrator.broker.limits import TooManyRequests
from orchestrator.broker.transport import BodyTooLarge, H1Response
from orchestrator.domain.errors import SummitError
from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import Endpoint, TcpEndpoint, UnixEndpoint

# (target, request body) -> the plugin's answer; raising stands for a transport failure.
Handler = Callable[[bytes, dict[str, Any]], Awaitable[H1Response]]


def answer(status: int, body: Any) -> H1Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return H1Response(status, [(b"content-type", b"application/json")], raw)


def replying(output: Any) -> Handler:
    async def handle(target: bytes, request: dict[str, Any]) -> H1Response:
        return answer(200, {"output": output})

    return handle


def failing(status: int, error: Any = None) -> Handler:
    async def handle(target: bytes, request: dict[str, Any]) -> H1Response:
        return answer(status, {"error": error or {"code": "boom", "message": "it broke"}})

    return handle


def raising(exc: BaseException) -> Handler:
    async def handle(target: bytes, request: dict[str, Any]) -> H1Response:
        raise exc

    return handle


@dataclass
class FakeTransport:
    plugins: FakePlugins
    endpoint: Endpoint
    closed: bool = False

    async def request(
        self,
        method: bytes,
        target: bytes,
        *,
        headers: list[tuple[bytes, bytes]],
        content: bytes = b"",
        max_body: int = 1024 * 1024,
    ) -> H1Response:
        assert not self.closed, "a call reached a closed transport"
        request = json.loads(content)
        self.plugins.requests.append((self.endpoint, target, request))
        return await self.plugins.handlers[self.endpoint](target, request)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakePlugins:
    """A TransportFactory whose transports hand each request to the endpoint's handler."""

    handlers: dict[Endpoint, Handler] = field(default_factory=dict)
    opened: list[tuple[Endpoint, int, str | None]] = field(default_factory=list)
    transports: list[FakeTransport] = field(default_factory=list)
    requests: list[tuple[Endpoint, bytes, dict[str, Any]]] = field(default_factory=list)

    def __call__(
        self, endpoint: Endpoint, *, max_connections: int, call_token: str | None
    ) -> FakeTransport:
        self.opened.append((endpoint, max_connections, call_token))
        transport = FakeTransport(self, endpoint)
        self.transports.append(transport)
        return transport

    def calls_to(self, plugin_id: str) -> int:
        return sum(1 for endpoint, _, _ in self.requests if endpoint == endpoint_of(plugin_id))


def endpoint_of(plugin_id: str) -> Endpoint:
    return UnixEndpoint(Path(f"/run/summit/{plugin_id}/plugin.sock"))


def ext(
    name: str = "run",
    *,
    priority: int = 100,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    idempotent: bool = False,
) -> Extension:
    return Extension(
        point=ExtensionPoint.ANALYZER,
        name=name,
        priority=priority,
        input_schema=input_schema,
        output_schema=output_schema,
        idempotent=idempotent,
    )


def make_broker(plugins: FakePlugins, **limits: Any) -> Broker:
    defaults: dict[str, Any] = {"rate_limit_requests": 0}
    return Broker(limits=BrokerLimits(**{**defaults, **limits}), transport_factory=plugins)


def add(
    broker: Broker,
    plugins: FakePlugins,
    plugin_id: str,
    handler: Handler,
    extension: Extension | None = None,
    **route: Any,
) -> Route:
    plugins.handlers[endpoint_of(plugin_id)] = handler
    made = Route(plugin_id, "1.0.0", endpoint_of(plugin_id), (extension or ext(),), **route)
    broker.set_route(made)
    return made


def execute(broker: Broker, payload: Any = None, **options: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        try:
            return await broker.execute("analyzer", payload or {"text": "a b"}, **options)
        finally:
            await broker.aclose()

    return asyncio.run(run())


def refused(broker: Broker, payload: Any = None, **options: Any) -> SummitError:
    with pytest.raises(SummitError) as caught:
        execute(broker, payload, **options)
    return caught.value


# -- modes ------------------------------------------------------------------------------------


def test_all_answers_every_provider_and_fails_only_when_all_do() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "a", replying({"words": 2}), ext(priority=300))
    add(broker, plugins, "b", failing(500), ext(priority=200))
    add(broker, plugins, "c", raising(ConnectionResetError()), ext(priority=100))

    results = execute(broker, mode="all")["results"]
    assert [(r["plugin"], r.get("output"), r.get("status")) for r in results] == [
        ("a", {"words": 2}, None),
        ("b", None, 502),
        ("c", None, 502),
    ]
    assert results[1]["error"] == {
        "code": "plugin_error",
        "message": "plugin b failed: boom: it broke",
    }
    # Every provider got the same input and its own request id within the deadline.
    bodies = [request for _, _, request in plugins.requests]
    assert all(body["input"] == {"text": "a b"} for body in bodies)
    assert len({body["context"]["request_id"] for body in bodies}) == 3
    assert all(0 < body["context"]["deadline_ms"] <= 30000 for body in bodies)

    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "b", failing(500))
    add(broker, plugins, "c", raising(ConnectionResetError()))
    error = refused(broker, mode="all")
    assert error.status_code == 502
    assert [r["plugin"] for r in error.details["results"]] == ["b", "c"]


def test_pipeline_feeds_each_output_to_the_next_and_stops_at_a_failure() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "a", replying({"n": 1}), ext(priority=300))
    add(broker, plugins, "b", replying({"n": 2}), ext(priority=200))
    result = execute(broker, mode="pipeline")
    assert result["output"] == {"n": 2}
    assert [request["input"] for _, _, request in plugins.requests] == [{"text": "a b"}, {"n": 1}]

    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "a", failing(500), ext(priority=300))
    add(broker, plugins, "b", replying({"n": 2}), ext(priority=200))
    error = refused(broker, mode="pipeline")
    assert error.details["failed_at"] == "a"
    assert plugins.calls_to("b") == 0


def test_pipeline_refuses_an_output_that_does_not_fit_the_next_input_schema() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "a", replying({"n": "one"}), ext(priority=300))
    number = {"type": "object", "properties": {"n": {"type": "integer"}}}
    add(broker, plugins, "b", replying({"n": 2}), ext(priority=200, input_schema=number))
    error = refused(broker, mode="pipeline")
    assert error.code == "invalid_output"
    assert error.details["failed_at"] == "b"
    assert plugins.calls_to("b") == 0


def test_first_takes_the_first_output_in_priority_order() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "a", raising(TimeoutError()), ext(priority=300))
    add(broker, plugins, "b", replying("from b"), ext(priority=200))
    add(broker, plugins, "c", replying("from c"), ext(priority=100))
    result = execute(broker, mode="first")
    assert result["output"] == "from b"
    assert [r["plugin"] for r in result["results"]] == ["a", "b"]
    assert result["results"][0]["error"]["code"] == "plugin_timeout"
    assert plugins.calls_to("c") == 0


def test_input_checks_come_before_any_call() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    text = {"type": "object", "required": ["text"]}
    add(broker, plugins, "a", replying(1), ext(input_schema=text))
    assert refused(broker, {"other": 1}).code == "invalid_input"
    assert refused(broker, mode="sideways").details == {"allowed": ["all", "pipeline", "first"]}
    assert refused(broker, plugins=["ghost"]).code == "not_active"
    assert plugins.requests == []


# -- what a failure becomes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (failing(422), 422, "plugin_rejected_input"),
        (failing(429), 429, "plugin_busy"),
        (failing(504), 504, "plugin_timeout"),
        (failing(503), 502, "plugin_error"),
        (raising(BodyTooLarge(2, 1)), 502, "response_too_large"),
        (raising(ConnectionRefusedError()), 502, "plugin_error"),
        (raising(OSError("broken pipe")), 502, "plugin_error"),
    ],
)
def test_each_failure_maps_to_its_error(handler: Handler, status: int, code: str) -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "p", handler)
    [entry] = refused(broker).details["results"]
    assert (entry["status"], entry["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "plugin_error"),
        (b'{"result": 1}', "plugin_error"),
        (b'{"output":' + b"[" * 100 + b"]" * 100 + b"}", "invalid_answer"),
    ],
)
def test_answers_the_broker_will_not_take(body: bytes, code: str) -> None:
    async def handle(target: bytes, request: dict[str, Any]) -> H1Response:
        return answer(200, body)

    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "p", handle)
    [entry] = refused(broker).details["results"]
    assert entry["error"]["code"] == code


def test_an_output_that_breaks_the_output_schema_is_the_plugins_failure() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "p", replying("text"), ext(output_schema={"type": "integer"}))
    error = refused(broker)
    assert error.code == "invalid_output"
    assert error.details["results"][0]["status"] == 502


def test_a_plugin_that_does_not_answer_in_time_is_cut_off_at_the_deadline() -> None:
    async def hang(target: bytes, request: dict[str, Any]) -> H1Response:
        await asyncio.sleep(10)
        raise AssertionError("not cut off")

    plugins = FakePlugins()
    broker = make_broker(plugins)
    add(broker, plugins, "p", hang)
    [entry] = refused(broker, timeout_ms=50).details["results"]
    assert entry["error"]["code"] == "plugin_timeout"
    assert entry["ms"] < 1000


# -- guards -----------------------------------------------------------------------------------


def test_the_breaker_opens_after_repeated_failures_and_spares_the_plugin() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins, breaker_failures=2, breaker_cooldown_s=60)
    route = add(broker, plugins, "p", failing(500))
    # A refused input (4xx) is the caller's problem: it does not count.
    add(broker, plugins, "q", failing(400))

    async def scenario() -> SummitError:
        for _ in range(3):
            await call_quietly(broker, broker.route("q"))
        for _ in range(2):
            await call_quietly(broker, route)
        with pytest.raises(CircuitOpen) as caught:
            await broker.call(route, route.extensions[0], {})
        await broker.aclose()
        return caught.value

    error = asyncio.run(scenario())
    assert error.status_code == 503
    assert plugins.calls_to("p") == 2
    assert broker.breakers.state("p") == "open"
    assert broker.breakers.state("q") == "closed"


async def call_quietly(broker: Broker, route: Route | None) -> None:
    assert route is not None
    with contextlib.suppress(SummitError):
        await broker.call(route, route.extensions[0], {})


def test_the_rate_limit_refuses_past_the_route_limit_and_is_counted() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)
    route = add(broker, plugins, "p", replying(1), rate_limit_requests=2, rate_limit_window_s=60)

    async def scenario() -> None:
        await broker.call(route, route.extensions[0], {})
        await broker.call(route, route.extensions[0], {})
        with pytest.raises(TooManyRequests) as caught:
            await broker.call(route, route.extensions[0], {})
        assert caught.value.code == "rate_limited"
        await broker.aclose()

    asyncio.run(scenario())
    assert plugins.calls_to("p") == 2
    assert broker.take_tally()[1] == {"p": 1}
    assert broker.take_tally()[1] == {}


def test_the_concurrency_limit_refuses_instead_of_queueing() -> None:
    release = asyncio.Event()

    async def slow(target: bytes, request: dict[str, Any]) -> H1Response:
        await release.wait()
        return answer(200, {"output": 1})

    plugins = FakePlugins()
    broker = make_broker(plugins)
    route = add(broker, plugins, "p", slow, concurrency=1)

    async def scenario() -> None:
        first = asyncio.create_task(broker.call(route, route.extensions[0], {}))
        await asyncio.sleep(0.01)
        with pytest.raises(TooManyRequests) as caught:
            await broker.call(route, route.extensions[0], {})
        assert caught.value.code == "concurrency_limited"
        release.set()
        assert await first == 1
        await broker.aclose()

    asyncio.run(scenario())
    # The transport was sized to the route's concurrency, not the broker's default.
    assert plugins.opened == [(endpoint_of("p"), 1, None)]


# -- retries ----------------------------------------------------------------------------------


def test_only_idempotent_extensions_are_retried() -> None:
    def flaky(failures: int) -> Handler:
        seen = [0]

        async def handle(target: bytes, request: dict[str, Any]) -> H1Response:
            seen[0] += 1
            if seen[0] <= failures:
                raise ConnectionResetError()
            return answer(200, {"output": seen[0]})

        return handle

    plugins = FakePlugins()
    broker = make_broker(plugins, retry_attempts=3)
    add(broker, plugins, "again", flaky(2), ext(idempotent=True))
    add(broker, plugins, "once", flaky(1), ext("once"))
    results = {r["plugin"]: r for r in execute(broker)["results"]}
    assert results["again"]["output"] == 3
    assert results["once"]["error"]["code"] == "plugin_error"
    assert (plugins.calls_to("again"), plugins.calls_to("once")) == (3, 1)


# -- transports: one per endpoint, drained before they close ---------------------------------


def test_one_transport_per_endpoint_built_by_the_factory_with_the_call_token() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins, plugin_concurrency=7)
    tcp = TcpEndpoint("10.0.0.5", 8080)
    plugins.handlers[tcp] = replying("pod")
    broker.set_route(Route("k", "1.0.0", tcp, (ext(),), call_token="secret-token"))

    async def scenario() -> list[Any]:
        outputs = [(await broker.execute("analyzer", {}))["results"][0]["output"] for _ in range(3)]
        await broker.aclose()
        return outputs

    assert asyncio.run(scenario()) == ["pod"] * 3
    assert plugins.opened == [(tcp, 7, "secret-token")]
    assert plugins.transports[0].closed
    assert "secret-token" not in repr(broker.route("k"))


def test_a_retired_endpoint_closes_only_after_its_calls_in_flight_finish() -> None:
    release = asyncio.Event()

    async def slow(target: bytes, request: dict[str, Any]) -> H1Response:
        await release.wait()
        return answer(200, {"output": "done"})

    plugins = FakePlugins()
    broker = make_broker(plugins)
    old = add(broker, plugins, "p", slow)

    async def scenario() -> tuple[bool, Any]:
        call = asyncio.create_task(broker.call(old, old.extensions[0], {}))
        await asyncio.sleep(0.01)
        broker.drop_route("p")
        drained = asyncio.create_task(
            asyncio.to_thread(broker.wait_drained, old.endpoint, timeout_s=5)
        )
        await asyncio.sleep(0.05)
        assert not drained.done() and not plugins.transports[0].closed
        release.set()
        output = await call
        ok = await drained
        await asyncio.sleep(0.01)  # the close is scheduled on this loop
        assert plugins.transports[0].closed
        return ok, output

    assert asyncio.run(scenario()) == (True, "done")


def test_events_are_delivered_over_the_same_transport() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)

    async def took(target: bytes, request: dict[str, Any]) -> H1Response:
        return answer(202 if target == b"/summit/v1/events" else 500, {})

    route = add(broker, plugins, "p", took)
    add(broker, plugins, "q", failing(500))

    async def scenario() -> None:
        await broker.deliver_event(route, {"type": "document.created"}, timeout_s=1)
        with pytest.raises(SummitError) as caught:
            await broker.deliver_event(broker.route("q"), {"type": "x"}, timeout_s=1)  # type: ignore[arg-type]
        assert caught.value.code == "plugin_error"
        await broker.aclose()

    asyncio.run(scenario())
    assert plugins.requests[0][1:] == (
        b"/summit/v1/events",
        {"event": {"type": "document.created"}},
    )


def test_a_cancelled_probe_does_not_keep_the_breaker_open() -> None:
    """A half-open probe cancelled before the plugin answered (mode first cancels the
    slower providers) must not leave the breaker open for good."""
    plugins = FakePlugins()
    broker = make_broker(plugins, breaker_failures=1, breaker_cooldown_s=0.05)
    route = add(broker, plugins, "p", failing(500))

    async def scenario() -> str:
        await call_quietly(broker, route)  # opens the breaker
        await asyncio.sleep(0.07)
        stalled = asyncio.Event()

        async def never(target: bytes, request: dict[str, Any]) -> H1Response:
            await stalled.wait()
            raise AssertionError("unreachable")

        plugins.handlers[route.endpoint] = never
        probe = asyncio.create_task(broker.call(route, route.extensions[0], {}))
        await asyncio.sleep(0.01)
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        plugins.handlers[route.endpoint] = replying({"ok": True})
        output = await broker.call(route, route.extensions[0], {})
        await broker.aclose()
        assert output == {"ok": True}
        return broker.breakers.state("p")

    assert asyncio.run(scenario()) == "closed"
