"""What the API answers when something below it refuses."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from orchestrator.api.errors import install_error_handlers
from orchestrator.store.db import session_scope
from orchestrator.store.models import ApiToken


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_value_the_database_refuses_is_the_callers_fault(engine: Engine) -> None:
    # Found by fuzzing the API on PostgreSQL: a NUL character in any path, query or body string
    # that reached a text column answered 500 internal_error.
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/tokens/{name}")
    def by_name(name: str) -> dict[str, bool]:
        with session_scope(engine) as session:
            found = session.exec(select(ApiToken).where(col(ApiToken.name) == name)).first()
        return {"found": found is not None}

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/tokens/plain").json() == {"found": False}
        r = client.get("/tokens/a%00b")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_value"
    assert "NUL" in error["message"] and "SELECT" not in error["message"]
