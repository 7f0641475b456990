"""A plugin's secrets and the trusted publisher keys in the UI, in process over the real
HostService and TrustStore: a secret is set, listed by name and removed, and its value never
appears on a page; a key is trusted and revoked; a bad key is refused with its reason and
nothing stored; a viewer sees no form and is refused anyway."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from orchestrator.broker import Broker
from orchestrator.events.bus import EventBus
from orchestrator.security.egress import EgressProxy
from orchestrator.security.secretbox import SecretBox
from orchestrator.security.tokens import HostTokens
from orchestrator.services.host import HostService
from tests.unit.services.conftest import Services, services, settings
from tests.unit.web.test_plugin_pages import (
    PID,
    app,
    client,
    csrf_of,
    flashes,
    post,
    sign_in,
    tokens,
)

__all__ = ["app", "client", "services", "settings", "tokens"]  # the shared fixtures

SECRET = "s3cr3t-value-that-must-never-show"


@pytest.fixture(autouse=True)
def host_and_trust(app: FastAPI, services: Services, tmp_path: Path) -> None:
    app.state.host = HostService(
        engine=services.engine,
        tokens=HostTokens(services.engine),
        secrets=SecretBox.from_settings(None, tmp_path),
        broker=Broker(),
        egress=EgressProxy(),
        events=EventBus(services.engine),
    )
    app.state.trust = services.installs.trust


def public_pem() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_a_secret_is_set_listed_and_removed_and_never_shown(
    client: TestClient, app: FastAPI, tokens: dict[str, str], services: Services
) -> None:
    services.install(PID, version="1.0.0")
    sign_in(client, tokens["admin"])
    page = client.get(f"/ui/plugins/{PID}/secrets").text
    assert "secrets:read" in page  # the probe was not granted it: the page says so
    r = post(client, f"/ui/plugins/{PID}/secrets", csrf_of(page), name="API_KEY", value=SECRET)
    assert r.status_code == 303
    page = client.get(f"/ui/plugins/{PID}/secrets").text
    assert flashes(page) == [f"Secret API_KEY of {PID} is set."]
    assert 'data-secret="API_KEY"' in page and SECRET not in page
    assert [s["name"] for s in app.state.host.list_secrets(PID)] == ["API_KEY"]
    assert SECRET not in client.get(f"/ui/plugins/{PID}").text

    bad = post(client, f"/ui/plugins/{PID}/secrets", csrf_of(page), name="bad name!", value="x")
    assert bad.status_code == 303
    page = client.get(f"/ui/plugins/{PID}/secrets").text
    assert "secret name" in html.unescape(" ".join(flashes(page)))
    assert [s["name"] for s in app.state.host.list_secrets(PID)] == ["API_KEY"]

    post(client, f"/ui/plugins/{PID}/secrets/API_KEY/delete", csrf_of(page))
    assert app.state.host.list_secrets(PID) == []


def test_a_key_is_trusted_then_revoked_and_a_bad_one_is_refused(
    client: TestClient, app: FastAPI, tokens: dict[str, str]
) -> None:
    sign_in(client, tokens["admin"])
    page = client.get("/ui/trust").text
    refused = post(client, "/ui/trust", csrf_of(page), name="Acme", public_key="not a key")
    assert refused.status_code == 422
    assert 'id="key-error"' in refused.text and "not a key" in refused.text  # kept as typed
    assert app.state.trust.list() == []

    assert (
        post(client, "/ui/trust", csrf_of(page), name="Acme", public_key=public_pem()).status_code
        == 303
    )
    [key] = app.state.trust.list()
    page = client.get("/ui/trust").text
    assert f'data-key="{key.key_id}"' in page and "Acme" in page
    post(client, f"/ui/trust/{key.key_id}/revoke", csrf_of(page))
    [revoked] = app.state.trust.list()
    assert revoked.revoked_at is not None


def test_a_viewer_sees_no_form_and_is_refused(
    client: TestClient, app: FastAPI, tokens: dict[str, str], services: Services
) -> None:
    services.install(PID, version="1.0.0")
    app.state.host.set_secret(PID, "TOKEN", SECRET)
    sign_in(client, tokens["viewer"])
    # Both are the admin's (as GET /v1/trust/keys and the secrets' list are): no link, and no.
    assert client.get("/ui/trust").status_code == 403
    assert client.get(f"/ui/plugins/{PID}/secrets").status_code == 403
    plugin_page = client.get(f"/ui/plugins/{PID}").text
    assert 'href="/ui/trust"' not in plugin_page and 'id="secrets-link"' not in plugin_page
    csrf = csrf_of(plugin_page)
    for path, fields in (
        (f"/ui/plugins/{PID}/secrets", {"name": "X", "value": "y"}),
        (f"/ui/plugins/{PID}/secrets/TOKEN/delete", {}),
        ("/ui/trust", {"name": "Evil", "public_key": public_pem()}),
    ):
        assert post(client, path, csrf, **fields).status_code == 403, path
    assert [s["name"] for s in app.state.host.list_secrets(PID)] == ["TOKEN"]
    assert app.state.trust.list() == []
    # Without the CSRF token, even an admin is refused.
    client.cookies.clear()
    sign_in(client, tokens["admin"])
    assert post(client, "/ui/trust", "forged", name="A", public_key=public_pem()).status_code == 403
