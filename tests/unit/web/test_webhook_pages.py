"""The webhook forms in process: a webhook created, changed and deleted from the UI over a
real :class:`WebhookService` on a real database, next to the REST routes it stands for (what
the form stored is what ``GET /v1/webhooks/{id}`` answers). Refused forms store nothing and
say why next to the field; a new webhook's secret is shown once. Roles and CSRF are the real
ones (``AdminAccess`` over real API tokens): webhooks are the admin's."""

from __future__ import annotations

import html as markup
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.engine import Engine
from starlette.routing import NoMatchFound

from orchestrator import web
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.routes import webhooks as webhook_routes
from orchestrator.security.access import ApiTokens
from orchestrator.security.secretbox import SecretBox
from orchestrator.services.extensions import AdminAccess
from orchestrator.services.webhooks import RetryPolicy, WebhookService
from orchestrator.web.pages import webhook_forms
from tests.fixtures.ui import assert_strict, post
from tests.fixtures.ui import sign_in as ui_sign_in

ADMIN = "ui-webhook-pages-admin"
# The service here allows 127.0.0.0/8 (SUMMIT_WEBHOOK_ALLOW_PRIVATE), so these need no DNS
# and reach nothing: no sender runs.
RECEIVER = "http://127.0.0.1:9/summit"
OTHER_RECEIVER = "http://127.0.0.2:9/other"
DEFAULTS = RetryPolicy(
    max_attempts=5, backoff_base_s=1.0, backoff_cap_s=60.0, timeout_s=5.0, pause_after=10
)


def mount(app: FastAPI, engine: Engine, state_dir: Path) -> FastAPI:
    tokens = ApiTokens(engine)
    app.state.api_tokens = tokens
    app.state.access = AdminAccess(admin_token=ADMIN, tokens=tokens)
    app.state.webhooks = WebhookService(
        engine,
        secrets=SecretBox.from_settings(None, state_dir),
        defaults=DEFAULTS,
        allow_private=["127.0.0.0/8"],
    )
    return app


@pytest.fixture
def app(engine: Engine, tmp_path: Path) -> FastAPI:
    """The UI and the webhooks' REST routes. The forms' router goes before the UI's, as
    ``router.py`` mounts it: the operations pages' ``/webhooks/{id}`` would take ``/new``."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(webhook_routes.router)
    app.include_router(webhook_forms.router, prefix="/ui")
    app.include_router(web.router)
    return mount(app, engine, tmp_path)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def service(app: FastAPI) -> WebhookService:
    found: WebhookService = app.state.webhooks
    return found


def sign_in(client: TestClient, token: str) -> str:
    """Sign in with ``token``; the session's CSRF token."""
    return ui_sign_in(client, token, landing="/ui/webhooks")


def flashes(html: str) -> list[str]:
    found = re.findall(r'<p class="flash flash-(?:ok|error)" role="\w+">([^<]*)</p>', html)
    return [markup.unescape(f) for f in found]


def rest_get(client: TestClient, webhook_id: str) -> Response:
    return client.get(f"/v1/webhooks/{webhook_id}", headers={"Authorization": f"Bearer {ADMIN}"})


def a_webhook(service: WebhookService, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "url": RECEIVER,
        "types": ["plugin.*"],
        "where": [],
        "transform": {"jmespath": "payload"},
        "description": "ops chat",
        "secret": None,
        "policy": {},
        **changes,
    }
    return service.create(**body)


NEW = {
    "url": RECEIVER,
    "types": "plugin.*, order.created\nwebhook.paused",
    "description": "orders to the billing service",
    "where": '[{"field": "payload.total", "op": "gte", "value": 100}]',
    "transform_kind": "jmespath",
    "jmespath": "{order: payload.id, amount: payload.total}",
    "template": "",
    "max_attempts": "3",
    "backoff_base_s": "",
    "backoff_cap_s": "120",
    "timeout_s": "",
    "pause_after": "",
}


