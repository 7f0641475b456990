"""A plugin's configuration and limits edited from the UI, in process, over the app the
plugin-page tests build (real SQLite, ``FakeRuntime``, real roles and CSRF): the forms show
what is stored, a good change is stored as the REST PUT stores it (and pushed to a running
plugin), a bad one is refused beside its field with nothing changed, and only the roles the
REST rules allow see the Edit links or get through."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from orchestrator.broker.errors import PluginCallError
from orchestrator.web.pages import plugin_settings
from tests.fixtures import fake_runtime
from tests.unit.services.conftest import Services, services, settings
from tests.unit.web.test_plugin_pages import (
    ADMIN,
    PID,
    assert_strict,
    build_app,
    client,
    csrf_of,
    flashes,
    post,
    sign_in,
    tokens,
)

__all__ = ["client", "services", "settings", "tokens"]  # the shared fixtures

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "init_delay_s": {"type": "number", "minimum": 0, "title": "Start delay"},
        "greeting": {"type": "string", "default": "hello"},
        "mode": {"enum": ["fast", "careful"]},
        "verbose": {"type": "boolean"},
    },
}
CONFIG_PATH = f"/ui/plugins/{PID}/config"
LIMITS_PATH = f"/ui/plugins/{PID}/limits"


@pytest.fixture
def app(services: Services) -> FastAPI:
    """The plugin-page tests' app, with the settings pages. Until ``orchestrator/web/router``
    lists them, their routes go first here: the plugins area's ``POST /plugins/{id}/{action}``
    would otherwise take ``/config`` and ``/limits`` (as it would in ``router.py`` if they
    came after it)."""
    built = build_app(services)
    paths = {getattr(r, "path", None) for r in built.routes}
    if LIMITS_PATH.replace(PID, "{plugin_id}") not in paths:
        settings_routes = APIRouter(prefix="/ui")
        settings_routes.include_router(plugin_settings.router)
        built.router.routes[0:0] = settings_routes.routes
    return built


# -- helpers --------------------------------------------------------------------------------------


def rest_plugin(client: TestClient) -> dict[str, Any]:
    """The plugin as ``GET /v1/plugins/{id}`` shows it."""
    r = client.get(f"/v1/plugins/{PID}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def install(services: Services, *, config: dict[str, Any] | None = None, **changes: Any) -> None:
    services.install(PID, config_schema=changes.pop("config_schema", SCHEMA), **changes)
    if config is not None:
        services.lifecycle.set_config(PID, config)


def field_of(page: str, name: str) -> str:
    """The markup of one form field (its ``data-field`` block)."""
    found = re.search(
        rf'<div class="field[^"]*" data-field="{re.escape(name)}">(.*?)</div>', page, re.S
    )
    assert found, f"no field {name!r} on the page"
    return found.group(1)


def input_value(page: str, name: str) -> str:
    block = field_of(page, name)
    found = re.search(r'<input [^>]*value="([^"]*)"', block) or re.search(
        r"<textarea[^>]*>(.*?)</textarea>", block, re.S
    )
    assert found, block
    return html.unescape(found.group(1))


def field_error(page: str, name: str) -> str:
    found = re.search(r'<p class="field-error"[^>]*>(.*?)</p>', field_of(page, name), re.S)
    return html.unescape(found.group(1)) if found else ""


def pushed_configs(services: Services) -> list[dict[str, Any]]:
    """The configs the running plugin was initialized with, in order."""
    return [config for pid, config, _ in services.plugins.initialized if pid == PID]


# -- configuration --------------------------------------------------------------------------------


def test_the_config_form_shows_the_stored_config(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"init_delay_s": 0.25, "mode": "careful", "verbose": True})
    sign_in(client, tokens["operator"])
    r = client.get(CONFIG_PATH)
    assert r.status_code == 200
    page = r.text
    assert_strict(page)
    assert input_value(page, "init_delay_s") == "0.25"
    assert "Start delay" in field_of(page, "init_delay_s")
    assert "at least 0" in field_of(page, "init_delay_s")
    assert '<option value="&#34;careful&#34;" selected>careful</option>' in field_of(page, "mode")
    assert " checked" in field_of(page, "verbose")
    # Not stored: empty, not the schema's default (saving unchanged writes no default in).
    assert input_value(page, "greeting") == ""
    assert "is LOADED, not running" in page


def test_a_valid_config_is_stored_pushed_to_the_running_plugin_and_said(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"init_delay_s": 0})
    services.lifecycle.enable(PID)
    csrf = sign_in(client, tokens["operator"])
    assert "is running: saving pushes" in client.get(CONFIG_PATH).text

    r = post(
        client,
        CONFIG_PATH,
        csrf,
        **{"config.init_delay_s": "0.5", "config.greeting": "hi there", "config.mode": '"fast"'},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/ui/plugins/{PID}"
    wanted = {"init_delay_s": 0.5, "greeting": "hi there", "mode": "fast", "verbose": False}
    assert rest_plugin(client)["config"] == wanted
    assert pushed_configs(services)[-1] == wanted
    page = client.get(f"/ui/plugins/{PID}").text
    assert flashes(page) == [
        f"Configuration of {PID} saved and pushed to the running plugin "
        "(it was initialized again with it)."
    ]
    assert "hi there" in page  # the Configuration panel shows it


def test_a_config_saved_while_the_plugin_is_not_running_waits_for_its_next_start(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services)
    csrf = sign_in(client, tokens["operator"])
    r = post(client, CONFIG_PATH, csrf, **{"config.init_delay_s": "2"})
    assert r.status_code == 303
    assert rest_plugin(client)["config"] == {"init_delay_s": 2, "verbose": False}
    assert pushed_configs(services) == []
    [said] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert said == (
        f"Configuration of {PID} saved. {PID} is LOADED, not running: "
        "it gets the new configuration when it is next enabled."
    )
    services.lifecycle.enable(PID)
    assert pushed_configs(services)[-1] == {"init_delay_s": 2, "verbose": False}


def test_a_config_the_running_plugin_refuses_is_said_to_be_stored_but_not_pushed(
    client: TestClient, services: Services, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    install(services, config={"init_delay_s": 1})
    services.lifecycle.enable(PID)

    def refuse(*_: Any, **__: Any) -> None:
        raise PluginCallError("initialize failed (500): bad greeting")

    monkeypatch.setattr(fake_runtime._FakeClient, "initialize", refuse)
    csrf = sign_in(client, tokens["operator"])
    r = post(client, CONFIG_PATH, csrf, **{"config.greeting": "nope"})
    assert r.status_code == 303
    # As the REST PUT leaves it: stored, and the push failed.
    assert rest_plugin(client)["config"] == {"greeting": "nope", "verbose": False}
    [said] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert said == html.escape(
        f"Configuration of {PID} saved, but pushing it to the running plugin failed "
        f"(initialize failed (500): bad greeting). Reload {PID} to start it with the new "
        "configuration."
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [("-1", "-1 is less than the minimum of 0"), ("soon", "must be a number")],
    ids=["below-minimum", "not-a-number"],
)
def test_a_config_the_schema_refuses_is_shown_beside_its_field_and_nothing_changes(
    client: TestClient, services: Services, tokens: dict[str, str], value: str, said: str
) -> None:
    install(services, config={"init_delay_s": 1, "greeting": "kept"})
    services.lifecycle.enable(PID)
    before = rest_plugin(client)
    pushed = len(pushed_configs(services))
    csrf = sign_in(client, tokens["operator"])

    r = post(
        client, CONFIG_PATH, csrf, **{"config.init_delay_s": value, "config.greeting": "changed"}
    )
    assert r.status_code == 422
    assert field_error(r.text, "init_delay_s") == said
    assert 'aria-invalid="true"' in field_of(r.text, "init_delay_s")
    assert "Not saved" in r.text
    # What was typed is shown again, to be corrected.
    assert input_value(r.text, "init_delay_s") == value
    assert input_value(r.text, "greeting") == "changed"
    assert_strict(r.text)
    after = rest_plugin(client)
    assert after["config"] == before["config"] and after["updated_at"] == before["updated_at"]
    assert len(pushed_configs(services)) == pushed


def test_stored_keys_the_schema_does_not_describe_are_kept(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"init_delay_s": 1, "legacy_flag": "on"})
    csrf = sign_in(client, tokens["operator"])
    page = client.get(CONFIG_PATH).text
    assert re.search(r'id="config-kept">[^<]*<code>legacy_flag</code>', page)
    post(client, CONFIG_PATH, csrf, **{"config.init_delay_s": "3"})
    assert rest_plugin(client)["config"] == {
        "init_delay_s": 3,
        "legacy_flag": "on",
        "verbose": False,
    }


def test_a_plugin_without_a_config_schema_gets_one_json_field(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"anything": [1, 2]}, config_schema=None)
    csrf = sign_in(client, tokens["operator"])
    page = client.get(CONFIG_PATH).text
    assert '"anything": [' in html.unescape(input_value(page, ""))

    refused = post(client, CONFIG_PATH, csrf, config="[1, 2]")
    assert refused.status_code == 422
    assert field_error(refused.text, "") == "must be a JSON object"
    broken = post(client, CONFIG_PATH, csrf, config="{nope")
    assert broken.status_code == 422 and field_error(broken.text, "") == "must be valid JSON"
    assert rest_plugin(client)["config"] == {"anything": [1, 2]}

    r = post(client, CONFIG_PATH, csrf, config='{"url": "https://example.com", "n": 3}')
    assert r.status_code == 303
    assert rest_plugin(client)["config"] == {"url": "https://example.com", "n": 3}


# -- limits ---------------------------------------------------------------------------------------


def test_the_limits_form_shows_the_stored_limits_and_the_defaults(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services)
    services.lifecycle.set_limits(
        PID, {"concurrency": 4, "quota_policy": {"memory": {"action": "restart"}}}
    )
    sign_in(client, tokens["admin"])
    r = client.get(LIMITS_PATH)
    assert r.status_code == 200
    page = r.text
    assert_strict(page)
    assert input_value(page, "concurrency") == "4"
    assert "At least 1, at most 10000." in field_of(page, "concurrency")
    assert input_value(page, "rate_limit_requests") == ""
    assert f"Empty: the default, {services.settings.rate_limit_requests}." in field_of(
        page, "rate_limit_requests"
    )
    assert '"action": "restart"' in html.unescape(input_value(page, "quota_policy"))
    assert '<option value="">(default: runc)</option>' in field_of(page, "isolation")
    # The manifest's resources are shown, not offered: the REST body does not take them.
    assert re.search(r'id="manifest-resources">.*<dt>memory_mb</dt><dd>96</dd>', page, re.S)
    assert 'name="memory_mb"' not in page


def test_limits_saved_from_the_form_are_stored_and_held_by_the_running_plugin(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services)
    services.lifecycle.set_limits(PID, {"quota_policy": {"memory": {"action": "restart"}}})
    services.lifecycle.enable(PID)
    csrf = sign_in(client, tokens["admin"])
    r = post(
        client,
        LIMITS_PATH,
        csrf,
        rate_limit_requests="50",
        rate_limit_window_s="60",
        concurrency="3",
        isolation="gvisor",
        quota_policy='{"memory": {"action": "warn"}}',
    )
    assert r.status_code == 303 and r.headers["location"] == f"/ui/plugins/{PID}"
    resources = rest_plugin(client)["resources"]
    assert {k: resources.get(k) for k in plugin_settings.LimitsBody.model_fields} == {
        "rate_limit_requests": 50,
        "rate_limit_window_s": 60.0,
        "concurrency": 3,
        "isolation": "gvisor",
        "quota_policy": {"memory": {"action": "warn"}},
    }
    assert resources["memory_mb"] == 96  # the manifest's, untouched
    route = services.broker.route(PID)
    assert route is not None
    assert (route.rate_limit_requests, route.rate_limit_window_s, route.concurrency) == (
        50,
        60.0,
        3,
    )
    [said] = flashes(client.get(f"/ui/plugins/{PID}").text)
    assert said.startswith(f"Limits of {PID} saved. Its calls are held to the rate")
    assert "The isolation tier (gvisor) takes effect at its next reload or start." in said

    # Emptied fields go back to the defaults, as nulls in the REST body do.
    post(client, LIMITS_PATH, csrf, concurrency="3")
    resources = rest_plugin(client)["resources"]
    assert resources.get("concurrency") == 3
    assert not {"rate_limit_requests", "isolation", "quota_policy"} & set(resources)
    route = services.broker.route(PID)
    assert route is not None and route.rate_limit_requests is None


@pytest.mark.parametrize(
    ("fields", "name", "said"),
    [
        ({"concurrency": "0"}, "concurrency", "Input should be greater than or equal to 1"),
        ({"concurrency": "20000"}, "concurrency", "Input should be less than or equal to 10000"),
        (
            {"rate_limit_requests": "abc"},
            "rate_limit_requests",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"rate_limit_window_s": "1e9"},
            "rate_limit_window_s",
            "Input should be less than or equal to 86400",
        ),
        ({"rate_limit_window_s": "0"}, "rate_limit_window_s", "Input should be greater than 0"),
        ({"isolation": "kata"}, "isolation", "Input should be 'runc' or 'gvisor'"),
        ({"quota_policy": "[1]"}, "quota_policy", "Input should be a valid dictionary"),
        ({"quota_policy": '{"memory": {"action": "explode"}}'}, "quota_policy", "memory."),
    ],
    ids=[
        "concurrency-0",
        "concurrency-huge",
        "rate-abc",
        "window-huge",
        "window-0",
        "isolation",
        "policy-not-object",
        "policy-bad-action",
    ],
)
def test_a_bad_limit_is_refused_beside_its_field_and_nothing_changes(
    client: TestClient,
    services: Services,
    tokens: dict[str, str],
    fields: dict[str, str],
    name: str,
    said: str,
) -> None:
    install(services)
    services.lifecycle.set_limits(PID, {"concurrency": 5, "rate_limit_requests": 40})
    before = rest_plugin(client)
    csrf = sign_in(client, tokens["admin"])
    # A good change in another field goes nowhere either: the form is saved whole or not.
    typed = {"rate_limit_requests": "7", "concurrency": "5", **fields}
    r = post(client, LIMITS_PATH, csrf, **typed)
    assert r.status_code == 422
    assert said in field_error(r.text, name)
    assert "Not saved" in r.text
    if name != "isolation":  # a select cannot show a value it does not offer
        assert input_value(r.text, name) == typed[name]  # to be corrected
    assert_strict(r.text)
    after = rest_plugin(client)
    assert after["resources"] == before["resources"]
    assert after["updated_at"] == before["updated_at"]


# -- who may ----------------------------------------------------------------------------------


def test_edit_links_follow_the_rest_rules(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services)
    sign_in(client, tokens["admin"])
    page = client.get(f"/ui/plugins/{PID}").text
    assert f'id="edit-config" href="{CONFIG_PATH}"' in page
    assert f'id="edit-limits" href="{LIMITS_PATH}"' in page
    assert_strict(page)

    # An operator may PUT the config, not the limits (admin only in security/access.py).
    post(client, "/ui/sign-out", csrf_of(page))
    csrf = sign_in(client, tokens["operator"])
    page = client.get(f"/ui/plugins/{PID}").text
    assert 'id="edit-config"' in page and 'id="edit-limits"' not in page
    assert client.get(LIMITS_PATH).status_code == 403
    r = post(client, LIMITS_PATH, csrf, concurrency="2")
    assert r.status_code == 403 and "needs admin" in r.text
    assert "concurrency" not in rest_plugin(client)["resources"]


def test_a_viewer_sees_no_edit_links_and_the_server_refuses_the_pages_and_the_forms(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"init_delay_s": 1})
    before = rest_plugin(client)
    csrf = sign_in(client, tokens["viewer"])
    page = client.get(f"/ui/plugins/{PID}").text
    assert "edit-config" not in page and "edit-limits" not in page
    assert CONFIG_PATH not in page and LIMITS_PATH not in page
    for path in (CONFIG_PATH, LIMITS_PATH):
        assert client.get(path).status_code == 403, path
    refused = [
        post(client, CONFIG_PATH, csrf, **{"config.init_delay_s": "9"}),
        post(client, LIMITS_PATH, csrf, concurrency="2"),
    ]
    assert [r.status_code for r in refused] == [403, 403]
    assert "needs operator" in refused[0].text and "needs admin" in refused[1].text
    after = rest_plugin(client)
    assert (after["config"], after["resources"]) == (before["config"], before["resources"])


def test_settings_forms_without_the_csrf_token_are_refused(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    install(services, config={"init_delay_s": 1})
    before = rest_plugin(client)
    sign_in(client, tokens["admin"])
    for path, fields in (
        (CONFIG_PATH, {"config.init_delay_s": "9"}),
        (LIMITS_PATH, {"concurrency": "2"}),
    ):
        missing = client.post(path, data=fields, follow_redirects=False)
        forged = client.post(path, data={"csrf_token": "guess", **fields}, follow_redirects=False)
        for r in (missing, forged):
            assert r.status_code == 403, path
            assert "out of date" in r.text, path
    after = rest_plugin(client)
    assert (after["config"], after["resources"]) == (before["config"], before["resources"])


def test_a_plugin_not_installed_is_a_404_page(client: TestClient, tokens: dict[str, str]) -> None:
    csrf = sign_in(client, tokens["admin"])
    for r in (
        client.get("/ui/plugins/com.example.absent/config"),
        client.get("/ui/plugins/com.example.absent/limits"),
        post(client, "/ui/plugins/com.example.absent/config", csrf, config="{}"),
        post(client, "/ui/plugins/com.example.absent/limits", csrf, concurrency="2"),
    ):
        assert r.status_code == 404
        assert "text/html" in r.headers["content-type"]
        assert "com.example.absent" in r.text
