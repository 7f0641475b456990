"""The marketplace counts against the catalog's rate limit as the REST API does: one budget
per token, whichever door its requests come through."""

from __future__ import annotations

import html

from fastapi import FastAPI
from fastapi.testclient import TestClient

from orchestrator.api.routes import catalog as catalog_routes
from tests.unit.services.conftest import Services, services, settings
from tests.unit.web.test_plugin_pages import app, client, sign_in, tokens

__all__ = ["app", "client", "services", "settings", "tokens"]  # the shared fixtures


def test_ui_and_rest_share_one_budget_per_token(
    client: TestClient, app: FastAPI, tokens: dict[str, str], services: Services
) -> None:
    app.include_router(catalog_routes.router)
    app.state.settings = services.settings.model_copy(
        update={"catalog_rate_limit_requests": 3, "catalog_rate_limit_window_s": 3600}
    )
    sign_in(client, tokens["operator"])
    assert client.get("/ui/marketplace").status_code == 200
    assert client.get("/ui/marketplace?q=x").status_code == 200
    rest = client.get(
        "/v1/catalog/plugins", headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    assert rest.status_code == 200, rest.text
    # The fourth request of this token, through either door, is refused.
    page = client.get("/ui/marketplace?q=y")
    assert page.status_code == 429
    assert "too many catalog requests" in html.unescape(page.text)
    again = client.get(
        "/v1/catalog/plugins", headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
    # Another token has its own budget.
    other = client.get(
        "/v1/catalog/plugins", headers={"Authorization": f"Bearer {tokens['viewer']}"}
    )
    assert other.status_code == 200
