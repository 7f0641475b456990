"""The web UI in process (no browser, no Docker): sessions, CSRF, roles, the security headers
and escaping, behind the real access rule (``AdminAccess`` over real API tokens in a real
database). The browser suite (``test_ui_browser.py``) drives the same pages end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator import web
from orchestrator.security.access import ApiTokens
from orchestrator.services.extensions import AdminAccess
from orchestrator.services.plugins import PluginQueries
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from orchestrator.web import assets
from orchestrator.web.config_form import ConfigForm
from orchestrator.web.guard import safe_next
from orchestrator.web.readme import render_markdown
from orchestrator.web.sessions import SessionStore
from tests.fixtures.fake_runtime import FakeRuntime
from tests.fixtures.ui import csrf_of
from tests.fixtures.ui import submit_sign_in as sign_in

ADMIN = "ui-admin-secret"
PLUGIN = "com.local.widget"
HOSTILE_NAME = '<script>alert("name")</script>'


class RecordingLifecycle:
    """Stands in for the lifecycle service: records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def enable(self, plugin_id: str, *, actor: str) -> None:
        self.calls.append(("enable", plugin_id, actor))

    def disable(self, plugin_id: str, *, cascade: bool, actor: str) -> None:
        self.calls.append(("disable", plugin_id, actor))


@pytest.fixture
def tokens(engine: Engine) -> ApiTokens:
    return ApiTokens(engine)


@pytest.fixture
def lifecycle() -> RecordingLifecycle:
    return RecordingLifecycle()


