"""Webhooks against a real HTTP receiver on loopback: signed deliveries, filters and
transformations, retries, dead letters, replay, auto-pause, 410, outages, a SIGKILLed
orchestrator, two orchestrators sharing the work through Redis, a slow receiver, a burst."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from orchestrator.events.webhooks import verify_signature
from tests.conftest import temp_database
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.receiver import Receiver
from tests.fixtures.waiting import wait_until
from tests.integration.conftest import sqlite_orchestrator, start_orchestrator

pytestmark = [pytest.mark.docker]

KEY = Fernet.generate_key().decode()
REDIS_URL = os.environ.get("SUMMIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
FAST_RETRIES = {"max_attempts": 3, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}
SETTINGS = {
    "webhook_allow_private": '["127.0.0.0/8"]',
    "delivery_poll_s": "0.2",
}


@pytest.fixture(scope="module")
def orch_hooks(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-webhooks",
        event_max_payload_bytes="4096",
        **SETTINGS,
    ) as o:
        yield o


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def subscribe(orch: OrchestratorProcess, url: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("types", ["*"])
    r = orch.client.post("/v1/webhooks", json={"url": url, **spec})
    assert r.status_code == 201, r.text
    return dict(r.json())


def emit(orch: OrchestratorProcess, event_type: str, payload: Any = None, **extra: Any) -> str:
    r = orch.client.post("/v1/events", json={"type": event_type, "payload": payload, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def emit_many(orch: OrchestratorProcess, event_type: str, n: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [
            {"type": event_type, "subject": f"s{i % 7}", "payload": {"n": i}}
            for i in range(start, min(n, start + 1000))
        ]
        r = orch.client.post("/v1/events/batch", json={"events": batch})
        assert r.status_code == 201, r.text
        ids += r.json()["ids"]
    return ids


def hook_view(orch: OrchestratorProcess, hook_id: str) -> dict[str, Any]:
    r = orch.client.get(f"/v1/webhooks/{hook_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_deliveries_are_signed_filtered_and_transformed(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    plain = subscribe(orch_hooks, receiver.url("/plain"), types=["order.*"])
    big = subscribe(
        orch_hooks,
        receiver.url("/big"),
        types=["order.created"],
        where=[{"field": "payload.total", "op": "gte", "value": 100}],
        transform={"jmespath": "{order: payload.id, amount: payload.total, kind: type}"},
    )
    templ = subscribe(
        orch_hooks,
        receiver.url("/templ"),
        types=["order.created"],
        where=[{"field": "payload.region", "op": "in", "value": ["eu"]}],
        transform={
            "template": {
                "text": "order {{payload.id}} in {{ payload.region }}",
                "total": "{{payload.total}}",
            }
        },
    )
    assert plain["secret"].startswith("whsec_") and plain["status"] == "active"
    small = emit(orch_hooks, "order.created", {"id": "o1", "total": 5, "region": "eu"})
    large = emit(orch_hooks, "order.created", {"id": "o2", "total": 500, "region": "us"})
    emit(orch_hooks, "invoice.created", {"id": "i1"})  # matches none of them

    hits = receiver.wait_for("/plain", 2)
    assert [h.headers["summit-event-id"] for h in hits] == [small, large]
    for hit in hits:
        assert verify_signature(plain["secret"], hit.body, hit.headers["summit-signature"])
        assert not verify_signature(big["secret"], hit.body, hit.headers["summit-signature"])
        assert hit.headers["summit-webhook-id"] == plain["id"]
        assert hit.headers["content-type"] == "application/json"
    assert hits[0].json()["payload"] == {"id": "o1", "total": 5, "region": "eu"}
    assert hits[0].json()["type"] == "order.created" and hits[0].json()["id"] == small

    (b,) = receiver.wait_for("/big", 1)
    assert b.json() == {"order": "o2", "amount": 500, "kind": "order.created"}
    (t,) = receiver.wait_for("/templ", 1)
    assert t.json() == {"text": "order o1 in eu", "total": 5}
    time.sleep(0.5)
    assert len(receiver.at("/big")) == 1 and len(receiver.at("/templ")) == 1

    history = orch_hooks.client.get(f"/v1/webhooks/{plain['id']}/deliveries").json()
    assert [d["status"] for d in history["deliveries"]] == ["delivered", "delivered"]
    assert all(d["last_status"] == 200 and d["attempts"] == 1 for d in history["deliveries"])
    one = orch_hooks.client.get(
        f"/v1/webhooks/{plain['id']}/deliveries/{history['deliveries'][0]['id']}"
    ).json()
    assert one["event"]["id"] == large and one["attempts_log"][0]["status_code"] == 200
    assert "secret" not in hook_view(orch_hooks, plain["id"])
    for hook in (plain, big, templ):
        assert orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204


def test_failures_retry_then_dead_letter_then_replay(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    receiver.behave("/flaky", status=500)
    hook = subscribe(orch_hooks, receiver.url("/flaky"), types=["dl.*"], policy=FAST_RETRIES)
    first = emit(orch_hooks, "dl.one", {"n": 1})
    second = emit(orch_hooks, "dl.two", {"n": 2})

    def dead() -> list[dict[str, Any]]:
        r = orch_hooks.client.get(f"/v1/webhooks/{hook['id']}/dead-letters")
        return list(r.json()["deliveries"]) if len(r.json()["deliveries"]) == 2 else []

    letters = wait_until(dead, what="two dead letters")
    assert {d["event_id"] for d in letters} == {first, second}
    assert all(d["attempts"] == 3 and d["last_status"] == 500 for d in letters)
    detail = orch_hooks.client.get(
        f"/v1/webhooks/{hook['id']}/deliveries/{letters[0]['id']}"
    ).json()
    assert [a["status_code"] for a in detail["attempts_log"]] == [500, 500, 500]
    assert receiver.at("/flaky") == []

    receiver.behave("/flaky", status=200)
    r = orch_hooks.client.post(f"/v1/webhooks/{hook['id']}/replay", json={"dead_letters": True})
    assert r.status_code == 202 and r.json()["queued"] == 2, r.text
    receiver.wait_for("/flaky", 2)
    assert sorted(receiver.event_ids("/flaky")) == sorted([first, second])
    assert (
        orch_hooks.client.get(f"/v1/webhooks/{hook['id']}/dead-letters").json()["deliveries"] == []
    )

    # One delivery again, then a time range again.
    one = orch_hooks.client.post(
        f"/v1/webhooks/{hook['id']}/replay", json={"delivery_id": letters[0]["id"]}
    )
    assert one.json()["queued"] == 1
    wait_until(lambda: len(receiver.at("/flaky")) == 3, what="single replay")
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    ranged = orch_hooks.client.post(f"/v1/webhooks/{hook['id']}/replay", json={"since": since})
    assert ranged.json()["queued"] == 2, ranged.text
    wait_until(lambda: len(receiver.at("/flaky")) == 5, what="range replay")
    assert orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204


def test_gone_disables_and_repeated_dead_letters_pause(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    receiver.behave("/gone", status=410)
    gone = subscribe(orch_hooks, receiver.url("/gone"), types=["gone.*"], policy=FAST_RETRIES)
    emit(orch_hooks, "gone.one")
    view = wait_until(
        lambda: (v := hook_view(orch_hooks, gone["id"]))["status"] == "disabled" and v,
        what="disabled",
    )
    assert "410" in view["status_reason"]
    assert view["deliveries"]["dead"] == 1  # one attempt only: 410 is not retried

    receiver.behave("/down", status=503)
    policy = {"max_attempts": 1, "backoff_base_s": 0.05, "backoff_cap_s": 0.1, "pause_after": 2}
    paused = subscribe(orch_hooks, receiver.url("/down"), types=["pause.*"], policy=policy)
    for n in range(3):
        emit(orch_hooks, "pause.x", {"n": n})
    view = wait_until(
        lambda: (v := hook_view(orch_hooks, paused["id"]))["status"] == "paused" and v,
        what="paused",
    )
    assert "in a row" in view["status_reason"]
    announced = orch_hooks.client.get(
        "/v1/events", params={"type": "webhook.*", "subject": paused["id"]}
    ).json()["events"]
    assert [e["type"] for e in announced] == ["webhook.paused"]
    disabled = orch_hooks.client.get(
        "/v1/events", params={"type": "webhook.disabled", "subject": gone["id"]}
    ).json()["events"]
    assert len(disabled) == 1

    # While paused nothing new is owed; resuming (with a healthy receiver) sends again.
    emit(orch_hooks, "pause.while-paused")
    receiver.behave("/down", status=200)
    resumed = orch_hooks.client.patch(f"/v1/webhooks/{paused['id']}", json={"status": "active"})
    assert resumed.status_code == 200 and resumed.json()["consecutive_dead"] == 0
    emit(orch_hooks, "pause.after")
    (hit,) = receiver.wait_for("/down", 1)
    assert hit.headers["summit-event-type"] == "pause.after"
    for hook in (gone, paused):
        orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}")


def test_receiver_down_for_a_while_gets_everything_once(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    policy = {"max_attempts": 50, "backoff_base_s": 0.05, "backoff_cap_s": 0.3}
    hook = subscribe(orch_hooks, receiver.url("/outage"), types=["outage.*"], policy=policy)
    receiver.stop()
    ids = [emit(orch_hooks, "outage.tick", {"n": n}) for n in range(20)]
    wait_until(
        lambda: (
            hook_view(orch_hooks, hook["id"])["deliveries"]["pending"] == 20
            and orch_hooks.client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["deliveries"][
                0
            ]["attempts"]
            >= 2
        ),
        what="failed attempts while the receiver is down",
    )
    receiver.start()
    receiver.wait_for("/outage", 20)
    time.sleep(1.0)  # anything sent twice would arrive by now
    assert sorted(receiver.event_ids("/outage")) == sorted(ids)
    assert receiver.duplicates("/outage") == {}
    wait_until(
        lambda: hook_view(orch_hooks, hook["id"])["deliveries"]["delivered"] == 20,
        what="20 results written",
    )
    orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}")


def test_a_slow_receiver_does_not_hold_up_the_others(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    receiver.behave("/slow", delay_s=2.0)
    slow = subscribe(orch_hooks, receiver.url("/slow"), types=["iso.*"], policy={"timeout_s": 30})
    fast = subscribe(orch_hooks, receiver.url("/fast"), types=["iso.*"])
    ids = emit_many(orch_hooks, "iso.tick", 100)
    receiver.wait_for("/fast", 100, timeout_s=20)
    slow_so_far = len(receiver.at("/slow"))
    assert sorted(receiver.event_ids("/fast")) == sorted(ids)
    # 100 events at 16 concurrent 2-second answers need at least 14 s; the fast receiver had
    # them all while the slow one had at most a couple of rounds.
    assert slow_so_far <= 48, slow_so_far
    # Removed while its deliveries are in flight: their results find nothing to write to.
    for hook in (slow, fast):
        assert orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    time.sleep(2.5)  # the slow receiver's answers to what was in flight arrive
    db = sqlite3.connect(orch_hooks.database_url.removeprefix("sqlite:///"))
    try:
        orphans = db.execute(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id NOT IN "
            "(SELECT id FROM deliveries)"
        ).fetchone()[0]
        left = db.execute(
            "SELECT count(*) FROM deliveries WHERE webhook_id IN (?, ?)", (slow["id"], fast["id"])
        ).fetchone()[0]
    finally:
        db.close()
    assert (orphans, left) == (0, 0)


def test_bad_input_is_refused_clearly(orch_hooks: OrchestratorProcess, receiver: Receiver) -> None:
    def refused(spec: dict[str, Any], status: int = 422) -> str:
        r = orch_hooks.client.post("/v1/webhooks", json=spec)
        assert r.status_code == status, (spec, r.text)
        error = r.json()["error"]
        assert error["code"] and error["message"]
        return str(error["message"])

    ok = receiver.url("/x")
    refused({"url": "not a url", "types": ["*"]})
    refused({"url": "ftp://example.com/x", "types": ["*"]})
    refused({"url": "http://user:pw@example.com/", "types": ["*"]})
    for internal in (
        "http://[::1]:8080/x",  # loopback outside the allowed 127.0.0.0/8
        "http://10.1.2.3/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://0.0.0.0/x",
    ):
        assert "address" in refused({"url": internal, "types": ["*"]}), internal
    assert "op must be" in refused(
        {"url": ok, "types": ["*"], "where": [{"field": "payload.x", "op": "like", "value": 1}]}
    )
    assert "field" in refused(
        {"url": ok, "types": ["*"], "where": [{"field": "secret.x", "value": 1}]}
    )
    refused({"url": ok, "types": []})
    refused({"url": ok, "types": ["bad pattern!"]})
    assert "jmespath" in refused({"url": ok, "types": ["*"], "transform": {"jmespath": "a.["}})
    refused({"url": ok, "types": ["*"], "transform": {"template": "{{nope.x}}"}})
    refused({"url": ok, "types": ["*"], "transform": {"xslt": "..."}})
    refused({"url": ok, "types": ["*"], "policy": {"max_attempts": 0}})
    refused({"url": ok, "types": ["*"], "policy": {"backoff_base_s": 10, "backoff_cap_s": 1}})
    refused({"url": ok, "types": ["*"], "secret": "short"})
    assert orch_hooks.client.get("/v1/webhooks").json()["webhooks"] == []  # nothing half-made

    for path in (
        "/v1/webhooks/wh_nope",
        "/v1/webhooks/wh_nope/deliveries",
        "/v1/webhooks/wh_nope/dead-letters",
    ):
        r = orch_hooks.client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    assert orch_hooks.client.delete("/v1/webhooks/wh_nope").status_code == 404
    assert (
        orch_hooks.client.post(
            "/v1/webhooks/wh_nope/replay", json={"dead_letters": True}
        ).status_code
        == 404
    )
    hook = subscribe(orch_hooks, ok)
    assert orch_hooks.client.post(f"/v1/webhooks/{hook['id']}/replay", json={}).status_code == 422
    assert orch_hooks.client.get(f"/v1/webhooks/{hook['id']}/deliveries/999999").status_code == 404

    # A payload over the cap (4 KiB here) is refused and logs nothing.
    before = len(orch_hooks.client.get("/v1/events", params={"type": "big.*"}).json()["events"])
    r = orch_hooks.client.post("/v1/events", json={"type": "big.one", "payload": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    after = len(orch_hooks.client.get("/v1/events", params={"type": "big.*"}).json()["events"])
    assert before == after
    orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}")


def test_ids_past_the_id_columns_are_refused_not_a_server_error(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    # Found by fuzzing the API: SQLite cannot bind a number past 64 bits, PostgreSQL will not
    # compare an INTEGER id with one past 32 bits, and each of these answered 500.
    hook = subscribe(orch_hooks, receiver.url("/ids"))
    base = f"/v1/webhooks/{hook['id']}"
    huge = 2**64 + 1
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{base}/deliveries/{huge}", {}),
        ("GET", f"{base}/deliveries/{2**31}", {}),  # the same on SQLite as on PostgreSQL
        ("GET", f"{base}/deliveries/0", {}),
        ("GET", f"{base}/deliveries", {"params": {"before": huge}}),
        ("GET", f"{base}/deliveries", {"params": {"before": -huge}}),
        ("GET", f"{base}/dead-letters", {"params": {"before": huge}}),
        ("POST", f"{base}/replay", {"json": {"delivery_id": huge}}),
    ]
    for method, path, options in requests:
        r = orch_hooks.client.request(method, path, **options)
        assert r.status_code == 422, (method, path, options, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    # The largest id there can be is still looked up.
    largest = 2**31 - 1
    assert orch_hooks.client.get(f"{base}/deliveries/{largest}").status_code == 404
    page = orch_hooks.client.get(f"{base}/deliveries", params={"before": largest}).json()
    assert page == {"deliveries": [], "next": None}
    orch_hooks.client.delete(base)


def test_pending_deliveries_survive_sigkill(
    base_image: str, docker_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    orch = start_orchestrator(tmp_path, f"sqlite:///{tmp_path / 'summit.db'}", **SETTINGS)
    try:
        policy = {"max_attempts": 50, "backoff_base_s": 0.1, "backoff_cap_s": 0.5}
        hook = subscribe(orch, receiver.url("/crash"), types=["crash.*"], policy=policy)
        receiver.stop()
        ids = emit_many(orch, "crash.tick", 300)
        orch.kill()
        receiver.start()
        orch.start()
        receiver.wait_for("/crash", 300)
        assert sorted(set(receiver.event_ids("/crash"))) == sorted(ids)
        assert receiver.duplicates("/crash") == {}
        # The receiver answers before the sender writes the results down.
        wait_until(
            lambda: hook_view(orch, hook["id"])["deliveries"]["delivered"] == 300,
            what="300 results written",
        )
    finally:
        orch.cleanup(docker_client)


def replica(tmp: Path, database_url: str, instance: str) -> OrchestratorProcess:
    """One replica of a deployment: the replicas share the database, Redis and the instance
    name and the key of secrets at rest; each has its own state folder."""
    env = {**SETTINGS, "redis_url": REDIS_URL, "scan_fail_on": "never", "secrets_key": KEY}
    orch = OrchestratorProcess(
        database_url=database_url,
        state_dir=tmp / "state",
        instance=instance,
        env={f"SUMMIT_{k.upper()}": v for k, v in env.items()},
    )
    orch.start()
    return orch


@pytest.mark.redis
@pytest.mark.postgres
def test_two_orchestrators_with_redis_deliver_each_event_once(
    base_image: str, docker_client: Any, tmp_path: Path, receiver: Receiver
) -> None:
    instance = f"summit-test-{secrets.token_hex(4)}"
    with temp_database("postgres", tmp_path) as url:
        a = replica(tmp_path / "a", url, instance)
        b = replica(tmp_path / "b", url, instance)
        try:
            subscribe(a, receiver.url("/pair"), types=["pair.*"])
            followed: list[str] = []
            ready = threading.Event()

            def follow() -> None:  # a live tail on B sees what A logged
                with (
                    httpx.Client(
                        base_url=b.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
                    ) as http,
                    http.stream("GET", "/v1/events/stream", params={"type": "pair.*"}) as r,
                ):
                    for line in r.iter_lines():
                        if line.startswith(": following"):
                            ready.set()
                        if line.startswith("data: "):
                            followed.append(json.loads(line[6:])["id"])
                            if len(followed) == 2:
                                return

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            assert ready.wait(10)
            ids = [emit(a, "pair.a"), emit(a, "pair.a")]
            for n in range(200):
                ids.append(emit(a if n % 2 else b, "pair.tick", {"n": n}))
            ids += emit_many(b, "pair.bulk", 800)
            receiver.wait_for("/pair", len(ids), timeout_s=60)
            time.sleep(1.0)
            assert sorted(set(receiver.event_ids("/pair"))) == sorted(ids)
            assert receiver.duplicates("/pair") == {}
            reader.join(10)
            assert followed == ids[:2]
        finally:
            for o in (a, b):
                o.cleanup(docker_client)
            client = redis.Redis.from_url(REDIS_URL)
            client.delete(f"{instance}:events")
            client.close()


@pytest.mark.slow
def test_a_burst_of_ten_thousand_events_is_delivered(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    hook = subscribe(orch_hooks, receiver.url("/burst"), types=["burst.*"])
    receiver.record_bodies = False
    started = time.monotonic()
    ids = emit_many(orch_hooks, "burst.tick", 10_000)
    receiver.wait_for("/burst", 10_000, timeout_s=240)
    elapsed = time.monotonic() - started
    assert sorted(set(receiver.event_ids("/burst"))) == sorted(ids), f"after {elapsed:.1f} s"
    assert receiver.duplicates("/burst") == {}
    orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}")


def test_the_cli_manages_webhooks(orch_hooks: OrchestratorProcess, receiver: Receiver) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    runner = CliRunner()
    env = {"SUMMIT_URL": orch_hooks.url, "SUMMIT_ADMIN_TOKEN": TOKEN}

    def summit(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    receiver.behave("/cli", status=500)
    out = summit(
        "webhook",
        "add",
        receiver.url("/cli"),
        "--type",
        "cli.*",
        "--policy",
        '{"max_attempts": 1}',
        "--jmespath",
        "payload",
    )
    hook_id = out.split()[1].rstrip(";")
    assert hook_id.startswith("wh_") and "whsec_" in out
    assert hook_id in [h["id"] for h in json.loads(summit("webhook", "list", "--json"))]
    emit(orch_hooks, "cli.one", {"n": 1})
    wait_until(lambda: hook_view(orch_hooks, hook_id)["deliveries"]["dead"] == 1, what="dead")
    (letter,) = json.loads(summit("webhook", "deliveries", hook_id, "--dead", "--json"))
    assert letter["status"] == "dead" and letter["last_status"] == 500
    receiver.behave("/cli", status=200)
    assert "queued 1" in summit("webhook", "replay", hook_id, "--dead")
    (hit,) = receiver.wait_for("/cli", 1)
    assert hit.json() == {"n": 1}
    assert "paused" in summit("webhook", "pause", hook_id)
    assert "active" in summit("webhook", "resume", hook_id)
    # Bad input: one line, exit code 2.
    bad = runner.invoke(app, ["webhook", "add", "http://10.0.0.1/x", "--type", "*"], env=env)
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output
    bad = runner.invoke(
        app, ["webhook", "add", receiver.url(), "--type", "*", "--where", "{"], env=env
    )
    assert bad.exit_code == 2 and "not JSON" in bad.output, bad.output
    assert "removed" in summit("webhook", "rm", hook_id)
    assert runner.invoke(app, ["webhook", "rm", hook_id], env=env).exit_code == 2


def test_a_receiver_that_does_not_answer_in_time_is_retried(
    orch_hooks: OrchestratorProcess, receiver: Receiver
) -> None:
    receiver.behave("/late", delay_s=1.0)
    policy = {"max_attempts": 20, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "timeout_s": 0.2}
    hook = subscribe(orch_hooks, receiver.url("/late"), types=["late.*"], policy=policy)
    event_id = emit(orch_hooks, "late.one")

    def timed_out() -> dict[str, Any] | None:
        page = orch_hooks.client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
        first = page["deliveries"][0] if page["deliveries"] else None
        return first if first and first["attempts"] >= 2 else None

    late = wait_until(timed_out, what="two timed-out attempts")
    assert late["status"] == "pending" and "no answer within 0.2 s" in late["last_error"]
    receiver.behave("/late", delay_s=0.0)
    wait_until(
        lambda: hook_view(orch_hooks, hook["id"])["deliveries"]["delivered"] == 1,
        what="delivered once the receiver is quick again",
    )
    assert event_id in receiver.event_ids("/late")
    orch_hooks.client.delete(f"/v1/webhooks/{hook['id']}")


def test_old_events_and_finished_deliveries_are_pruned_but_dead_letters_stay(
    base_image: str,
    docker_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: Receiver,
) -> None:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-retention",
        event_retention_s="2",
        event_prune_interval_s="0.5",
        **SETTINGS,
    ) as orch:
        receiver.behave("/dead", status=500)
        ok = subscribe(orch, receiver.url("/ok"), types=["keep.*", "gone.*"])
        dead = subscribe(orch, receiver.url("/dead"), types=["keep.*"], policy={"max_attempts": 1})
        gone = emit(orch, "gone.one")
        kept = emit(orch, "keep.one")
        emit(orch, "plain.one")  # owed to no one
        receiver.wait_for("/ok", 2)

        def logged(pattern: str) -> list[str]:
            page = orch.client.get("/v1/events", params={"type": pattern}).json()
            return [e["id"] for e in page["events"]]

        wait_until(lambda: logged("gone.*") == [] and logged("plain.*") == [], 15, "pruning")
        assert logged("keep.*") == [kept]  # a dead letter still needs it
        assert gone not in logged("*")
        history = orch.client.get(f"/v1/webhooks/{ok['id']}/deliveries").json()["deliveries"]
        assert history == []
        (letter,) = orch.client.get(f"/v1/webhooks/{dead['id']}/dead-letters").json()["deliveries"]
        assert letter["event_id"] == kept
        receiver.behave("/dead", status=200)
        replayed = orch.client.post(
            f"/v1/webhooks/{dead['id']}/replay", json={"delivery_id": letter["id"]}
        )
        assert replayed.json()["queued"] == 1
        (hit,) = receiver.wait_for("/dead", 1)
        assert hit.headers["summit-event-id"] == kept
