"""The installed-plugins pages in process, over the plugin services wired as the app wires them
(real SQLite, ``FakeRuntime`` for Docker, the catalog installer over a fake registry): a canary
started, reweighed, promoted and aborted from the pages, and the upgrade dialog that lists each
new permission and upgrades only when every one is approved. Roles and CSRF are the real ones
(``AdminAccess`` over real API tokens)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from orchestrator import web
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.routes import plugins as plugin_routes
from orchestrator.catalog.installer import CatalogInstall, CatalogInstaller
from orchestrator.catalog.service import CatalogCache, CatalogService
from orchestrator.domain.manifest import Manifest
from orchestrator.events.fanout import Fanout
from orchestrator.monitor.series import UsageSeries
from orchestrator.monitor.service import UsageService
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.security.access import ApiTokens
from orchestrator.security.secretbox import SecretBox
from orchestrator.services.extensions import AdminAccess
from orchestrator.services.plugins import PluginQueries
from orchestrator.store import catalog as catalog_store
from orchestrator.store.db import session_scope
from tests.fixtures.plugins import PLUGINS
from tests.fixtures.ui import assert_strict, csrf_of, post, sign_in
from tests.unit.services.conftest import Services, services, settings

__all__ = [  # the services' fixtures and the page helpers, shared
    "assert_strict",
    "csrf_of",
    "post",
    "services",
    "settings",
    "sign_in",
]

ADMIN = "ui-plugin-pages-admin"
PID = "com.summit-tests.probe"
REGISTRY = "registry.example"


# -- the app --------------------------------------------------------------------------------------


def build_app(services: Services) -> FastAPI:
    """The UI and the plugins' REST routes over ``services``, with the state ``create_app``
    gives them."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.events.bind(asyncio.get_running_loop())
        yield

    engine = services.engine
    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(plugin_routes.router)
    app.include_router(web.router)
    state = app.state
    state.settings = services.settings
    state.engine = engine
    state.runtime = services.runtime
    state.broker = services.broker
    state.lifecycle = services.lifecycle
    state.installs = services.installs
    state.events = services.events
    services.events.fanout = Fanout()
    state.queries = PluginQueries(engine=engine, runtime=services.runtime)
    state.api_tokens = ApiTokens(engine)
    state.access = AdminAccess(admin_token=ADMIN, tokens=state.api_tokens)
    state.jobs = None
    # The secrets key the app makes at start (what the UI's session store is keyed with).
    state.secretbox = SecretBox.from_settings(None, services.settings.state_dir)
    state.usage = UsageService(
        engine=engine, series=UsageSeries(engine), live_usage=state.queries.live_usage
    )
    state.catalog = CatalogService(
        engine=engine,
        images=services.runtime,
        supply_chain=services.installs.supply_chain,
        trust=services.installs.trust,
        cache=CatalogCache(None, prefix="test"),
    )
    state.catalog_installer = CatalogInstaller(
        engine=engine, installs=services.installs, uninstall=services.lifecycle.uninstall
    )
    return app


@pytest.fixture
def app(services: Services) -> FastAPI:
    return build_app(services)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    api: ApiTokens = app.state.api_tokens
    return {
        "admin": ADMIN,
        "operator": api.create(name="ops", role="operator").token,
        "viewer": api.create(name="eyes", role="viewer").token,
    }


def flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash flash-(?:ok|error)" role="\w+">([^<]*)</p>', html)


# -- plugins --------------------------------------------------------------------------------------


def two_versions(services: Services) -> None:
    """1.0.0 ACTIVE, 2.0.0 installed beside it (waiting to take over)."""
    services.install(PID, version="1.0.0")
    services.lifecycle.enable(PID)
    services.install(PID, version="2.0.0")


def publish(services: Services, version: str, permissions: list[str]) -> None:
    """A probe version in the fake registry and in this orchestrator's catalog."""
    data: dict[str, Any] = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())
    data.update(id=PID, version=version, dependencies=[], permissions=permissions)
    digest = hashlib.sha256(f"{PID}@{version}".encode()).hexdigest()
    ref = f"{REGISTRY}/{PID}@sha256:{digest}"
    services.runtime.publish(ref, labels={LABEL_MANIFEST: json.dumps(data)})
    with session_scope(services.engine) as session:
        if catalog_store.get_publisher(session, publisher_id="acme") is None:
            catalog_store.add_publisher(session, publisher_id="acme", name="Acme")
        catalog_store.publish_version(
            session,
            manifest=Manifest.model_validate(data),
            image=ref,
            publisher="acme",
            published_by="test",
        )


