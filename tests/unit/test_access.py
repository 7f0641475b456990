"""The admin API's role table: which role each request needs."""

from __future__ import annotations

import pytest

from orchestrator.domain.errors import InvalidInput
from orchestrator.security.access import Role, required_role


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
    ],
)
def test_required_role(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR
    with pytest.raises(InvalidInput):
        Role.parse("root")
