"""JSON limits: the shared decoder, and the broker reading plugins' answers and callers' inputs
through it (plugins faked by asyncio servers on unix sockets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.broker import Broker, Route
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import InvalidInput, TooLarge
from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import UnixEndpoint


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text ``depth`` containers deep, alternating lists and objects."""
    opening = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closing = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opening + leaf + closing


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("[[[", 0), ([], 1), ({}, 1), ([{}], 2), ({"a": [1, {"b": [[]]}]}, 5)],
)
def test_depth_counts_containers_not_brackets_in_strings(value: Any, depth: int) -> None:
    assert not jsonlimits.depth_exceeds(value, depth)
    assert jsonlimits.depth_exceeds(value, depth - 1) == (depth > 0)


def test_depth_is_measured_without_recursion() -> None:
    deep: list[Any] = []
    for _ in range(200_000):
        deep = [deep]
    assert jsonlimits.depth_exceeds(deep, 64)
    assert not jsonlimits.depth_exceeds(deep, 200_001)


def test_decode_refuses_what_is_too_deep_and_keeps_the_rest() -> None:
    assert jsonlimits.decode(nested(64)) == json.loads(nested(64))
    assert jsonlimits.decode(b'"[[[[[[[[[["', max_depth=2) == "[[[[[[[[[["
    for text in (nested(65), "[" * 100_000 + "]" * 100_000, "[" * 100_000):
        with pytest.raises(jsonlimits.TooDeep):
            jsonlimits.decode(text)
    with pytest.raises(ValueError) as caught:
        jsonlimits.decode(b"{nope")
    assert not isinstance(caught.value, jsonlimits.TooDeep)


def test_the_cheap_check_never_misses_a_deep_document() -> None:
    for depth in (0, 1, 5, 63, 64, 65, 200):
        text = nested(depth)
        if jsonlimits.depth_exceeds(json.loads(text), 64):
            assert jsonlimits.may_exceed(text, 64) and jsonlimits.may_exceed(text.encode(), 64)
    assert not jsonlimits.may_exceed(b'{"a": [1, 2, {"b": "x" }]}' * 10, 64)


def test_loads_answers_with_the_apis_errors() -> None:
    assert jsonlimits.loads('{"a": 1}', what="field 'config'", max_bytes=8) == {"a": 1}
    with pytest.raises(TooLarge) as large:
        jsonlimits.loads(
            '{"a": "' + "é" * 10 + '"}', what="the config", max_bytes=20, too_large_code="big"
        )
    assert (large.value.status_code, large.value.code) == (413, "big")
    assert large.value.details == {"limit_bytes": 20}
    assert "29 bytes" in large.value.message  # UTF-8 bytes, not characters
    with pytest.raises(InvalidInput) as deep:
        jsonlimits.loads(nested(50_000), what="field 'config'")
    assert (deep.value.status_code, deep.value.code) == (422, "too_deep")
    assert deep.value.message == "field 'config' is nested deeper than 64 levels"
    with pytest.raises(InvalidInput) as bad:
        jsonlimits.loads("{nope", what="field 'config'")
    assert (bad.value.code, bad.value.message) == (
        "invalid_request",
        "field 'config' must be JSON text",
    )


def test_check_holds_the_same_limits_for_decoded_values() -> None:
    jsonlimits.check({"a": [1, 2]}, what="the config", max_bytes=13)
    with pytest.raises(TooLarge) as large:
        jsonlimits.check({"a": "x" * 100}, what="the config", max_bytes=50, too_large_code="c")
    assert large.value.code == "c"
    for depth in (65, 5_000):
        value: Any = 1
        for _ in range(depth):
            value = [value]
        with pytest.raises(InvalidInput) as deep:
            jsonlimits.check(value, what="the config")
        assert deep.value.code == "too_deep"
    with pytest.raises(InvalidInput):
        jsonlimits.check({"a": object()}, what="the config")


# -- the broker ---------------------------------------------------------------------------------


async def fake_plugin(path: Path, body: bytes) -> asyncio.Server:
    """A plugin on a unix socket that answers every call 200 with ``body``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(serve, path=str(path))


def route_to(plugin_id: str, path: Path) -> Route:
    ext = Extension(point=ExtensionPoint.WORKFLOW, name="run")
    return Route(plugin_id, "1.0.0", UnixEndpoint(path), (ext,))


def test_a_deep_answer_fails_its_provider_only(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        deep = b'{"output":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        barely = b'{"output":' + nested(64).encode() + b"}"
        servers = [
            await fake_plugin(tmp_path / "deep.sock", deep),
            await fake_plugin(tmp_path / "barely.sock", barely),
            await fake_plugin(tmp_path / "fine.sock", b'{"output":{"words":3}}'),
        ]
        broker = Broker()
        for name in ("deep", "barely", "fine"):
            broker.set_route(route_to(name, tmp_path / f"{name}.sock"))
        try:
            return await broker.execute("workflow", {"text": "a b c"}, mode="all")
        finally:
            await broker.aclose()
            for server in servers:
                server.close()

    results = {entry["plugin"]: entry for entry in asyncio.run(scenario())["results"]}
    assert results["deep"]["status"] == 502
    assert results["deep"]["error"]["code"] == "invalid_answer"
    assert "output" not in results["deep"]
    assert results["barely"]["output"] == json.loads(nested(64))
    assert results["fine"]["output"] == {"words": 3}


def test_an_input_nested_too_deep_is_refused_before_any_call(tmp_path: Path) -> None:
    async def scenario(payload: Any) -> Any:
        server = await fake_plugin(tmp_path / "p.sock", b'{"output":1}')
        broker = Broker()
        broker.set_route(route_to("p", tmp_path / "p.sock"))
        try:
            return await broker.execute("workflow", payload, mode="pipeline")
        finally:
            await broker.aclose()
            server.close()

    assert asyncio.run(scenario(json.loads(nested(64))))["output"] == 1
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(scenario(json.loads(nested(65))))
    assert refused.value.code == "too_deep"
    assert refused.value.message == "the input is nested deeper than 64 levels"


def test_a_deep_error_answer_from_a_plugin_is_shown_as_text() -> None:
    """A plugin answering an error nested 100,000 deep: no RecursionError, a short text."""
    from orchestrator.broker.client import _error_text

    body = b"[" * 100_000 + b"]" * 100_000
    assert _error_text(body) == body[:200].decode()
    assert _error_text(b'{"error": {"code": "x", "message": "y"}}') == "x: y"
