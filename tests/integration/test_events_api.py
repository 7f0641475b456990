"""The event log: lifecycle transitions and plugin publications land in it, admins emit, and
readers page through it or follow it live over server-sent events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator
from tests.integration.test_host_api import spy

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def orch_events(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-events",
        restart_backoff_s="30",
        event_summary_interval_s="1",
    ) as o:
        yield o


def events(orch: OrchestratorProcess, **params: Any) -> list[dict[str, Any]]:
    r = orch.client.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def test_lifecycle_transitions_are_events(orch_events: OrchestratorProcess, tmp_path: Path) -> None:
    pid = "com.summit-tests.events-probe"
    assert orch_events.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    assert orch_events.client.post(f"/v1/plugins/{pid}/enable").status_code == 200
    crash = orch_events.client.post(
        "/v1/extension-points/workflow/execute",
        json={"input": {"action": "exit", "code": 7}, "plugins": [pid]},
    )
    assert crash.status_code >= 400, crash.text
    orch_events.wait_state(pid, "FAILED")
    log = events(orch_events, type="plugin.*", subject=pid)
    assert [e["type"] for e in log] == [
        "plugin.installed",
        "plugin.enabling",
        "plugin.enabled",
        "plugin.failed",
    ]
    failed = log[-1]
    assert failed["source"] == "orchestrator" and failed["subject"] == pid
    assert failed["payload"]["from"] == "ACTIVE" and failed["payload"]["to"] == "FAILED"
    assert "exited with code 7" in failed["payload"]["reason"]
    assert orch_events.client.delete(f"/v1/plugins/{pid}").status_code == 204
    assert events(orch_events, type="plugin.uninstalled", subject=pid)[0]["payload"]["to"] == (
        "UNLOADED"
    )


def test_admins_emit_and_readers_page_in_order(orch_events: OrchestratorProcess) -> None:
    ids = []
    for n in range(5):
        r = orch_events.client.post(
            "/v1/events", json={"type": "test.paged", "subject": "s1", "payload": {"n": n}}
        )
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "api:admin"
        ids.append(r.json()["id"])
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"type": "test.paged", "limit": 2}
        if cursor:
            params["after"] = cursor
        page = orch_events.client.get("/v1/events", params=params).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == ids
    assert [e["payload"]["n"] for e in events(orch_events, type="test.*", subject="s1")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    for bad in ("nodot", "bad.*", "has space.x"):
        r = orch_events.client.post("/v1/events", json={"type": bad})
        assert r.status_code == 422, bad
    viewer = orch_events.client.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()
    with httpx.Client(
        base_url=orch_events.url, headers={"Authorization": f"Bearer {viewer['token']}"}
    ) as http:
        assert http.post("/v1/events", json={"type": "a.b"}).status_code == 403
        assert http.get("/v1/events").status_code == 200


def test_the_stream_follows_new_events_live(orch_events: OrchestratorProcess) -> None:
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def follow() -> None:
        with (
            httpx.Client(
                base_url=orch_events.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            ) as http,
            http.stream("GET", "/v1/events/stream", params={"type": "live.*"}) as r,
        ):
            for line in r.iter_lines():
                if line.startswith(": following"):
                    ready.set()
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if len(received) == 2:
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert ready.wait(10)
    orch_events.client.post("/v1/events", json={"type": "other.skip"})
    orch_events.client.post("/v1/events", json={"type": "live.one", "payload": 1})
    orch_events.client.post("/v1/events", json={"type": "live.two", "payload": 2})
    reader.join(15)
    assert [(e["type"], e["payload"]) for e in received] == [("live.one", 1), ("live.two", 2)]


def test_plugin_publications_are_logged_with_their_source(
    orch_events: OrchestratorProcess, tmp_path: Path
) -> None:
    pid = "com.summit.tests.hostspy.events"
    folder = make_plugin(tmp_path / "spy", "hostspy", id=pid)
    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    assert orch_events.install_dir(folder, approve=manifest["permissions"]).status_code == 201
    assert orch_events.client.post(f"/v1/plugins/{pid}/enable").status_code == 200
    try:
        published = spy(orch_events, pid, "events.publish", "spy.done", {"ok": True})
        assert published["ok"], published
        # An undeclared type is refused, audited, and announced as a security event.
        undeclared = spy(orch_events, pid, "events.publish", "spy.other", {})
        assert not undeclared["ok"], undeclared
        deadline = time.monotonic() + 5
        while not (refusals := events(orch_events, type="security.refused", subject=pid)):
            assert time.monotonic() < deadline, "no security.refused event"
            time.sleep(0.1)
        assert refusals[0]["payload"]["operation"] == "events.publish"
        # The broker's calls are summarised per point (every second here).
        while not (
            summaries := [
                e
                for e in events(orch_events, type="extension.executed", subject="workflow")
                if pid in e["payload"]["plugins"]
            ]
        ):
            assert time.monotonic() < deadline + 5, "no extension.executed summary"
            time.sleep(0.2)
        assert summaries[0]["payload"]["plugins"][pid]["calls"] >= 1
        deadline = time.monotonic() + 5
        while not (log := events(orch_events, type="spy.done")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (event,) = log
        assert event["id"] == published["result"]
        assert event["source"] == f"plugin:{pid}" and event["payload"] == {"ok": True}
    finally:
        orch_events.client.post(f"/v1/plugins/{pid}/disable")
        orch_events.client.delete(f"/v1/plugins/{pid}")


def _received(orch: OrchestratorProcess, pid: str) -> list[dict[str, Any]]:
    r = orch.client.post(
        "/v1/extension-points/workflow/execute", json={"input": {}, "plugins": [pid]}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["results"][0]["output"])


def _wait_received(
    orch: OrchestratorProcess, pid: str, count: int, timeout_s: float = 20
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    got = _received(orch, pid)
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _received(orch, pid)
    return got


def test_subscribers_get_their_events_in_order_even_when_briefly_away(
    orch_events: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    listener, deaf = "com.summit-tests.listener", "com.summit-tests.deaf"
    assert (
        orch_events.install_dir(
            make_plugin(tmp_path / "l", "listener"), approve=["events:subscribe"]
        ).status_code
        == 201
    )
    # The same code without the subscription: it must never be handed anything.
    assert (
        orch_events.install_dir(
            make_plugin(tmp_path / "d", "listener", id=deaf, events={}, permissions=[])
        ).status_code
        == 201
    )
    for pid in (listener, deaf):
        assert orch_events.client.post(f"/v1/plugins/{pid}/enable").status_code == 200
    try:

        def emit(event_type: str, n: int, subject: str = "doc-1") -> None:
            r = orch_events.client.post(
                "/v1/events", json={"type": event_type, "subject": subject, "payload": n}
            )
            assert r.status_code == 201, r.text

        for n in range(3):
            emit("document.created", n)
        emit("invoice.paid", 99)  # not subscribed
        got = _wait_received(orch_events, listener, 3)
        assert [(e["type"], e["n"]) for e in got] == [("document.created", n) for n in range(3)]

        # Paused (as if stuck): events wait and are retried, still in order, once it is back.
        container = docker_client.containers.get(orch_events.plugin(listener)["container"]["id"])
        container.pause()
        try:
            for n in range(3, 6):
                emit("document.updated", n)
            time.sleep(2)
        finally:
            container.unpause()
        got = _wait_received(orch_events, listener, 6, timeout_s=40)
        assert [e["n"] for e in got] == [0, 1, 2, 3, 4, 5]
        assert _received(orch_events, deaf) == []
    finally:
        for pid in (listener, deaf):
            orch_events.client.post(f"/v1/plugins/{pid}/disable")
            orch_events.client.delete(f"/v1/plugins/{pid}")
