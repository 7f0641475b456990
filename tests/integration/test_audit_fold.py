"""Refused host API calls fold into one audit record per plugin, reason and minute, with a count.

A hostile plugin can make thousands of forged or forbidden calls a minute; each one used to
write its own audit record (and announce its own ``security.refused`` event). The store tests
run on SQLite and PostgreSQL, several threads and two engines (two orchestrator processes on
one database) at once; the last test floods the real host API from a plugin's own socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from orchestrator.broker import Broker
from orchestrator.domain.errors import Unauthorized
from orchestrator.events.bus import EventBus
from orchestrator.security.egress import EgressProxy
from orchestrator.security.secretbox import SecretBox
from orchestrator.security.tokens import HostTokens
from orchestrator.services import host as host_module
from orchestrator.services.host import HostService
from orchestrator.store import crud
from orchestrator.store.db import MIGRATIONS, make_engine, migrate, session_scope
from orchestrator.store.models import AuditRecord, EventRecord
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.integration.test_host_api import direct, host_socket, install_enabled

BACKENDS = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
PID = "com.summit.tests.flooder"


class Clock:
    """The host service's clock, held still (or moved) by the test."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    held = Clock()
    monkeypatch.setattr(host_module, "utcnow", held)
    return held


def host_service(engine: Engine, state_dir: Path) -> HostService:
    return HostService(
        engine=engine,
        tokens=HostTokens(engine),
        secrets=SecretBox.from_settings(None, state_dir),
        broker=Broker(),
        egress=EgressProxy(),
        events=EventBus(engine),
    )


@pytest.fixture
def service(engine: Engine, tmp_path: Path) -> HostService:
    return host_service(engine, tmp_path)


def forge(service: HostService, plugin_id: str, operation: str, times: int) -> None:
    """``times`` calls with a forged token, each refused (and audited) by the service."""
    for _ in range(times):
        with pytest.raises(Unauthorized):
            service.authorize(plugin_id, "forged-token", operation)


def records(engine: Engine) -> list[AuditRecord]:
    with session_scope(engine) as session:
        return list(reversed(crud.list_audit(session, limit=1000)))


def refusal_events(engine: Engine, plugin_id: str) -> int:
    with session_scope(engine) as session:
        stmt = select(func.count()).where(
            col(EventRecord.type) == "security.refused", col(EventRecord.subject) == plugin_id
        )
        return int(session.exec(stmt).one())


@BACKENDS
def test_a_flood_of_refusals_is_one_record_with_its_count(
    engine: Engine, service: HostService, clock: Clock
) -> None:
    first = clock.now
    for _ in range(10):
        forge(service, PID, "storage.get", 100)
        clock.advance(5)  # 50 s in all: still the same minute
    rows = records(engine)
    assert len(rows) == 1
    record = rows[0]
    assert (record.actor, record.action, record.outcome) == (
        f"plugin:{PID}",
        "storage.get",
        "unauthorized",
    )
    assert (record.permission, record.detail) == ("storage", "missing or bad token")
    assert record.count == 1000
    assert _utc(record.at) == first
    assert _utc(record.last_at) == first + timedelta(seconds=45)
    # Operators and webhooks hear of the burst once, not a thousand times.
    assert refusal_events(engine, PID) == 1


@BACKENDS
def test_another_reason_plugin_or_minute_is_another_record(
    engine: Engine, service: HostService, clock: Clock
) -> None:
    other = f"{PID}.other"
    forge(service, PID, "storage.get", 3)
    forge(service, PID, "secrets.get", 2)  # another operation
    service.audit(PID, "storage.get", "permission_denied", "storage")  # another outcome
    forge(service, other, "storage.get", 4)  # another plugin
    clock.advance(60)  # 12:01:05, the next minute
    forge(service, PID, "storage.get", 5)
    forge(service, PID, "secrets.get", 1)
    got = [
        (r.actor.removeprefix("plugin:"), r.action, r.outcome, r.count, _utc(r.at).minute)
        for r in records(engine)
    ]
    assert got == [
        (PID, "storage.get", "unauthorized", 3, 0),
        (PID, "secrets.get", "unauthorized", 2, 0),
        (PID, "storage.get", "permission_denied", 1, 0),
        (other, "storage.get", "unauthorized", 4, 0),
        (PID, "storage.get", "unauthorized", 5, 1),
        (PID, "secrets.get", "unauthorized", 1, 1),
    ]
    assert refusal_events(engine, PID) == 5 and refusal_events(engine, other) == 1


