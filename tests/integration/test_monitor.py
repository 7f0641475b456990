"""The resource monitor on a real Docker Engine: a plugin-image container that holds 50 MB and
burns CPU shows both in its samples, read from its cgroup files; a memory rule over those
samples records its warning (event and audit record) in the database."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from summit_sdk.labels import LABEL_OWNER, LABEL_PLUGIN

from orchestrator.events.bus import EventBus
from orchestrator.monitor.cgroups import CgroupLocator, ContainerMeter
from orchestrator.monitor.quotas import EventJournal, QuotaEnforcer, QuotaPolicy
from orchestrator.monitor.sampler import Sampler
from orchestrator.monitor.series import UsageSeries
from orchestrator.store import audit, events
from orchestrator.store.db import session_scope
from tests.unit.monitor.conftest import add_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MIB = 1024 * 1024
PLUGIN = "com.summit-tests.hungry"
# Holds 50 MB (touched, so resident) and burns CPU until killed.
HUNGRY = """
import time
held = bytearray(50 * 1024 * 1024)
for i in range(0, len(held), 4096):
    held[i] = 1
print("ready", flush=True)
while True:
    sum(range(20000))
"""


@pytest.fixture
def hungry(docker_client: Any, base_image: str) -> Iterator[Any]:
    owner = f"summit-test-{secrets.token_hex(4)}"
    container = docker_client.containers.run(
        base_image,
        entrypoint=["python3", "-c", HUNGRY],
        detach=True,
        labels={LABEL_OWNER: owner, LABEL_PLUGIN: PLUGIN},
        network_mode="none",
        mem_limit="96m",
        memswap_limit="96m",
        nano_cpus=500_000_000,
        pids_limit=32,
        read_only=True,
        cap_drop=["ALL"],
        user="10001:10001",
    )
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in container.logs():
            assert time.monotonic() < deadline, container.logs()
            time.sleep(0.1)
        yield container
    finally:
        container.remove(force=True, v=True)


def test_sampler_sees_memory_and_growing_cpu_time(hungry: Any, engine: Engine) -> None:
    add_plugin(
        engine,
        PLUGIN,
        container_id=hungry.id,
        created_at=time.time() - 60,
        resources={"memory_mb": 96, "storage_mb": 10},
    )
    meter = ContainerMeter(CgroupLocator())
    assert meter.reads_files(hungry.id), "the cgroup of a local container should be readable"
    bus = EventBus(engine)
    series = UsageSeries(engine)
    sampler = Sampler(engine=engine, meter=meter, series=series, interval_s=1)
    enforcer = QuotaEnforcer(
        default=QuotaPolicy.model_validate(
            {"memory": {"share": 0.5, "samples": 2}, "cpu_throttled": None, "storage": None}
        ),
        control=_NoControl(),
        journal=EventJournal(engine, bus),
        recent=sampler.recent,
        run=lambda f: f(),
    )
    sampler.listeners.append(enforcer)

    [first] = sampler.sample_once()
    time.sleep(1.5)
    [second] = sampler.sample_once()

    assert first.source.startswith("cgroup") and second.source.startswith("cgroup")
    assert second.memory_bytes is not None and second.memory_bytes >= 50 * MIB
    assert second.memory_limit_bytes == 96 * MIB
    assert first.cpu_total_usec is not None and second.cpu_total_usec is not None
    # Half a CPU for 1.5 s: well over 200 ms more CPU time.
    assert second.cpu_total_usec - first.cpu_total_usec >= 200_000
    assert second.cpu_usec == second.cpu_total_usec - first.cpu_total_usec
    assert second.pids is not None and second.pids >= 1

    # It is in the stored series, and the memory rule (over half of 96 MB, twice) warned.
    current = series.current()[PLUGIN]
    assert current["memory_bytes"] >= 50 * MIB
    with session_scope(engine) as session:
        logged = [e for e in events.list_events(session, limit=10) if e.type == "quota.warning"]
        records = audit.list_audit(session, limit=10)
    assert [e.subject for e in logged] == [PLUGIN]
    assert [(r.actor, r.action, r.outcome) for r in records] == [
        ("monitor", "quota.memory", "warn")
    ]


class _NoControl:
    def set_limits(self, plugin_id: str, limits: dict[str, Any]) -> None:
        raise AssertionError("a warning changes nothing")

    def reload(self, plugin_id: str, *, reason: str) -> None:
        raise AssertionError("a warning changes nothing")

    def disable(self, plugin_id: str, *, reason: str) -> None:
        raise AssertionError("a warning changes nothing")
