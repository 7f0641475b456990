"""The admin API's role table (which role each request needs) and API tokens' role cache."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from orchestrator.domain.errors import InvalidInput
from orchestrator.security.access import ApiTokens, Role, required_role
from orchestrator.store import tokens as token_store
from orchestrator.store.db import session_scope
from orchestrator.store.models import utcnow


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/v1/plugins", Role.VIEWER),
        ("HEAD", "/v1/plugins/com.x", Role.VIEWER),
        ("GET", "/v1/plugins/com.x/logs", Role.VIEWER),
        ("GET", "/v1/extension-points", Role.VIEWER),
        ("POST", "/v1/plugins", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/enable", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/reload", Role.OPERATOR),
        ("DELETE", "/v1/plugins/com.x", Role.OPERATOR),
        ("PUT", "/v1/plugins/com.x/config", Role.OPERATOR),
        ("POST", "/v1/extension-points/analyzer/execute", Role.OPERATOR),
        ("GET", "/v1/jobs/abc", Role.VIEWER),
        ("PUT", "/v1/plugins/com.x/limits", Role.ADMIN),
        ("PUT", "/v1/plugins/com.x/secrets/k", Role.ADMIN),
        ("GET", "/v1/plugins/com.x/secrets", Role.ADMIN),
        ("GET", "/v1/audit", Role.ADMIN),
        ("GET", "/v1/tokens", Role.ADMIN),
        ("POST", "/v1/tokens", Role.ADMIN),
        ("DELETE", "/v1/tokens/tok_1", Role.ADMIN),
        ("POST", "/v1/something-new", Role.ADMIN),  # unknown routes default to the top role
        ("PATCH", "/v1/plugins/com.x", Role.ADMIN),
        ("POST", "/v1/plugins/com.x/pause", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/resume", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/canary", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/canary/promote", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/canary/abort", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/upgrade", Role.OPERATOR),
        ("POST", "/v1/plugins/com.x/rollback", Role.OPERATOR),
        ("GET", "/v1/plugins/com.x/canary", Role.VIEWER),
        ("GET", "/v1/catalog/plugins", Role.VIEWER),
        ("POST", "/v1/catalog/plugins/com.x/versions", Role.PUBLISHER),
        ("POST", "/v1/catalog/plugins/com.x/versions/1.0.0/yank", Role.PUBLISHER),
        ("POST", "/v1/catalog/plugins/com.x/deprecate", Role.PUBLISHER),
        ("GET", "/v1/catalog/publishers", Role.ADMIN),
        ("POST", "/v1/catalog/publishers", Role.ADMIN),
    ],
)
def test_required_role(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


def test_a_publisher_reads_as_a_viewer_but_cannot_run_plugins() -> None:
    assert Role.VIEWER < Role.PUBLISHER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("publisher") is Role.PUBLISHER


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR
    with pytest.raises(InvalidInput):
        Role.parse("root")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_verified_token_is_remembered_and_forgotten_on_revoke(engine: Engine) -> None:
    here, other = ApiTokens(engine, cache_s=0.5), ApiTokens(engine, cache_s=0.5)
    token = here.create(name="ci", role="operator")
    # Nothing is trusted before the database has said so.
    assert here.cached_role(token.token) is None
    assert here.role_of(token.token) is Role.OPERATOR
    assert here.cached_role(token.token) is Role.OPERATOR
    assert here.cached_role(token.token + "x") is None
    assert here.cached_role("not-a-summit-token") is None
    assert other.role_of(token.token) is Role.OPERATOR

    here.revoke(token.id)
    assert here.cached_role(token.token) is None  # at once on the revoking process
    assert here.role_of(token.token) is None
    # Another replica trusts what it verified until its cache runs out, then asks again.
    assert other.cached_role(token.token) is Role.OPERATOR
    time.sleep(0.6)
    assert other.cached_role(token.token) is None
    assert other.role_of(token.token) is None
    assert other.cached_role(token.token) is None


def test_a_zero_cache_reads_the_database_every_time(engine: Engine) -> None:
    tokens = ApiTokens(engine, cache_s=0)
    token = tokens.create(name="ci", role="admin")
    assert tokens.role_of(token.token) is Role.ADMIN
    assert tokens.cached_role(token.token) is None


def test_a_lookup_overlapping_a_revoke_does_not_cache_its_answer(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = ApiTokens(engine, cache_s=60)
    token = tokens.create(name="ci", role="operator")
    lookup = token_store.get_api_token_by_hash

    def read_then_revoked_elsewhere(session: Any, **kw: Any) -> Any:
        row = lookup(session, **kw)  # read before the revoke commits ...
        with session_scope(engine) as other:  # ... which then commits on another connection
            token_store.get_api_token(other, token_id=token.id).revoked_at = utcnow()
        tokens._revocations += 1  # what revoke() does after its commit
        return row

    monkeypatch.setattr(token_store, "get_api_token_by_hash", read_then_revoked_elsewhere)
    assert tokens.role_of(token.token) is Role.OPERATOR  # what it read
    assert tokens.cached_role(token.token) is None  # but not remembered
    monkeypatch.setattr(token_store, "get_api_token_by_hash", lookup)
    assert tokens.role_of(token.token) is None