@BACKENDS
def test_concurrent_refusals_from_two_orchestrators_lose_no_count(
    database_url: str, engine: Engine, tmp_path: Path, clock: Clock
) -> None:
    # Two services on two engines: two orchestrator processes sharing one database.
    second = make_engine(database_url)
    try:
        services = [host_service(engine, tmp_path), host_service(second, tmp_path)]
        start = threading.Barrier(8)
        failures: list[BaseException] = []

        def flood(svc: HostService) -> None:
            start.wait()
            try:
                forge(svc, PID, "data.get", 100)
            except BaseException as exc:  # reported below; a thread cannot fail the test
                failures.append(exc)

        threads = [threading.Thread(target=flood, args=(services[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        assert not failures, failures
        rows = records(engine)
        assert len(rows) == 1
        assert rows[0].count == 800
        assert refusal_events(engine, PID) == 1
    finally:
        second.dispose()


@BACKENDS
def test_allowed_actions_stay_one_record_each(engine: Engine) -> None:
    for _ in range(2):
        with session_scope(engine) as session:
            crud.add_audit(
                session,
                actor="admin",
                action="install.override_findings",
                outcome="allowed",
                detail="com.example.x 1.0.0: 1 blocking finding(s); reason: vetted",
            )
    got = [(r.actor, r.action, r.count) for r in records(engine)]
    assert got == [("admin", "install.override_findings", 1)] * 2


@BACKENDS
def test_records_written_before_the_upgrade_read_as_one_call(database_url: str) -> None:
    eng = make_engine(database_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
        at = datetime(2024, 6, 1, 8, 30, 12, tzinfo=UTC)
        with eng.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (at, actor, action, outcome, permission, detail) "
                    "VALUES (:at, 'plugin:old', 'secrets.get', 'permission_denied', "
                    "'secrets:read', NULL)"
                ),
                {"at": at},
            )
        migrate(eng)
        (record,) = records(eng)
        assert (record.actor, record.count, _utc(record.last_at)) == ("plugin:old", 1, at)
        # A refusal after the upgrade starts a record of its own (the old row never folds).
        with session_scope(eng) as session:
            crud.fold_audit(
                session,
                actor="plugin:old",
                action="secrets.get",
                outcome="permission_denied",
                permission="secrets:read",
                at=at,
            )
        assert [r.count for r in records(eng)] == [1, 1]
    finally:
        eng.dispose()


@pytest.mark.docker
@pytest.mark.slow
def test_the_host_api_folds_a_flood_into_one_audit_record(
    orch: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    view = install_enabled(orch, tmp_path, PID, permissions=["storage"], events={})
    try:
        sock = host_socket(docker_client, view["container"]["id"])
        _clear_of_a_minute_boundary(margin_s=25)
        with direct(sock, "forged") as forged, direct(sock, _token(orch, PID)) as own:
            for _ in range(200):
                assert forged.get("/host/v1/storage/kv/x").status_code == 401
                assert own.get("/host/v1/secrets/anything").status_code == 403
        r = orch.client.get("/v1/audit", params={"plugin": PID})
        assert r.status_code == 200, r.text
        audit = r.json()["records"]
        assert len(audit) == 2
        got = [(a["action"], a["outcome"], a["count"]) for a in audit]
        assert got == [
            ("secrets.get", "permission_denied", 200),
            ("storage.get", "unauthorized", 200),
        ]
        refused = orch.client.get(
            "/v1/events", params={"type": "security.refused", "subject": PID}
        ).json()["events"]
        assert len(refused) == 2
        # The operator's listing shows the count too.
        args = ["audit", "--plugin", PID, "--url", orch.url, "--token", TOKEN]
        listing = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env={**os.environ, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        rows = [line.split() for line in listing.stdout.splitlines()[1:] if line.strip()]
        assert [(row[1], row[3]) for row in rows] == [
            ("200", "secrets.get"),
            ("200", "storage.get"),
        ]
    finally:
        orch.client.post(f"/v1/plugins/{PID}/disable")
        orch.client.delete(f"/v1/plugins/{PID}")


def _token(orch: OrchestratorProcess, plugin_id: str) -> str:
    r = orch.client.post(
        "/v1/extension-points/workflow/execute",
        json={"input": {"op": "whoami", "args": []}, "plugins": [plugin_id]},
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["results"][0]["output"]["result"]["token"]
    return token


def _clear_of_a_minute_boundary(*, margin_s: float) -> None:
    """Wait for the next minute if this one ends within ``margin_s`` (records fold per minute)."""
    left = 60 - datetime.now(UTC).second - datetime.now(UTC).microsecond / 1e6
    if left < margin_s:
        time.sleep(left + 0.5)


def _utc(value: datetime | None) -> datetime:
    """SQLite hands timestamps back without their zone; all of ours are UTC."""
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