# -- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_an_admin_creates_a_webhook_and_sees_its_secret_once(
    client: TestClient, service: WebhookService
) -> None:
    csrf = sign_in(client, ADMIN)
    listing = client.get("/ui/webhooks").text
    assert 'href="/ui/webhooks/new"' in listing

    form = client.get("/ui/webhooks/new")
    assert form.status_code == 200 and 'action="/ui/webhooks/new"' in form.text
    assert 'placeholder="5"' in form.text  # the orchestrator's default attempts
    assert_strict(form.text)

    created = post(client, "/ui/webhooks/new", csrf, **NEW)
    assert created.status_code == 201, created.text
    assert_strict(created.text)
    secret = re.search(r'id="webhook-secret">([^<]+)</pre>', created.text)
    assert secret and secret.group(1).startswith("whsec_")
    assert "Summit-Signature" in created.text and "HMAC-SHA256" in created.text

    [hook] = service.list()
    assert hook["id"] in created.text
    # Not on the next page loads: it is kept sealed.
    for page in ("/ui/webhooks", f"/ui/webhooks/{hook['id']}"):
        html = client.get(page).text
        assert hook["id"] in html and secret.group(1) not in html

    rest = rest_get(client, hook["id"])
    assert rest.status_code == 200
    view = rest.json()
    assert view["url"] == RECEIVER
    assert view["types"] == ["plugin.*", "order.created", "webhook.paused"]
    assert view["where"] == [{"field": "payload.total", "op": "gte", "value": 100}]
    assert view["transform"] == {"jmespath": "{order: payload.id, amount: payload.total}"}
    assert view["description"] == "orders to the billing service"
    assert view["policy"] == {
        "max_attempts": 3,
        "backoff_base_s": 1.0,  # left empty: the default
        "backoff_cap_s": 120.0,
        "timeout_s": 5.0,
        "pause_after": 10,
    }


def test_a_secret_of_ones_own_and_a_template_transform(
    client: TestClient, service: WebhookService
) -> None:
    csrf = sign_in(client, ADMIN)
    fields = {
        **NEW,
        "secret": "my-own-secret-of-enough-length",
        "transform_kind": "template",
        "template": '{"text": "{{ type }} from {{ source }}", "id": "{{ id }}"}',
        "where": "",
    }
    created = post(client, "/ui/webhooks/new", csrf, **fields)
    assert created.status_code == 201, created.text
    assert 'id="webhook-secret">my-own-secret-of-enough-length</pre>' in created.text
    [hook] = service.list()
    assert hook["where"] == []
    assert hook["transform"] == {
        "template": {"text": "{{ type }} from {{ source }}", "id": "{{ id }}"}
    }


REFUSED = [
    pytest.param({"url": "ftp://127.0.0.1/hook"}, "wh-url-error", "webhook url:", id="not-http"),
    pytest.param(
        {"url": "http://10.1.2.3/hook"},
        "wh-url-error",
        "SUMMIT_WEBHOOK_ALLOW_PRIVATE",
        id="private-address",
    ),
    pytest.param({"types": " , "}, "wh-types-error", "types:", id="no-types"),
    pytest.param({"types": "plugin/*"}, "wh-types-error", "is not a type pattern", id="bad-type"),
    pytest.param(
        {"where": '[{"field": "payload.total", '},
        "wh-where-error",
        "where: not JSON",
        id="bad-json",
    ),
    pytest.param(
        {"where": '[{"field": "secrets.x", "value": 1}]'},
        "wh-where-error",
        "where[0]: field must start with one of",
        id="bad-predicate",
    ),
    pytest.param(
        {"where": '{"field": "payload.total"}'}, "wh-where-error", "where:", id="where-not-a-list"
    ),
    pytest.param(
        {"jmespath": "payload.[["},
        "wh-transform-error",
        "transform.jmespath:",
        id="bad-jmespath",
    ),
    pytest.param(
        {"transform_kind": "template", "template": "{nope"},
        "wh-transform-error",
        "transform.template: not JSON",
        id="bad-template",
    ),
    pytest.param(
        {"max_attempts": "0"},
        "wh-max_attempts-error",
        "policy.max_attempts: between 1 and 50",
        id="max-attempts-0",
    ),
    pytest.param(
        {"max_attempts": "many"},
        "wh-max_attempts-error",
        "policy.max_attempts: Input should be a valid integer",
        id="max-attempts-not-a-number",
    ),
    pytest.param(
        {"backoff_base_s": "30", "backoff_cap_s": "10"},
        "wh-backoff_cap_s-error",
        "policy.backoff_cap_s: at least backoff_base_s",
        id="cap-below-base",
    ),
    pytest.param(
        {"secret": "too-short"}, "wh-secret-error", "secret: at least 16 characters", id="secret"
    ),
    pytest.param(
        {"description": "x" * 513},
        "wh-description-error",
        "description: String should have at most 512 characters",
        id="long-description",
    ),
]