@pytest.fixture
def app(engine: Engine, tokens: ApiTokens, lifecycle: RecordingLifecycle) -> FastAPI:
    with session_scope(engine) as s:
        crud.add_plugin(
            s, plugin_id=PLUGIN, version="1.0.0", state="LOADED", config={}, resources={}
        )
        crud.add_version(
            s,
            plugin_id=PLUGIN,
            version="1.0.0",
            manifest={"id": PLUGIN, "version": "1.0.0", "name": HOSTILE_NAME},
            image="summit-plugin/com.local.widget:1.0.0",
            image_id=None,
            source="bundle",
            source_digest=None,
        )
    app = FastAPI()
    app.include_router(web.router)
    app.state.access = AdminAccess(admin_token=ADMIN, tokens=tokens)
    app.state.api_tokens = tokens
    app.state.queries = PluginQueries(engine=engine, runtime=FakeRuntime())
    app.state.lifecycle = lifecycle
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def test_signing_in_gives_a_strict_http_only_cookie_and_a_bad_token_is_refused(
    client: TestClient,
) -> None:
    refused = sign_in(client, "not-a-token")
    assert refused.status_code == 401
    assert "was not accepted" in refused.text
    assert "summit_ui=" not in refused.headers.get("set-cookie", "")

    r = sign_in(client, ADMIN)
    assert r.status_code == 303 and r.headers["location"] == "/ui/plugins"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("summit_ui="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure
    assert ADMIN not in cookie  # the token stays on the server
    page = client.get("/ui/plugins")
    assert page.status_code == 200 and "admin token" in page.text


def test_the_cookie_is_secure_over_https(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as c:
        cookie = sign_in(c, ADMIN).headers["set-cookie"]
        assert "Secure" in cookie
    with TestClient(app, base_url="http://testserver") as c:
        assert "Secure" not in sign_in(c, ADMIN).headers["set-cookie"]


def test_behind_a_proxy_that_terminates_tls_the_cookie_is_secure(app: FastAPI) -> None:
    """What the chart sets with an Ingress that has TLS: the pod sees plain HTTP."""
    with TestClient(app, base_url="http://testserver") as c:
        assert "Secure" not in c.get("/ui/sign-in").headers["set-cookie"]
        app.state.settings = SimpleNamespace(ui_secure_cookies=True)
        assert "Secure" in c.get("/ui/sign-in").headers["set-cookie"]


def test_pages_need_a_session_and_a_forged_cookie_is_not_one(client: TestClient) -> None:
    r = client.get("/ui/plugins", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/sign-in?next=/ui/plugins"
    client.cookies.set("summit_ui", "made-up.value", path="/ui")
    assert client.get("/ui/plugins", follow_redirects=False).status_code == 303


def test_every_answer_has_the_strict_csp(client: TestClient) -> None:
    sign_in(client, ADMIN)
    for path in ("/ui/sign-in", "/ui/plugins", "/ui/plugins/com.nothing.here", "/ui/static/ui.css"):
        r = client.get(path, follow_redirects=False)
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, path
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert r.headers["x-content-type-options"] == "nosniff", path
    missing = client.get("/ui/plugins/com.nothing.here")
    assert missing.status_code == 404 and "is not installed" in missing.text


def test_pages_have_no_inline_script_or_style(client: TestClient) -> None:
    sign_in(client, ADMIN)
    html = client.get("/ui/plugins").text
    assert "<script>" not in html and "style=" not in html and " on" + "click=" not in html
    for src in re.findall(r'<script src="([^"]+)"', html):
        assert src.startswith("/ui/static/")


def test_what_a_plugin_supplies_is_escaped(client: TestClient) -> None:
    sign_in(client, ADMIN)
    html = client.get("/ui/plugins").text
    assert HOSTILE_NAME not in html
    assert "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;" in html


def test_an_operator_enables_and_a_post_without_the_csrf_token_is_refused(
    client: TestClient, tokens: ApiTokens, lifecycle: RecordingLifecycle
) -> None:
    operator = tokens.create(name="ops", role="operator")
    sign_in(client, operator.token)
    page = client.get("/ui/plugins").text
    assert 'action="/ui/plugins/com.local.widget/enable"' in page

    forged = client.post(f"/ui/plugins/{PLUGIN}/enable", data={"csrf_token": "guess"})
    assert forged.status_code == 403 and "out of date" in forged.text
    assert lifecycle.calls == []

    done = client.post(
        f"/ui/plugins/{PLUGIN}/enable", data={"csrf_token": csrf_of(page)}, follow_redirects=False
    )
    assert done.status_code == 303
    assert lifecycle.calls == [("enable", PLUGIN, f"ops ({operator.id})")]


def test_a_viewer_sees_no_buttons_and_the_server_refuses_them_anyway(
    client: TestClient, tokens: ApiTokens, lifecycle: RecordingLifecycle
) -> None:
    viewer = tokens.create(name="looker", role="viewer")
    sign_in(client, viewer.token)
    page = client.get("/ui/plugins").text
    assert PLUGIN in page
    assert "/enable" not in page and "Install from the marketplace" not in page
    assert 'href="/ui/tokens"' not in page  # an admin page is not offered either

    r = client.post(f"/ui/plugins/{PLUGIN}/enable", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 403
    assert "needs operator" in r.text
    assert lifecycle.calls == []
    assert client.get("/ui/tokens").status_code == 403


def test_revoking_the_token_ends_its_session(client: TestClient, tokens: ApiTokens) -> None:
    operator = tokens.create(name="ops", role="operator")
    sign_in(client, operator.token)
    assert client.get("/ui/plugins").status_code == 200
    tokens.revoke(operator.id)
    r = client.get("/ui/plugins", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/sign-in")


def test_signing_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, ADMIN)
    page = client.get("/ui/plugins").text
    r = client.post("/ui/sign-out", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/ui/plugins", follow_redirects=False).status_code == 303


def test_without_the_vendor_files_pages_work_and_say_so(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(assets, "VENDOR", tmp_path / "missing")
    sign_in(client, ADMIN)
    html = client.get("/ui/plugins").text
    assert 'id="no-scripts"' in html
    assert "htmx.min.js" not in html and "hx-boost" not in html
    assert 'action="/ui/plugins/com.local.widget/enable"' in html  # plain forms still work


def test_readme_markdown_runs_nothing() -> None:
    html = str(
        render_markdown(
            "# T <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
            "[x](javascript:alert(1)) ![i](https://tracker.example/p.png)\n\n"
            "| a |\n|:-:|\n| b |\n"
        )
    )
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html and "style=" not in html
    assert '<th class="align-center">' in html


def test_the_config_form_carries_the_apis_validation_messages() -> None:
    from starlette.datastructures import FormData

    from orchestrator.domain.manifest import Manifest

    manifest = Manifest.model_validate(
        {
            "schema_version": 1,
            "id": PLUGIN,
            "name": "Widget",
            "version": "1.0.0",
            "runtime": {"base": "python", "entrypoint": "w:plugin"},
            "config_schema": {
                "type": "object",
                "required": ["city"],
                "properties": {
                    "city": {"type": "string", "minLength": 2},
                    "delay": {"type": "number", "minimum": 0},
                    "debug": {"type": "boolean"},
                },
            },
        }
    )
    form = ConfigForm(manifest)
    assert [(f.name, f.kind) for f in form.fields] == [
        ("city", "text"),
        ("delay", "number"),
        ("debug", "checkbox"),
    ]
    config = form.read(FormData([("config.delay", "-1")]))
    errors = {f.name: f.error for f in form.fields}
    assert errors["city"] == "is required"
    assert errors["delay"] == "-1 is less than the minimum of 0"
    assert config == {"delay": -1, "debug": False}

    form = ConfigForm(manifest)
    config = form.read(FormData([("config.city", "Oslo"), ("config.debug", "1")]))
    assert not form.has_errors and config == {"city": "Oslo", "debug": True}


def test_sessions_expire_when_idle() -> None:
    now = [1000.0]
    store = SessionStore(idle_s=60, max_age_s=3600, clock=lambda: now[0])
    session = store.create(token="t", actor="a")
    cookie = store.cookie_value(session)
    now[0] += 59
    found = store.get(cookie)
    assert found is not None and found.id == session.id
    assert store.get(cookie.replace(".", ".x")) is None  # the signature is checked
    now[0] += 61
    assert store.get(cookie) is None and len(store) == 0


def test_returning_after_a_form_stays_inside_the_ui() -> None:
    assert safe_next("/ui/plugins/x") == "/ui/plugins/x"
    for bad in ("https://evil.example/", "//evil.example/ui", "/v1/tokens", "/ui\\x", None):
        assert safe_next(bad) == "/ui/plugins"


def test_pages_answer_head_as_get(client: TestClient) -> None:
    sign_in(client, ADMIN)
    for path in ("/ui/plugins", "/ui/sign-in", "/ui/static/ui.css"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.headers["content-security-policy"] == got.headers["content-security-policy"]
    assert client.head("/ui/plugins/com.nobody.here").status_code == 404
