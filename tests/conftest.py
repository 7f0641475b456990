"""Shared fixtures: a real Docker Engine, the plugin base image, and real databases."""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from orchestrator.store.db import make_engine, migrate

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "summit/plugin-python:latest"
PG_ADMIN_URL = os.environ.get("SUMMIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's SUMMIT_* environment or a cached Settings."""
    for key in list(os.environ):
        if key.startswith("SUMMIT_") and not key.startswith("SUMMIT_TEST_"):
            monkeypatch.delenv(key)
    from orchestrator.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    import docker

    client = docker.from_env()
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """The plugin base image, built once (xdist workers take turns through a file lock)."""
    lock_path = Path(os.environ.get("TMPDIR", "/tmp")) / "summit-base-image.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            ["bash", str(REPO / "plugin-base-images" / "build.sh")], check=True, cwd=REPO
        )
    return BASE_IMAGE


def _create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"summit_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temp_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, empty database of ``kind`` ("sqlite" or "postgres"), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'summit.db'}"
        return
    name, url = _create_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Parametrize indirectly with "sqlite" or "postgres"; sqlite when not parametrized."""
    with temp_database(getattr(request, "param", "sqlite"), tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on ``database_url`` (SQLite unless parametrized with "postgres")."""
    eng = make_engine(database_url)
    migrate(eng)
    yield eng
    eng.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that take a database parameter "postgres" get the postgres marker automatically.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in str(callspec.params.values()):
            item.add_marker(pytest.mark.postgres)