@pytest.mark.parametrize(("changes", "where", "reason"), REFUSED)
def test_a_refused_form_says_why_next_to_the_field_and_stores_nothing(
    client: TestClient, service: WebhookService, changes: dict[str, str], where: str, reason: str
) -> None:
    csrf = sign_in(client, ADMIN)
    r = post(client, "/ui/webhooks/new", csrf, **{**NEW, **changes})
    assert r.status_code == 422, r.text
    assert reason in re.search(r'id="webhook-error">([^<]*)<', r.text).group(1)  # type: ignore[union-attr]
    beside = re.search(rf'id="{where}">([^<]*)<', r.text)
    assert beside and reason in markup.unescape(beside.group(1))
    # The form comes back as it was typed.
    url = changes.get("url", NEW["url"])
    assert f'value="{url}"' in r.text
    assert 'name="jmespath" value="' in r.text
    assert_strict(r.text)
    assert service.list() == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_refused_create_leaves_no_row_on_postgres(
    client: TestClient, service: WebhookService
) -> None:
    csrf = sign_in(client, ADMIN)
    r = post(client, "/ui/webhooks/new", csrf, **{**NEW, "max_attempts": "0"})
    assert r.status_code == 422
    assert service.list() == []
    assert rest_get(client, "wh_anything").status_code == 404


# -- edit -----------------------------------------------------------------------------------------


def test_an_admin_changes_the_types_policy_and_transform(
    client: TestClient, service: WebhookService
) -> None:
    hook = a_webhook(service, where=[{"field": "payload.x", "op": "eq", "value": 1}])
    csrf = sign_in(client, ADMIN)
    page = client.get(f"/ui/webhooks/{hook['id']}").text
    assert f'href="/ui/webhooks/{hook["id"]}/edit"' in page

    form = client.get(f"/ui/webhooks/{hook['id']}/edit")
    assert form.status_code == 200
    assert_strict(form.text)
    html = form.text
    assert f'value="{RECEIVER}"' in html and ">plugin.*</textarea>" in html
    assert 'name="max_attempts" type="number" step="1" value="5"' in html
    assert 'value="payload"' in html and 'value="jmespath" checked' in html
    assert "&#34;payload.x&#34;" in html  # the predicates, as JSON
    assert 'name="secret"' not in html  # no way to change the secret (REST has none)

    changed = post(
        client,
        f"/ui/webhooks/{hook['id']}/edit",
        csrf,
        url=RECEIVER,
        types="order.*\nwebhook.*",
        description="ops chat",
        where='[{"field": "payload.x", "op": "eq", "value": 1}]',
        transform_kind="",
        jmespath="payload",
        max_attempts="7",
        backoff_base_s="1",
        backoff_cap_s="60",
        timeout_s="2.5",
        pause_after="10",
    )
    assert (
        changed.status_code == 303 and changed.headers["location"] == f"/ui/webhooks/{hook['id']}"
    )
    assert flashes(client.get(changed.headers["location"]).text) == [
        f"Webhook {hook['id']} changed: policy, transform, types."
    ]
    view = rest_get(client, hook["id"]).json()
    assert view["types"] == ["order.*", "webhook.*"]
    assert view["transform"] is None
    assert view["where"] == [{"field": "payload.x", "op": "eq", "value": 1}]
    assert view["policy"] == {
        "max_attempts": 7,
        "backoff_base_s": 1.0,
        "backoff_cap_s": 60.0,
        "timeout_s": 2.5,
        "pause_after": 10,
    }

    # A refused change is shown in the form and changes nothing.
    refused = post(
        client,
        f"/ui/webhooks/{hook['id']}/edit",
        csrf,
        url=OTHER_RECEIVER,
        types="order.*",
        where="",
        max_attempts="51",
    )
    assert refused.status_code == 422
    assert "policy.max_attempts: between 1 and 50" in refused.text
    assert f'value="{OTHER_RECEIVER}"' in refused.text
    assert rest_get(client, hook["id"]).json() == view


def test_an_edit_that_changes_nothing_says_so(client: TestClient, service: WebhookService) -> None:
    hook = a_webhook(service)
    before = service.get(hook["id"])
    csrf = sign_in(client, ADMIN)
    html = client.get(f"/ui/webhooks/{hook['id']}/edit").text
    fields = dict(
        re.findall(r'<input id="wh-[a-z_]+" name="([a-z_]+)"[^>]*? value="([^"]*)"', html)
    )
    assert fields["url"] == RECEIVER and fields["max_attempts"] == "5"
    r = post(
        client,
        f"/ui/webhooks/{hook['id']}/edit",
        csrf,
        **fields,
        types="plugin.*",
        transform_kind="jmespath",
    )
    assert r.status_code == 303
    assert flashes(client.get(r.headers["location"]).text) == [
        f"Webhook {hook['id']}: nothing to change."
    ]
    assert service.get(hook["id"]) == before


