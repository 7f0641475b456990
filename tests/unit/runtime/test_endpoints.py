"""Endpoints: parsed once, printed back the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runtime.endpoints import TcpEndpoint, UnixEndpoint, parse_endpoint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:///run/s/plugin.sock", UnixEndpoint(Path("/run/s/plugin.sock"))),
        ("tcp://10.1.2.3:8080", TcpEndpoint("10.1.2.3", 8080)),
        ("tcp://[fd00::1]:8080", TcpEndpoint("fd00::1", 8080)),
        ("tcp://plugin.summit-plugins.svc:8080", TcpEndpoint("plugin.summit-plugins.svc", 8080)),
    ],
)
def test_round_trip(text: str, expected: object) -> None:
    assert parse_endpoint(text) == expected
    assert str(parse_endpoint(text)) == text


@pytest.mark.parametrize(
    "text",
    ["", "http://x:1", "unix://relative.sock", "tcp://x", "tcp://:80", "tcp://x:0", "tcp://[zz]:1"],
)
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_parts() -> None:
    assert UnixEndpoint(Path("/a/b/plugin.sock")).folder == Path("/a/b")
    assert TcpEndpoint("fd00::1", 80).base_url == "http://[fd00::1]:80"
