"""One real orchestrator per test module, on SQLite and on PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import temp_database
from tests.fixtures.orchestrator import OrchestratorProcess


def start_orchestrator(tmp_dir, database_url: str, **env: str) -> OrchestratorProcess:  # type: ignore[no-untyped-def]
    # The fixture plugins misbehave on purpose (chmod 0o666, os._exit, ...): the install policy
    # only reports here. tests/integration/test_supply_chain.py runs it at its default.
    env.setdefault("scan_fail_on", "never")
    orch = OrchestratorProcess(
        database_url=database_url,
        state_dir=tmp_dir / "state",
        instance=f"summit-test-{secrets.token_hex(4)}",
        env={f"SUMMIT_{k.upper()}": v for k, v in env.items()},
    )
    orch.start()
    return orch


@contextmanager
def sqlite_orchestrator(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, name: str, **settings: str
) -> Iterator[OrchestratorProcess]:
    """An orchestrator of its own, on SQLite, for a module that needs special settings."""
    tmp = tmp_path_factory.mktemp(name)
    orch = start_orchestrator(tmp, f"sqlite:///{tmp / 'summit.db'}", **settings)
    try:
        yield orch
    finally:
        orch.cleanup(docker_client)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def orch(request, base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    """A running orchestrator shared by one module, once per database backend."""
    tmp = tmp_path_factory.mktemp("orch")
    with temp_database(request.param, tmp) as url:
        o = start_orchestrator(tmp, url, restart_backoff_s="0.2", health_interval_s="1")
        try:
            yield o
        finally:
            o.cleanup(docker_client)
