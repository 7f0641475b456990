"""The call profile: each successful call's phases, per plugin, as percentiles."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.broker.h1pool import Phases
from orchestrator.broker.profile import PHASES, CallProfile
from orchestrator.broker.transport import H1Response
from tests.unit.broker.test_broker_calls import FakePlugins, add, execute, make_broker

MS = 0.001


def answer(output: Any, phases: Phases) -> H1Response:
    body = json.dumps({"output": output}).encode()
    return H1Response(200, [(b"content-type", b"application/json")], body, phases)


def test_a_call_records_where_its_time_went() -> None:
    plugins = FakePlugins()
    broker = make_broker(plugins)

    async def handler(target: bytes, request: dict[str, Any]) -> H1Response:
        return answer(
            {"n": 1}, Phases(waited_s=2 * MS, connect_s=3 * MS, peer_s=40 * MS, read_s=5 * MS)
        )

    async def broken(target: bytes, request: dict[str, Any]) -> H1Response:
        return H1Response(500, [], b"{}", Phases(peer_s=1.0))

    add(broker, plugins, "p", handler)
    add(broker, plugins, "q", broken)
    for _ in range(3):
        execute(broker)
    summary = broker.profile.summary("p")
    assert summary["calls"] == 3
    phases = summary["phases"]
    assert set(phases) == set(PHASES)
    assert phases["connect"]["p50"] == pytest.approx(3.0)
    assert phases["plugin"]["p99"] == pytest.approx(40.0)
    assert phases["slot"]["p50"] >= 2.0  # the pool's wait, plus the broker's admission
    assert phases["check"]["p50"] >= 5.0  # reading the rest, plus decoding and checking
    assert summary["total"]["p50"] >= 50.0
    assert broker.profile.summary("q")["calls"] == 0  # failed calls are not profiled

    broker.drop_route("p")
    assert broker.profile.summary("p")["calls"] == 0


def test_percentiles_interpolate_and_the_ring_keeps_the_last_calls() -> None:
    profile = CallProfile(keep=100)
    for i in range(1, 201):  # 1..200 ms; the ring keeps 101..200
        profile.record("p", 0, 0, i * MS, 0)
    plugin = profile.summary("p")["phases"]["plugin"]
    assert profile.summary("p")["calls"] == 100
    assert plugin["p50"] == pytest.approx(150.5)
    assert plugin["max"] == pytest.approx(200.0)
    assert plugin["mean"] == pytest.approx(150.5)
    assert profile.summary("nobody")["phases"]["plugin"]["p50"] is None
