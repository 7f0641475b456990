import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from summit_sdk import PluginContext, PluginError, create_app, create_plugin
from summit_sdk.builder import PluginBuilder

BASE = "/summit/v1"


def builder() -> PluginBuilder:
    return create_plugin().with_metadata(id="com.example.test", version="0.3.0")


def call_body(input: Any = None, **context: Any) -> dict[str, Any]:
    return {"input": input, "context": {"request_id": "req-1", **context}}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    detail: dict[str, Any] = body["error"]
    return detail


# --------------------------------------------------------------------------- endpoints


def test_health_reports_protocol_plugin_and_extensions() -> None:
    plugin = builder().extension("analyzer", "a", lambda i, c: i).build()
    response = TestClient(create_app(plugin)).get(f"{BASE}/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "protocol": "summit.plugin/v1",
        "plugin": {"id": "com.example.test", "version": "0.3.0"},
        "extensions": [{"point": "analyzer", "name": "a"}],
    }


def test_initialize_passes_config_and_host_to_handler_and_later_calls() -> None:
    seen: list[PluginContext] = []

    def on_init(ctx: PluginContext) -> None:
        seen.append(ctx)
        ctx.config.setdefault("greeting", "hello")

    plugin = (
        builder()
        .on_initialize(on_init)
        .extension("analyzer", "cfg", lambda i, ctx: dict(ctx.config))
        .build()
    )
    client = TestClient(create_app(plugin))
    response = client.post(
        f"{BASE}/initialize",
        json={
            "config": {"top": 3},
            "host": {"url": "http://host", "token": "t0k"},
            "permissions": ["read:data"],
        },
    )
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert seen[0].config["top"] == 3
    assert (seen[0].host_url, seen[0].host_token) == ("http://host", "t0k")
    assert seen[0].permissions == ("read:data",)
    output = client.post(f"{BASE}/extensions/analyzer/cfg", json=call_body()).json()["output"]
    assert output == {"top": 3, "greeting": "hello"}


def test_initialize_accepts_an_empty_body() -> None:
    client = TestClient(create_app(builder().build()))
    assert client.post(f"{BASE}/initialize").json() == {"status": "ok"}


def test_initialize_failure_is_500_initialize_failed() -> None:
    def on_init(ctx: PluginContext) -> None:
        raise RuntimeError("database unreachable")

    client = TestClient(create_app(builder().on_initialize(on_init).build()))
    response = client.post(f"{BASE}/initialize", json={"config": {}})
    assert response.status_code == 500
    assert error_of(response) == {"code": "initialize_failed", "message": "database unreachable"}


def test_sync_and_async_extension_handlers_get_input_and_context() -> None:
    def sync_handler(input: Any, ctx: PluginContext) -> Any:
        return {"thread": threading.current_thread().name, "echo": input, "rid": ctx.request_id}

    async def async_handler(input: Any, ctx: PluginContext) -> Any:
        await asyncio.sleep(0)
        return {"echo": input, "deadline": ctx.deadline_ms}

    plugin = (
        builder()
        .extension("analyzer", "sync", sync_handler)
        .extension("export", "async", async_handler)
        .build()
    )
    client = TestClient(create_app(plugin))
    main_thread = threading.current_thread().name

    sync_out = client.post(f"{BASE}/extensions/analyzer/sync", json=call_body([1, "x"]))
    assert sync_out.status_code == 200
    assert sync_out.json()["output"]["echo"] == [1, "x"]
    assert sync_out.json()["output"]["rid"] == "req-1"
    assert sync_out.json()["output"]["thread"] != main_thread

    async_out = client.post(
        f"{BASE}/extensions/export/async", json=call_body({"a": 1}, deadline_ms=5000)
    )
    assert async_out.json() == {"output": {"echo": {"a": 1}, "deadline": 5000}}


def test_events_reach_matching_and_wildcard_handlers_only() -> None:
    received: list[tuple[str, str]] = []
    plugin = (
        builder()
        .on_event("document.created", lambda e, ctx: received.append(("created", e["id"])))
        .on_event("document.deleted", lambda e, ctx: received.append(("deleted", e["id"])))
        .on_event("*", lambda e, ctx: received.append(("any", e["id"])))
        .build()
    )
    client = TestClient(create_app(plugin))
    for event in ({"type": "document.created", "id": "1"}, {"type": "other", "id": "2"}):
        response = client.post(f"{BASE}/events", json={"event": event})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    assert received == [("created", "1"), ("any", "1"), ("any", "2")]