def test_editing_an_unknown_webhook_is_a_404(client: TestClient) -> None:
    csrf = sign_in(client, ADMIN)
    assert client.get("/ui/webhooks/wh_nothing/edit").status_code == 404
    assert post(client, "/ui/webhooks/wh_nothing/edit", csrf, **NEW).status_code == 404


# -- delete ---------------------------------------------------------------------------------------


def test_delete_needs_the_webhooks_id_typed(client: TestClient, service: WebhookService) -> None:
    hook = a_webhook(service)
    csrf = sign_in(client, ADMIN)
    page = client.get(f"/ui/webhooks/{hook['id']}").text
    assert f'action="/ui/webhooks/{hook["id"]}/delete"' in page and 'name="confirm"' in page

    for typed in ("", "yes", hook["id"][:-1]):
        r = post(client, f"/ui/webhooks/{hook['id']}/delete", csrf, confirm=typed)
        assert r.status_code == 303 and r.headers["location"] == f"/ui/webhooks/{hook['id']}"
        assert flashes(client.get(r.headers["location"]).text) == [
            f"delete {hook['id']}: type the webhook's id ({hook['id']}) to delete it"
        ]
        assert rest_get(client, hook["id"]).status_code == 200

    r = post(client, f"/ui/webhooks/{hook['id']}/delete", csrf, confirm=hook["id"])
    assert r.status_code == 303 and r.headers["location"] == "/ui/webhooks"
    after = client.get("/ui/webhooks").text
    assert flashes(after) == [f"Webhook {hook['id']} deleted with its delivery history."]
    assert hook["id"] not in after.replace(f"Webhook {hook['id']} deleted", "")
    assert rest_get(client, hook["id"]).status_code == 404
    assert service.list() == []


# -- who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_an_admin_sees_the_links_and_the_server_refuses_the_others(
    client: TestClient, app: FastAPI, service: WebhookService, role: str
) -> None:
    hook = a_webhook(service)
    token = app.state.api_tokens.create(name=role, role=role).token
    csrf = sign_in(client, token)
    listing = client.get("/ui/webhooks").text
    assert hook["id"] in listing and "/ui/webhooks/new" not in listing
    page = client.get(f"/ui/webhooks/{hook['id']}").text
    assert "/edit" not in page and "/delete" not in page and 'name="confirm"' not in page

    assert client.get("/ui/webhooks/new").status_code == 403
    assert client.get(f"/ui/webhooks/{hook['id']}/edit").status_code == 403
    assert post(client, "/ui/webhooks/new", csrf, **NEW).status_code == 403
    edit = post(client, f"/ui/webhooks/{hook['id']}/edit", csrf, **{**NEW, "max_attempts": "9"})
    assert edit.status_code == 403
    delete = post(client, f"/ui/webhooks/{hook['id']}/delete", csrf, confirm=hook["id"])
    assert delete.status_code == 403

    [still] = service.list()
    assert still["id"] == hook["id"] and still["types"] == ["plugin.*"]
    assert still["policy"]["max_attempts"] == 5


def test_a_form_without_the_sessions_csrf_token_is_refused(
    client: TestClient, service: WebhookService
) -> None:
    hook = a_webhook(service)
    sign_in(client, ADMIN)
    for path, fields in (
        ("/ui/webhooks/new", NEW),
        (f"/ui/webhooks/{hook['id']}/edit", {**NEW, "max_attempts": "9"}),
        (f"/ui/webhooks/{hook['id']}/delete", {"confirm": hook["id"]}),
    ):
        missing = client.post(path, data=fields, follow_redirects=False)
        assert missing.status_code == 403 and "out of date" in missing.text, path
        assert post(client, path, "guessed", **fields).status_code == 403, path
    [still] = service.list()
    assert still["id"] == hook["id"] and still["policy"]["max_attempts"] == 5


def test_the_ui_router_serves_the_new_webhook_form(engine: Engine, tmp_path: Path) -> None:
    """Once ``router.py`` mounts these pages, ``/ui/webhooks/new`` is the form, not the
    operations pages' webhook ``new``."""
    try:
        web.router.url_path_for("ui_webhook_new")
    except NoMatchFound:
        pytest.skip("orchestrator/web/router.py does not mount webhook_forms yet")
    app = FastAPI()
    app.include_router(web.router)
    mount(app, engine, tmp_path)
    with TestClient(app, base_url="http://testserver") as c:
        sign_in(c, ADMIN)
        r = c.get("/ui/webhooks/new")
        assert r.status_code == 200 and 'id="webhook-form"' in r.text
