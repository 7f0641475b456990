import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from summit_sdk.testing import PluginCallError, PluginTestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api_key_auth import plugin, signature

SECRET = "k3y-0f-t3sts"


@pytest.fixture
def client() -> Iterator[PluginTestClient]:
    with PluginTestClient(plugin, secrets={"api-key": SECRET}) as client:
        yield client


def auth(client: PluginTestClient, **request: Any) -> Any:
    return client.call("auth_provider", "api-key", request)


def signed(secret: str = SECRET, timestamp: int | None = None, body: str = "{}") -> dict[str, Any]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "headers": {"X-Timestamp": ts, "X-Signature": signature(secret, ts, "post", "/x", body)},
        "method": "POST",
        "path": "/x",
        "body": body,
    }


def test_right_api_key_is_accepted(client: PluginTestClient) -> None:
    result = auth(client, credentials={"api_key": SECRET})
    assert result["authenticated"] and result["principal"]["id"] == "api-client"
    assert result["principal"]["roles"] == ["viewer"]
    assert [c.operation for c in client.host.calls] == ["secrets.get"]


def test_wrong_api_key_is_refused(client: PluginTestClient) -> None:
    result = auth(client, credentials={"api_key": "guess"})
    assert result == {"authenticated": False, "principal": None, "reason": "invalid API key"}


def test_valid_signature_is_accepted(client: PluginTestClient) -> None:
    assert auth(client, **signed())["authenticated"]


# Requests are made when the test runs, not when pytest collects it: the timestamps must be
# fresh (a long suite can collect this module minutes before running it).
@pytest.mark.parametrize(
    ("make_request", "reason"),
    [
        (lambda: signed(secret="other"), "invalid signature"),
        (
            lambda: signed(timestamp=int(time.time()) - 3600),
            "timestamp missing or too far from now",
        ),
        (lambda: {**signed(), "body": "tampered"}, "invalid signature"),
        (dict, "no API key or signature"),
    ],
    ids=["wrong-secret", "stale-timestamp", "tampered-body", "nothing"],
)
def test_bad_signatures_are_refused(
    client: PluginTestClient, make_request: Callable[[], dict[str, Any]], reason: str
) -> None:
    expected = {"authenticated": False, "principal": None, "reason": reason}
    assert auth(client, **make_request()) == expected


def test_secret_name_comes_from_config() -> None:
    config = {"secret_name": "partner-key", "principal": "partner"}
    with PluginTestClient(plugin, config=config, secrets={"partner-key": "p"}) as client:
        assert auth(client, credentials={"api_key": "p"})["principal"]["id"] == "partner"


def test_without_secrets_read_the_call_is_refused() -> None:
    with PluginTestClient(plugin, permissions=[], secrets={"api-key": SECRET}) as client:
        with pytest.raises(PluginCallError) as denied:
            auth(client, credentials={"api_key": SECRET})
        assert (denied.value.status, denied.value.code) == (403, "permission_denied")
        assert "secrets:read" in denied.value.message