def test_failing_event_handler_is_500_handler_error() -> None:
    def broken(event: dict[str, Any], ctx: PluginContext) -> None:
        raise KeyError("payload")

    client = TestClient(create_app(builder().on_event("x", broken).build()))
    response = client.post(f"{BASE}/events", json={"event": {"type": "x"}})
    assert response.status_code == 500
    assert error_of(response)["code"] == "handler_error"


def test_shutdown_runs_handler_answers_then_requests_exit_once() -> None:
    order: list[str] = []
    plugin = (
        builder()
        .on_shutdown(lambda ctx: order.append("handler"))
        .extension("analyzer", "a", lambda i, c: i)
        .build()
    )
    client = TestClient(create_app(plugin, on_exit=lambda: order.append("exit")))
    response = client.post(f"{BASE}/shutdown")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert order == ["handler", "exit"]

    client.post(f"{BASE}/shutdown")
    assert order == ["handler", "exit"]  # exit is requested only once
    late = client.post(f"{BASE}/extensions/analyzer/a", json=call_body())
    assert late.status_code == 503
    assert error_of(late)["code"] == "shutting_down"


def test_failing_shutdown_handler_still_exits() -> None:
    exits: list[bool] = []

    def on_shutdown(ctx: PluginContext) -> None:
        raise RuntimeError("flush failed")

    app = create_app(builder().on_shutdown(on_shutdown).build(), on_exit=lambda: exits.append(True))
    response = TestClient(app).post(f"{BASE}/shutdown")
    assert response.status_code == 500
    assert error_of(response)["code"] == "shutdown_failed"
    assert exits == [True]


# --------------------------------------------------------------------------- errors


