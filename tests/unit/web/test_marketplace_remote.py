"""The marketplace over the catalog this orchestrator installs from: with a remote catalog
(another orchestrator's catalog routes, in process) it searches, pages, shows a plugin and
its install dialog from there, with the remote's badges and counts; a remote that is down is a
503 page that says so; and with its own catalog every page works as it always has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator import web
from orchestrator.catalog.installer import CatalogInstaller
from orchestrator.catalog.service import CatalogService
from orchestrator.catalog.sources import CatalogSource, LocalCatalog, RemoteCatalog
from orchestrator.security.access import ApiTokens
from orchestrator.services.extensions import AdminAccess
from orchestrator.services.plugins import PluginQueries
from tests.fixtures.fake_runtime import FakeRuntime
from tests.fixtures.remote_catalog import (
    ManifestlessCatalog,
    catalog_app,
    catalog_engine,
    catalog_service,
    publish_entry,
    remote_catalog,
    viewer_token,
)
from tests.fixtures.ui import sign_in as ui_sign_in

__all__ = ["catalog_engine"]  # the shared fixture

ADMIN = "ui-admin-secret"
HOSTILE_README = "# Chart\n\n<script>alert(1)</script>\n"


def reading(engine: Engine, kind: type[CatalogService] = CatalogService) -> CatalogService:
    return catalog_service(engine, kind)


def put(
    engine: Engine,
    plugin_id: str,
    *,
    category: str = "charts",
    readme: str = "",
    signed: bool = False,
    installs: int = 0,
) -> None:
    """A chart plugin asking for network:access to api.example.com and read:data."""
    publish_entry(
        engine,
        plugin_id,
        categories=[category],
        readme=readme,
        signed=signed,
        installs=installs,
        permissions=["network:access", "read:data"],
        hosts=["api.example.com"],
    )


def ui_app(engine: Engine, source: CatalogSource) -> FastAPI:
    app = FastAPI()
    app.include_router(web.router)
    tokens = ApiTokens(engine)
    app.state.access = AdminAccess(admin_token=ADMIN, tokens=tokens)
    app.state.api_tokens = tokens
    app.state.queries = PluginQueries(engine=engine, runtime=FakeRuntime())
    # This orchestrator's own catalog: what the marketplace read before, whatever the source.
    app.state.catalog = reading(engine)
    app.state.catalog_source = source
    app.state.catalog_installer = CatalogInstaller(
        engine=engine, installs=cast(Any, None), uninstall=lambda _: None, source=source
    )
    return app


@pytest.fixture
def remote_app(catalog_engine: Engine) -> FastAPI:
    app = catalog_app(catalog_engine)
    return app


@pytest.fixture
def client(engine: Engine, catalog_engine: Engine, remote_app: FastAPI) -> Iterator[TestClient]:
    source = remote_catalog(remote_app, viewer_token(catalog_engine))
    with TestClient(ui_app(engine, source)) as c:
        sign_in(c)
        yield c


def sign_in(client: TestClient) -> None:
    ui_sign_in(client, ADMIN)


def cards(html: str) -> list[str]:
    return re.findall(r'class="card" data-plugin="([^"]+)"', html)


def card(html: str, plugin_id: str) -> str:
    found = re.search(
        rf'data-plugin="{re.escape(plugin_id)}">(.*?)</li>\s*(?=<li|</ul>)', html, re.S
    )
    assert found, f"no card for {plugin_id}"
    return found.group(1)


def test_the_marketplace_searches_and_pages_through_the_remote_catalog(
    client: TestClient, catalog_engine: Engine
) -> None:
    for n in range(25):  # one more than a page
        put(catalog_engine, f"com.acme.chart{n:02}")
    put(catalog_engine, "com.acme.mailer", category="mail", signed=True, installs=12)

    first = client.get("/ui/marketplace", params={"sort": "name", "searched": "1"})
    assert first.status_code == 200
    assert "From the catalog at <code>http://testserver</code>" in first.text
    assert re.search(r'id="result-count">\s*26 plugin', first.text)
    assert cards(first.text) == [f"com.acme.chart{n:02}" for n in range(24)]
    assert '>charts <span class="count">25</span>' in first.text  # the remote's facets
    assert '>mail <span class="count">1</span>' in first.text

    more = re.search(r'href="(/ui/marketplace\?[^"]*cursor=[^"]*)"', first.text)
    assert more, "no next page link"
    second = client.get(more.group(1).replace("&amp;", "&"))
    assert cards(second.text) == ["com.acme.chart24", "com.acme.mailer"]
    assert "Next page" not in second.text

    # A facet narrows the remote's search; badges and counts are the remote's.
    mail = client.get("/ui/marketplace", params={"category": "mail", "searched": "1"})
    assert cards(mail.text) == ["com.acme.mailer"]
    shown = card(mail.text, "com.acme.mailer")
    assert ">signed<" in shown and "12 install(s)" in shown
    assert 'href="/ui/marketplace/com.acme.mailer/install"' in shown
    words = client.get("/ui/marketplace", params={"q": "chart07"})
    assert cards(words.text) == ["com.acme.chart07"]
    assert "runs here: 1.0.0" in card(words.text, "com.acme.chart07")


def test_a_remote_plugin_page_shows_the_remote_entry_with_its_readme_escaped(
    client: TestClient, catalog_engine: Engine
) -> None:
    put(catalog_engine, "com.acme.chart", readme=HOSTILE_README, signed=True, installs=3)
    page = client.get("/ui/marketplace/com.acme.chart")
    assert page.status_code == 200
    html = page.text
    readme = html.split('id="readme"')[1].split("</section>")[0]
    assert "<script>" not in readme and "&lt;script&gt;alert(1)&lt;/script&gt;" in readme
    assert "by Acme Plugins" in html and ">signed<" in html and ">runs here<" in html
    signature = html.split('id="signature"')[1].split("</section>")[0]
    assert "verified" in signature and "acme-key" in signature
    assert "installing checks the signature again" in signature
    assert "<dt>Installs</dt><dd>3</dd>" in html
    assert 'id="install"' in html
    versions = html.split('id="versions"')[1]
    assert "1.0.0" in versions and "acme-ci" in versions

    missing = client.get("/ui/marketplace/com.acme.nothing")
    assert missing.status_code == 404
    assert "com.acme.nothing is not in the catalog at http://testserver" in missing.text


def test_the_install_dialog_shows_the_remote_plugins_config_form_and_permissions(
    client: TestClient, catalog_engine: Engine
) -> None:
    put(catalog_engine, "com.acme.fetch")
    dialog = client.get("/ui/marketplace/com.acme.fetch/install")
    assert dialog.status_code == 200
    html = dialog.text
    assert "Install com.acme.fetch 1.0.0" in html
    permissions = html.split('id="permissions"')[1].split("</fieldset>")[0]
    assert 'value="network:access"' in permissions and 'value="read:data"' in permissions
    assert "Hosts: api.example.com." in permissions
    config = html.split('id="config"')[1].split("</fieldset>")[0]
    assert 'name="config.init_delay_s"' in config and "<textarea" not in config
    assert "at least 0" in config  # the schema's minimum, from the remote's manifest

    # The form is checked against that schema before anything is installed.
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf is not None
    refused = client.post(
        "/ui/marketplace/com.acme.fetch/install",
        data={
            "csrf_token": csrf.group(1),
            "version": "1.0.0",
            "permission": ["network:access", "read:data"],
            "config.init_delay_s": "-1",
        },
    )
    assert refused.status_code == 422
    assert "less than the minimum of 0" in refused.text


def test_without_manifests_from_the_remote_the_config_is_one_json_field(
    engine: Engine, catalog_engine: Engine
) -> None:
    put(catalog_engine, "com.acme.fetch")
    older = catalog_app(catalog_engine)
    older.state.catalog = reading(catalog_engine, ManifestlessCatalog)
    source = remote_catalog(older, viewer_token(catalog_engine))
    with TestClient(ui_app(engine, source)) as c:
        sign_in(c)
        html = c.get("/ui/marketplace/com.acme.fetch/install").text
    permissions = html.split('id="permissions"')[1].split("</fieldset>")[0]
    assert 'value="network:access"' in permissions and "Hosts:" not in permissions
    config = html.split('id="config"')[1].split("</fieldset>")[0]
    assert '<textarea id="cfg-1" name="config"' in config and "init_delay_s" not in config


@pytest.mark.parametrize(
    "path",
    ["/ui/marketplace", "/ui/marketplace/com.acme.chart", "/ui/marketplace/com.acme.chart/install"],
)
def test_a_remote_catalog_that_is_down_is_a_503_page_that_says_so(
    engine: Engine, path: str
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    http = httpx.Client(base_url="http://catalog.example", transport=httpx.MockTransport(down))
    source = RemoteCatalog("http://catalog.example", "smt_token", client=http)
    with TestClient(ui_app(engine, source)) as c:
        sign_in(c)
        r = c.get(path)
    assert r.status_code == 503
    message = r.text.split('id="error-message">')[1].split("</p>")[0]
    assert "the catalog at http://catalog.example cannot be reached" in message
    assert "ConnectError" in message


def test_a_remote_that_refuses_the_token_is_a_502_page_naming_the_setting(
    engine: Engine, catalog_engine: Engine, remote_app: FastAPI
) -> None:
    source = remote_catalog(remote_app, "smt_not-a-token")
    with TestClient(ui_app(engine, source)) as c:
        sign_in(c)
        r = c.get("/ui/marketplace")
    assert r.status_code == 502
    assert "SUMMIT_CATALOG_TOKEN" in r.text


def test_with_its_own_catalog_the_marketplace_works_as_before(engine: Engine) -> None:
    put(engine, "com.local.chart", readme=HOSTILE_README, signed=True, installs=2)
    put(engine, "com.local.mailer", category="mail")
    # As app.py makes it today (no service handed to it): the pages read app.state.catalog.
    with TestClient(ui_app(engine, LocalCatalog(engine))) as c:
        sign_in(c)
        market = c.get("/ui/marketplace", params={"category": "charts", "searched": "1"})
        assert market.status_code == 200 and 'id="catalog-source"' not in market.text
        assert cards(market.text) == ["com.local.chart"]
        shown = card(market.text, "com.local.chart")
        assert ">signed<" in shown and "2 install(s)" in shown
        page = c.get("/ui/marketplace/com.local.chart").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert "installing checks the signature again" not in page
        dialog = c.get("/ui/marketplace/com.local.chart/install").text
        assert "Hosts: api.example.com." in dialog and "at least 0" in dialog

    # And with the service handed to it, the same pages.
    source = LocalCatalog(engine, service=reading(engine))
    with TestClient(ui_app(engine, source)) as c:
        sign_in(c)
        again = c.get("/ui/marketplace", params={"category": "charts", "searched": "1"})
        assert cards(again.text) == ["com.local.chart"]


def test_a_next_page_link_keeps_the_filters(client: TestClient, catalog_engine: Engine) -> None:
    for n in range(26):
        put(catalog_engine, f"com.acme.chart{n:02}")
    first = client.get("/ui/marketplace", params={"q": "chart", "sort": "name", "searched": "1"})
    more = re.search(r'href="/ui/marketplace\?([^"]*cursor=[^"]*)"', first.text)
    assert more
    query = parse_qs(urlsplit("?" + more.group(1).replace("&amp;", "&")).query)
    assert query["q"] == ["chart"] and query["sort"] == ["name"]
