import sys
import time
from collections.abc import Iterator
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
    assert [c.operation for c in client.host.calls] == ["secrets.get"]


def test_wrong_api_key_is_refused(client: PluginTestClient) -> None:
    result = auth(client, credentials={"api_key": "guess"})
    assert result == {"authenticated": False, "principal": None, "reason": "invalid API key"}


def test_valid_signature_is_accepted(client: PluginTestClient) -> None:
    assert auth(client, **signed())["authenticated"]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (signed(secret="other"), "invalid signature"),
        (signed(timestamp=int(time.time()) - 3600), "timestamp missing or too far from now"),
        ({**signed(), "body": "tampered"}, "invalid signature"),
        ({}, "no API key or signature"),
    ],
)
def test_bad_signatures_are_refused(
    client: PluginTestClient, request_: dict[str, Any], reason: str
) -> None:
    assert auth(client, **request_) == {"authenticated": False, "principal": None, "reason": reason}


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