def test_unknown_extension_is_404() -> None:
    client = TestClient(create_app(builder().extension("analyzer", "a", lambda i, c: i).build()))
    # The last is the route's own pattern, sent literally: a name like any other.
    for path in ("analyzer/b", "export/a", "nonsense/a", "%7Bpoint%7D/%7Bname%7D"):
        response = client.post(f"{BASE}/extensions/{path}", json=call_body())
        assert response.status_code == 404
        assert error_of(response)["code"] == "unknown_extension"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"context": {"request_id": "r"}}',
        b'{"input": 1}',
        b'{"input": 1, "context": {}}',
        b'{"input": 1, "context": {"request_id": "r", "deadline_ms": "soon"}}',
    ],
)
def test_bad_extension_body_is_400_bad_request(body: bytes) -> None:
    client = TestClient(create_app(builder().extension("analyzer", "a", lambda i, c: i).build()))
    response = client.post(f"{BASE}/extensions/analyzer/a", content=body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


def test_bad_initialize_and_event_bodies_are_400() -> None:
    client = TestClient(create_app(builder().build()))
    bad_init = client.post(f"{BASE}/initialize", json={"config": [1]})
    bad_event = client.post(f"{BASE}/events", json={"event": "created"})
    assert (bad_init.status_code, error_of(bad_init)["code"]) == (400, "bad_request")
    assert (bad_event.status_code, error_of(bad_event)["code"]) == (400, "bad_request")


def test_handler_error_is_500_without_traceback_but_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(input: Any, ctx: PluginContext) -> None:
        raise ValueError("cannot parse row 7")

    client = TestClient(create_app(builder().extension("analyzer", "a", broken).build()))
    with caplog.at_level(logging.ERROR, logger="summit_sdk.runtime"):
        response = client.post(f"{BASE}/extensions/analyzer/a", json=call_body())
    assert response.status_code == 500
    assert error_of(response) == {"code": "handler_error", "message": "cannot parse row 7"}
    assert "Traceback" not in response.text and "broken" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "req-1" in logged[0].getMessage()


def test_plugin_error_chooses_code_and_status() -> None:
    def refuse(input: Any, ctx: PluginContext) -> None:
        raise PluginError("text is required", code="invalid_input", status=422)

    client = TestClient(create_app(builder().extension("analyzer", "a", refuse).build()))
    response = client.post(f"{BASE}/extensions/analyzer/a", json=call_body())
    assert response.status_code == 422
    assert error_of(response) == {"code": "invalid_input", "message": "text is required"}


def test_output_that_is_not_json_is_500_handler_error() -> None:
    client = TestClient(
        create_app(builder().extension("analyzer", "a", lambda i, c: {1, 2}).build())
    )
    response = client.post(f"{BASE}/extensions/analyzer/a", json=call_body())
    assert response.status_code == 500
    assert error_of(response)["code"] == "handler_error"


def test_slow_async_handler_past_deadline_is_504_promptly() -> None:
    async def slow(input: Any, ctx: PluginContext) -> str:
        await asyncio.sleep(10)
        return "late"

    client = TestClient(create_app(builder().extension("analyzer", "slow", slow).build()))
    started = time.monotonic()
    response = client.post(f"{BASE}/extensions/analyzer/slow", json=call_body(deadline_ms=100))
    assert time.monotonic() - started < 3
    assert response.status_code == 504
    assert error_of(response)["code"] == "deadline_exceeded"


def test_slow_sync_handler_past_deadline_is_504_promptly() -> None:
    release = threading.Event()

    def slow(input: Any, ctx: PluginContext) -> str:
        release.wait(10)
        return "late"

    client = TestClient(create_app(builder().extension("analyzer", "slow", slow).build()))
    try:
        started = time.monotonic()
        response = client.post(f"{BASE}/extensions/analyzer/slow", json=call_body(deadline_ms=100))
        assert time.monotonic() - started < 3
        assert response.status_code == 504
    finally:
        release.set()


def test_deadline_already_spent_is_504_without_calling() -> None:
    calls: list[Any] = []
    plugin = builder().extension("analyzer", "a", lambda i, c: calls.append(i)).build()
    response = TestClient(create_app(plugin)).post(
        f"{BASE}/extensions/analyzer/a", json=call_body(deadline_ms=0)
    )
    assert response.status_code == 504
    assert calls == []


def test_fast_handler_within_deadline_succeeds() -> None:
    plugin = builder().extension("analyzer", "a", lambda i, c: i * 2).build()
    response = TestClient(create_app(plugin)).post(
        f"{BASE}/extensions/analyzer/a", json=call_body(21, deadline_ms=5000)
    )
    assert response.json() == {"output": 42}


@pytest.mark.parametrize("from_env", [False, True])
def test_calls_beyond_the_concurrency_limit_get_429(
    from_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if from_env:
        monkeypatch.setenv("SUMMIT_PLUGIN_CONCURRENCY", "2")

    async def scenario() -> None:
        gate = asyncio.Event()
        running = 0

        async def slow(input: Any, ctx: PluginContext) -> str:
            nonlocal running
            running += 1
            await gate.wait()
            return "done"

        app = create_app(
            builder().extension("analyzer", "slow", slow).build(),
            concurrency=None if from_env else 2,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plugin") as client:
            url = f"{BASE}/extensions/analyzer/slow"
            first = asyncio.create_task(client.post(url, json=call_body()))
            second = asyncio.create_task(client.post(url, json=call_body()))
            while running < 2:
                await asyncio.sleep(0.01)
            third = await client.post(url, json=call_body())
            assert third.status_code == 429
            assert error_of(third)["code"] == "too_many_requests"
            gate.set()
            assert (await first).status_code == 200
            assert (await second).status_code == 200
            # Capacity is given back once calls finish.
            assert (await client.post(url, json=call_body())).status_code == 200

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def test_unknown_route_and_method_answer_error_json() -> None:
    client = TestClient(create_app(builder().build()))
    missing = client.get("/summit/v2/health")
    wrong_method = client.get(f"{BASE}/shutdown")
    assert (missing.status_code, error_of(missing)["code"]) == (404, "not_found")
    assert (wrong_method.status_code, error_of(wrong_method)["code"]) == (
        405,
        "method_not_allowed",
    )
    assert wrong_method.headers["allow"] == "POST"
    assert client.post(f"{BASE}/health").headers["allow"] == "GET, HEAD"
    head = client.head(f"{BASE}/health")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(client.get(f"{BASE}/health").content)


# --------------------------------------------------------------------------- metadata


def test_missing_id_and_version_come_from_the_manifest_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "plugin.json"
    manifest.write_text(json.dumps({"id": "com.example.from-manifest", "version": "2.1.0"}))
    monkeypatch.setenv("SUMMIT_PLUGIN_MANIFEST", str(manifest))
    plugin = create_plugin().extension("analyzer", "a", lambda i, c: i).build()
    assert plugin.id is None
    health = TestClient(create_app(plugin)).get(f"{BASE}/health").json()
    assert health["plugin"] == {"id": "com.example.from-manifest", "version": "2.1.0"}


def test_builder_metadata_wins_over_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "plugin.json"
    manifest.write_text(json.dumps({"id": "com.example.other", "version": "9.9.9"}))
    monkeypatch.setenv("SUMMIT_PLUGIN_MANIFEST", str(manifest))
    plugin = create_plugin().with_metadata(version="1.0.0").build()
    health = TestClient(create_app(plugin)).get(f"{BASE}/health").json()
    assert health["plugin"] == {"id": "com.example.other", "version": "1.0.0"}


def test_missing_metadata_without_manifest_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUMMIT_PLUGIN_MANIFEST", str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match=r"absent\.json"):
        create_app(create_plugin().build())