def from_catalog(services: Services, app: FastAPI) -> None:
    """1.0.0 (``read:data``) installed from the catalog and ACTIVE."""
    publish(services, "1.0.0", ["read:data"])
    app.state.catalog_installer.install(
        CatalogInstall.model_validate(
            {"catalog": {"id": PID, "version": "1.0.0"}, "approved_permissions": ["read:data"]}
        ),
        principal="admin",
        actor="test",
    )
    services.lifecycle.enable(PID)


def current(app: FastAPI) -> tuple[str, str, list[str]]:
    """The plugin's (version, state, granted permissions), as the API shows them."""
    view = app.state.queries.get(PID)
    return view.version, view.state, sorted(view.granted_permissions)


def canary_weight(services: Services) -> int | None:
    canary = services.broker.canary(PID)
    return canary.weight if canary is not None else None


def running_versions(services: Services) -> list[str]:
    return sorted(s.version or "" for s in services.runtime.running(PID))


def history(services: Services) -> list[tuple[str, str, str]]:
    """(action, version, actor) of the plugin's history, oldest first."""
    items = services.lifecycle.history(PID, limit=100).items
    return [(h.action, h.version, h.actor) for h in reversed(items)]


# -- canary ---------------------------------------------------------------------------------------


def test_an_operator_starts_reweighs_and_promotes_a_canary_from_the_plugin_page(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    two_versions(services)
    csrf = sign_in(client, tokens["operator"])
    page = client.get(f"/ui/plugins/{PID}").text
    assert f'action="/ui/plugins/{PID}/canary"' in page
    assert '<option value="2.0.0" selected>2.0.0 (waiting to take over)</option>' in page
    assert_strict(page)

    done = post(
        client,
        f"/ui/plugins/{PID}/canary",
        csrf,
        version="2.0.0",
        weight="30",
        next=f"/ui/plugins/{PID}",
    )
    assert done.status_code == 303 and done.headers["location"] == f"/ui/plugins/{PID}"
    assert canary_weight(services) == 30
    assert running_versions(services) == ["1.0.0", "2.0.0"]
    page = client.get(f"/ui/plugins/{PID}").text
    assert flashes(page) == [f"{PID} 2.0.0 takes 30% of the calls beside 1.0.0."]
    assert '<strong id="canary-weight">30%</strong>' in page
    assert (
        '<tr data-role="candidate">' in page
        and f'action="/ui/plugins/{PID}/canary/promote"' in page
    )
    assert_strict(page)
    # The REST door shows the same canary.
    rest = client.get(
        f"/v1/plugins/{PID}/canary", headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    assert rest.status_code == 200 and rest.json()["weight"] == 30
    # The list shows it too, with its forms.
    listing = client.get("/ui/plugins").text
    assert "2.0.0 at 30%" in listing
    assert f'action="/ui/plugins/{PID}/canary/abort"' in listing

    post(client, f"/ui/plugins/{PID}/canary", csrf, version="2.0.0", weight="70")
    assert canary_weight(services) == 70
    assert '<strong id="canary-weight">70%</strong>' in client.get(f"/ui/plugins/{PID}").text

    promoted = post(client, f"/ui/plugins/{PID}/canary/promote", csrf)
    assert promoted.status_code == 303
    assert current(app) == ("2.0.0", "ACTIVE", [])
    assert canary_weight(services) is None
    page = client.get(f"/ui/plugins/{PID}").text
    assert flashes(page) == [f"Canary promoted: {PID} 2.0.0 serves every call."]
    assert 'id="canary-weight"' not in page
    actor = next(a for action, _, a in history(services) if action == "canary_started")
    assert actor.startswith("ops (")
    assert [h[:2] for h in history(services)[-3:]] == [
        ("canary_started", "2.0.0"),
        ("canary_weight", "2.0.0"),
        ("upgraded", "2.0.0"),
    ]


def test_a_canary_aborted_from_the_list_leaves_the_current_version_serving(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    two_versions(services)
    services.lifecycle.start_canary(PID, version="2.0.0", weight=20, actor="alice")
    csrf = sign_in(client, tokens["operator"])

    r = post(client, f"/ui/plugins/{PID}/canary/abort", csrf, next="/ui/plugins")
    assert r.status_code == 303 and r.headers["location"] == "/ui/plugins"
    assert canary_weight(services) is None
    assert current(app)[:2] == ("1.0.0", "ACTIVE")
    listing = client.get("/ui/plugins").text
    assert flashes(listing) == [f"Canary aborted: {PID} 1.0.0 serves every call again."]
    assert "at 20%" not in listing
    assert history(services)[-1][0] == "canary_aborted"
    # Aborting what no longer runs says so, and changes nothing.
    post(client, f"/ui/plugins/{PID}/canary/abort", csrf)
    [said] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert said.startswith(f"abort the canary of {PID}:") and "no canary" in said


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (
            {"version": "2.0.0", "weight": "150"},
            "a canary&#39;s weight is a percentage (0-100), not 150",
        ),
        (
            {"version": "2.0.0", "weight": "abc"},
            "a canary&#39;s weight is a whole percentage (0-100); not &#39;abc&#39;",
        ),
        ({"version": "2.0.0", "weight": ""}, "whole percentage (0-100); it was left empty"),
        ({"version": "9.9.9", "weight": "10"}, f"{PID} 9.9.9 is not installed"),
        ({"version": "", "weight": "10"}, "choose the installed version to run as the canary"),
    ],
    ids=["weight-150", "weight-abc", "weight-empty", "unknown-version", "no-version"],
)
def test_bad_canary_input_is_refused_with_a_clear_message_and_changes_nothing(
    client: TestClient,
    services: Services,
    tokens: dict[str, str],
    fields: dict[str, str],
    said: str,
) -> None:
    two_versions(services)
    csrf = sign_in(client, tokens["operator"])
    r = post(client, f"/ui/plugins/{PID}/canary", csrf, **fields)
    assert r.status_code == 303
    [message] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert message.startswith(f"canary of {PID}: ") and said in message
    assert canary_weight(services) is None
    assert running_versions(services) == ["1.0.0"]
    assert "canary_started" not in [h[0] for h in history(services)]


def test_a_viewer_sees_the_canary_but_no_buttons_and_the_server_refuses_them(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    two_versions(services)
    services.lifecycle.start_canary(PID, version="2.0.0", weight=25, actor="alice")
    csrf = sign_in(client, tokens["viewer"])

    page = client.get(f"/ui/plugins/{PID}").text
    listing = client.get("/ui/plugins").text
    for html in (page, listing):
        assert "2.0.0" in html and "25%" in html  # the canary is shown
        assert "/canary" not in html.replace(f"/ui/plugins/{PID}#canary", "")
        assert "/upgrade" not in html
    assert '<tr data-role="candidate">' in page

    for path, fields in (
        (f"/ui/plugins/{PID}/canary", {"version": "2.0.0", "weight": "90"}),
        (f"/ui/plugins/{PID}/canary/promote", {}),
        (f"/ui/plugins/{PID}/canary/abort", {}),
        (f"/ui/plugins/{PID}/upgrade", {"version": "2.0.0"}),
    ):
        r = post(client, path, csrf, **fields)
        assert r.status_code == 403, path
        assert "needs operator" in r.text, path
    assert client.get(f"/ui/plugins/{PID}/upgrade?version=2.0.0").status_code == 403
    assert canary_weight(services) == 25
    assert current(app)[0] == "1.0.0"


def test_canary_and_upgrade_forms_without_the_csrf_token_are_refused(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    two_versions(services)
    sign_in(client, tokens["operator"])
    for path, fields in (
        (f"/ui/plugins/{PID}/canary", {"version": "2.0.0", "weight": "30"}),
        (f"/ui/plugins/{PID}/upgrade", {"version": "2.0.0"}),
    ):
        missing = client.post(path, data=fields, follow_redirects=False)
        forged = client.post(path, data={"csrf_token": "guess", **fields}, follow_redirects=False)
        for r in (missing, forged):
            assert r.status_code == 403, path
            assert "out of date" in r.text, path
    assert canary_weight(services) is None
    assert current(app)[0] == "1.0.0"

    services.lifecycle.start_canary(PID, version="2.0.0", weight=10, actor="alice")
    r = client.post(f"/ui/plugins/{PID}/canary/promote", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert canary_weight(services) == 10 and current(app)[0] == "1.0.0"


# -- upgrade --------------------------------------------------------------------------------------


def test_the_upgrade_dialog_lists_the_new_permission_and_upgrades_only_once_approved(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    from_catalog(services, app)
    publish(services, "2.0.0", ["read:data", "storage"])
    csrf = sign_in(client, tokens["operator"])

    listing = client.get("/ui/plugins").text
    assert f'href="/ui/plugins/{PID}/upgrade?version=2.0.0&amp;next=/ui/plugins"' in listing
    assert f'action="/ui/plugins/{PID}/upgrade"' not in listing  # no blind one-click upgrade

    dialog = client.get(f"/ui/plugins/{PID}/upgrade", params={"version": "2.0.0"})
    assert dialog.status_code == 200
    html = dialog.text
    assert_strict(html)
    assert '<strong id="upgrade-to">2.0.0</strong>' in html
    assert re.findall(r'name="permission" value="([^"]+)"', html) == ["storage"]
    assert "Keep its own files and key-value data here" in html  # in plain words
    assert "Approve and upgrade" in html
    assert "<code>read:data</code>" in html  # kept, without a box

    refused = post(client, f"/ui/plugins/{PID}/upgrade", csrf, version="2.0.0")
    assert refused.status_code == 409
    assert 'id="upgrade-error"' in refused.text
    assert "Not upgraded" in refused.text and "storage" in refused.text
    assert f"{PID} stays on 1.0.0" in refused.text
    assert current(app) == ("1.0.0", "ACTIVE", ["read:data"])
    assert running_versions(services) == ["1.0.0"]

    done = post(
        client,
        f"/ui/plugins/{PID}/upgrade",
        csrf,
        version="2.0.0",
        permission="storage",
        next="/ui/plugins",
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/plugins"
    assert current(app) == ("2.0.0", "ACTIVE", ["read:data", "storage"])
    assert running_versions(services) == ["2.0.0"]
    assert flashes(client.get("/ui/plugins").text) == [f"{PID} upgraded from 1.0.0 to 2.0.0."]
    assert history(services)[-1][:2] == ("upgraded", "2.0.0")


def test_a_version_that_adds_no_permission_is_a_one_click_confirm(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    from_catalog(services, app)
    publish(services, "1.1.0", ["read:data"])
    csrf = sign_in(client, tokens["admin"])

    html = client.get(f"/ui/plugins/{PID}/upgrade?version=1.1.0").text
    assert 'id="no-new-permissions"' in html
    assert 'name="permission"' not in html
    assert ">Upgrade to 1.1.0</button>" in html

    r = post(client, f"/ui/plugins/{PID}/upgrade", csrf, version="1.1.0")
    assert r.status_code == 303
    assert current(app) == ("1.1.0", "ACTIVE", ["read:data"])


def test_an_unknown_version_is_refused_and_nothing_changes(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    from_catalog(services, app)
    csrf = sign_in(client, tokens["operator"])

    dialog = client.get(f"/ui/plugins/{PID}/upgrade?version=9.9.9")
    assert 400 <= dialog.status_code < 500
    assert "9.9.9" in dialog.text
    assert 'id="upgrade-form"' not in dialog.text

    r = post(client, f"/ui/plugins/{PID}/upgrade", csrf, version="9.9.9")
    assert r.status_code == 303
    [said] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert said.startswith(f"upgrade {PID}: ") and "9.9.9" in said
    assert current(app) == ("1.0.0", "ACTIVE", ["read:data"])


def test_an_installed_version_waiting_to_take_over_is_upgraded_from_its_dialog(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    two_versions(services)
    services.lifecycle.start_canary(PID, version="2.0.0", weight=10, actor="alice")
    csrf = sign_in(client, tokens["operator"])
    page = client.get(f"/ui/plugins/{PID}").text
    assert f'href="/ui/plugins/{PID}/upgrade?version=2.0.0&amp;next=/ui/plugins/{PID}"' in page

    html = client.get(f"/ui/plugins/{PID}/upgrade?version=2.0.0").text
    assert_strict(html)
    assert "a version installed here already" in html
    assert 'name="permission"' not in html
    assert "The canary of 2.0.0 is aborted first." in html

    r = post(client, f"/ui/plugins/{PID}/upgrade", csrf, version="2.0.0")
    assert r.status_code == 303 and r.headers["location"] == f"/ui/plugins/{PID}"
    assert current(app)[:2] == ("2.0.0", "ACTIVE")
    assert running_versions(services) == ["2.0.0"]
    assert canary_weight(services) is None
    assert [h[0] for h in history(services)[-2:]] == ["canary_aborted", "upgraded"]
