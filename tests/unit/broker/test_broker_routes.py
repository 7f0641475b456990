"""The broker's routing table: providers of a point follow every route change at once."""

from __future__ import annotations

from pathlib import Path

from orchestrator.broker import Broker, Route
from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import UnixEndpoint


def route(plugin_id: str, version: str = "1.0.0", **priorities: int) -> Route:
    extensions = tuple(
        Extension(point=ExtensionPoint(point), name=f"{plugin_id}-{point}", priority=priority)
        for point, priority in priorities.items()
    )
    return Route(plugin_id, version, UnixEndpoint(Path(f"/nowhere/{plugin_id}.sock")), extensions)


def names(broker: Broker, point: str) -> list[str]:
    return [r.plugin_id for r, _ in broker.providers(point)]


def test_providers_follow_set_and_drop_route() -> None:
    broker = Broker()
    assert names(broker, "analyzer") == []
    broker.set_route(route("b", analyzer=100))
    broker.set_route(route("a", analyzer=100, export=5))
    broker.set_route(route("c", analyzer=500))
    # Highest priority first; ties by plugin id.
    assert names(broker, "analyzer") == ["c", "a", "b"]
    assert names(broker, "export") == ["a"]
    # A reload that changes the priority and drops a point is seen by the next call.
    broker.set_route(route("a", "1.1.0", analyzer=900))
    assert names(broker, "analyzer") == ["a", "c", "b"]
    assert names(broker, "export") == []
    assert broker.providers("analyzer")[0][0].version == "1.1.0"
    broker.drop_route("c")
    assert names(broker, "analyzer") == ["a", "b"]


def test_callers_cannot_change_the_table_through_the_list() -> None:
    broker = Broker()
    broker.set_route(route("a", analyzer=1))
    broker.providers("analyzer").clear()
    assert names(broker, "analyzer") == ["a"]


def test_unknown_points_have_no_providers_and_are_not_kept() -> None:
    broker = Broker()
    broker.set_route(route("a", analyzer=1))
    assert broker.providers("no-such-point") == []
    assert set(broker.table._providers) <= {"analyzer"}
