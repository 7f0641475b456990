"""``/graphql`` in process, beside the REST routes it mirrors, over the plugin services wired as
the app wires them (real SQLite, ``FakeRuntime`` for Docker).

What a user of the GraphQL door would notice: the same plugins, history, usage, catalog, events
and webhooks as REST; mutations that change what REST shows and refuse what REST refuses with
the same code; the REST roles (a viewer cannot enable, no token is a 401); documents over the
depth, alias, token and cost limits refused before they run; no introspection and no internal
error text outside development; a list of 50 plugins costing the same database reads as a
list of 5; subscriptions over graphql-transport-ws only, judged at connection_init.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.websockets import WebSocketDisconnect

from orchestrator.api.errors import install_error_handlers
from orchestrator.api.graphql import make_graphql_router
from orchestrator.api.routes import catalog as catalog_routes
from orchestrator.api.routes import events as event_routes
from orchestrator.api.routes import extensions as extension_routes
from orchestrator.api.routes import plugins as plugin_routes
from orchestrator.api.routes import usage as usage_routes
from orchestrator.api.routes import webhooks as webhook_routes
from orchestrator.broker import Broker, BrokerLimits, Route
from orchestrator.broker.transport import H1Response
from orchestrator.catalog.installer import CatalogInstaller
from orchestrator.catalog.service import CatalogCache, CatalogService
from orchestrator.config import Settings
from orchestrator.domain.manifest import Extension, ExtensionPoint, Manifest
from orchestrator.events.fanout import Fanout
from orchestrator.monitor.series import UsageSeries
from orchestrator.monitor.service import UsageService
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.runtime.endpoints import UnixEndpoint
from orchestrator.security.access import ApiTokens
from orchestrator.security.secretbox import SecretBox
from orchestrator.services.plugins import PluginQueries
from orchestrator.services.webhooks import RetryPolicy, WebhookService
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.plugins import PLUGINS
from tests.unit.services.conftest import Services, services, settings

__all__ = ["services", "settings"]  # the services' fixtures, shared

PID = "com.summit-tests.probe"
OTHER = "com.summit-tests.other"
REGISTRY = "registry.example"
MIB = 1024 * 1024

PLUGIN_FIELDS = """
  id version pendingVersion state stateReason manifest grantedPermissions resources config
  container { id image name pausedAt } updateAvailable { version } createdAt updatedAt
"""


# -- the app --------------------------------------------------------------------------------------


def build_app(services: Services, settings: Settings | None = None) -> FastAPI:
    """The REST routers and /graphql over ``services``, with the state ``create_app`` gives
    them."""
    settings = settings or services.settings
    engine = services.engine

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.events.bind(asyncio.get_running_loop())  # subscribers run on the app's loop
        yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    for module in (
        plugin_routes,
        extension_routes,
        event_routes,
        usage_routes,
        webhook_routes,
        catalog_routes,
    ):
        app.include_router(module.router)
    app.include_router(make_graphql_router(settings))
    state = app.state
    state.settings = settings
    state.engine = engine
    state.runtime = services.runtime
    state.broker = services.broker
    state.lifecycle = services.lifecycle
    state.installs = services.installs
    state.events = services.events
    services.events.fanout = Fanout()
    state.queries = PluginQueries(engine=engine, runtime=services.runtime)
    state.api_tokens = ApiTokens(engine)
    state.jobs = None  # no queue: nothing here is installed or executed asynchronously
    state.usage = UsageService(
        engine=engine,
        series=UsageSeries(engine),
        live_usage=state.queries.live_usage,
        interval_s=10,
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
    state.webhooks = WebhookService(
        engine,
        secrets=SecretBox.from_settings(None, settings.state_dir),
        defaults=RetryPolicy(5, 1.0, 60.0, 5.0, 10),
    )
    return app


@pytest.fixture
def app(services: Services) -> FastAPI:
    return build_app(services)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    """A bearer token per role: the bootstrap admin token and API tokens for the others."""
    api: ApiTokens = app.state.api_tokens
    return {
        "admin": app.state.settings.admin_token,
        "operator": api.create(name="ops", role="operator").token,
        "viewer": api.create(name="eyes", role="viewer").token,
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def gql(
    client: TestClient, query: str, token: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=auth(token)
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def error_codes(body: dict[str, Any]) -> list[str | None]:
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]


def publish(services: Services, plugin_id: str, version: str) -> str:
    """A probe version in the fake registry and in the catalog; its image reference."""
    data: dict[str, Any] = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())
    data.update(id=plugin_id, version=version, dependencies=[], permissions=[])
    digest = hashlib.sha256(f"{plugin_id}@{version}".encode()).hexdigest()
    ref = f"{REGISTRY}/{plugin_id}@sha256:{digest}"
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
    return ref


# -- queries --------------------------------------------------------------------------------------


def test_plugins_are_what_rest_shows(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)
    services.install(OTHER)
    services.lifecycle.enable(PID)

    body = gql(client, f"{{ plugins {{ {PLUGIN_FIELDS} }} }}", tokens["viewer"])
    rest = client.get("/v1/plugins", headers=auth(tokens["viewer"])).json()

    assert "errors" not in body
    shown = body["data"]["plugins"]
    assert [p["id"] for p in shown] == [p["id"] for p in rest] == sorted([PID, OTHER])
    for ours, theirs in zip(shown, rest, strict=True):
        assert ours["state"] == theirs["state"]
        assert ours["version"] == theirs["version"]
        assert ours["manifest"] == theirs["manifest"]
        assert ours["grantedPermissions"] == theirs["granted_permissions"]
        assert ours["resources"] == theirs["resources"]
        assert ours["config"] == theirs["config"]
        theirs_container = theirs["container"]
        assert (ours["container"] or {}).get("id") == (theirs_container or {}).get("id")
        assert ours["updateAvailable"] == theirs["update_available"]
    assert shown[1]["state"] == "ACTIVE" and shown[1]["container"]["image"]

    one = gql(client, f'{{ plugin(id: "{PID}") {{ id state }} }}', tokens["viewer"])
    assert one["data"]["plugin"] == {"id": PID, "state": "ACTIVE"}
    missing = gql(client, '{ plugin(id: "com.nope") { id } }', tokens["viewer"])
    rest_missing = client.get("/v1/plugins/com.nope", headers=auth(tokens["viewer"]))
    assert error_codes(missing) == [rest_missing.json()["error"]["code"]] == ["plugin_not_found"]


def test_versions_history_and_usage(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.lifecycle.reload(PID)
    UsageSeries(services.engine).record(
        [
            {
                "plugin_id": PID,
                "memory_bytes": 40 * MIB,
                "pids": 4,
                "calls_total": 7,
                "errors_total": 2,
            }
        ]
    )

    body = gql(
        client,
        f"""{{ plugin(id: "{PID}") {{
            versions {{ version source current manifest }}
            history(limit: 2) {{ items {{ action version actor }} next }}
            usage {{ pluginId state usage {{ memoryUsedMb pids calls errors }} }}
        }} }}""",
        tokens["viewer"],
    )

    assert "errors" not in body, body
    plugin = body["data"]["plugin"]
    [version] = plugin["versions"]
    assert version["version"] == "1.0.0" and version["current"] is True
    assert version["manifest"]["id"] == PID
    rest_history = client.get(
        f"/v1/plugins/{PID}/history", params={"limit": 2}, headers=auth(tokens["viewer"])
    ).json()
    assert plugin["history"]["items"] == [
        {"action": e["action"], "version": e["version"], "actor": e["actor"]}
        for e in rest_history["items"]
    ]
    assert plugin["history"]["next"] == rest_history["next"] is not None
    assert plugin["usage"] == {
        "pluginId": PID,
        "state": "ACTIVE",
        "usage": {"memoryUsedMb": 40.0, "pids": 4, "calls": 7.0, "errors": 2.0},
    }
    everyone = gql(client, "{ usage { intervalS plugins { pluginId } } }", tokens["viewer"])
    assert everyone["data"]["usage"] == {"intervalS": 10.0, "plugins": [{"pluginId": PID}]}


def test_catalog_extension_points_events_and_webhooks(
    client: TestClient, app: FastAPI, services: Services, tokens: dict[str, str]
) -> None:
    publish(services, "com.acme.words", "1.2.0")
    services.install(PID)
    services.lifecycle.enable(PID)
    hook = app.state.webhooks.create(
        url="https://93.184.216.34/hooks",
        types=["plugin.*"],
        where=[],
        transform=None,
        description="ops",
        secret=None,
        policy={},
    )
    services.lifecycle.disable(PID)  # plugin.disabling and plugin.disabled: two deliveries

    body = gql(
        client,
        """{
          catalog(q: "words") { total items { id latestVersion points } }
          extensionPoints { point providers { pluginId name } }
          events(type: "plugin.*", subject: "com.summit-tests.probe", limit: 2) {
            events { type subject payload } next
          }
          webhooks { id url types deliveryCounts deliveries(limit: 5) { deliveries { status } } }
        }""",
        tokens["viewer"],
    )

    assert "errors" not in body, body
    data = body["data"]
    rest_catalog = client.get(
        "/v1/catalog/plugins", params={"q": "words"}, headers=auth(tokens["viewer"])
    ).json()
    assert data["catalog"]["total"] == rest_catalog["total"] == 1
    assert data["catalog"]["items"] == [
        {"id": "com.acme.words", "latestVersion": "1.2.0", "points": ["analyzer", "workflow"]}
    ]
    rest_points = client.get("/v1/extension-points", headers=auth(tokens["viewer"])).json()
    assert [p["point"] for p in data["extensionPoints"]] == [p["point"] for p in rest_points]
    assert all(p["providers"] == [] for p in data["extensionPoints"])  # disabled again
    rest_events = client.get(
        "/v1/events",
        params={"type": "plugin.*", "subject": PID, "limit": 2},
        headers=auth(tokens["viewer"]),
    ).json()
    assert [e["type"] for e in data["events"]["events"]] == [
        e["type"] for e in rest_events["events"]
    ]
    assert data["events"]["next"] == rest_events["next"] is not None
    [shown] = data["webhooks"]
    assert shown["id"] == hook["id"] and shown["types"] == ["plugin.*"]
    assert shown["deliveryCounts"]["pending"] == 2
    assert shown["deliveries"]["deliveries"] == [{"status": "pending"}] * 2


def test_an_active_provider_links_to_its_plugin(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)

    body = gql(
        client,
        "{ extensionPoints { point providers { pluginId name plugin { state } } } }",
        tokens["viewer"],
    )

    points = {p["point"]: p["providers"] for p in body["data"]["extensionPoints"]}
    assert points["analyzer"] == [{"pluginId": PID, "name": "echo", "plugin": {"state": "ACTIVE"}}]


# -- mutations ------------------------------------------------------------------------------------


def test_lifecycle_mutations_change_what_rest_shows(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)

    enabled = gql(
        client,
        f'mutation {{ enablePlugin(id: "{PID}") {{ state container {{ id }} }} }}',
        tokens["operator"],
    )
    assert enabled["data"]["enablePlugin"]["state"] == "ACTIVE"
    rest = client.get(f"/v1/plugins/{PID}", headers=auth(tokens["viewer"])).json()
    assert rest["state"] == "ACTIVE"
    assert enabled["data"]["enablePlugin"]["container"]["id"] == rest["container"]["id"]

    reloaded = gql(
        client,
        f'mutation {{ reloadPlugin(id: "{PID}") {{ container {{ id }} }} }}',
        tokens["admin"],
    )
    assert reloaded["data"]["reloadPlugin"]["container"]["id"] != rest["container"]["id"]

    disabled = gql(
        client, f'mutation {{ disablePlugin(id: "{PID}") {{ state }} }}', tokens["operator"]
    )
    assert disabled["data"]["disablePlugin"] == {"state": "LOADED"}
    history = client.get(f"/v1/plugins/{PID}/history", headers=auth(tokens["viewer"])).json()
    # The history names who did it, as it does for a REST call.
    assert [(e["action"], e["actor"].split(" ")[0]) for e in history["items"][:3]] == [
        ("disabled", "ops"),
        ("reloaded", "admin"),
        ("enabled", "ops"),
    ]


@pytest.mark.parametrize(
    ("mutation", "rest_path"),
    [
        ('enablePlugin(id: "com.nope") { id }', "/v1/plugins/com.nope/enable"),
        (f'disablePlugin(id: "{PID}") {{ id }}', f"/v1/plugins/{PID}/disable"),
        (f'rollbackPlugin(id: "{PID}") {{ id }}', f"/v1/plugins/{PID}/rollback"),
        (f'upgradePlugin(id: "{PID}", version: "9.9.9") {{ id }}', f"/v1/plugins/{PID}/upgrade"),
    ],
)
def test_a_refused_mutation_has_the_rest_code(
    client: TestClient, services: Services, tokens: dict[str, str], mutation: str, rest_path: str
) -> None:
    services.install(PID)  # LOADED: it cannot be disabled, and has nothing to roll back to
    body = {"version": "9.9.9"} if rest_path.endswith("upgrade") else None

    answer = gql(client, f"mutation {{ {mutation} }}", tokens["operator"])
    rest = client.post(rest_path, json=body, headers=auth(tokens["operator"]))

    assert rest.status_code >= 400
    [error] = answer["errors"]
    assert error["extensions"]["code"] == rest.json()["error"]["code"]
    assert error["extensions"]["status"] == rest.status_code
    assert error["extensions"]["details"] == rest.json()["error"]["details"]
    assert error["message"] == rest.json()["error"]["message"]
    assert answer["data"] is None


def test_install_upgrade_and_rollback_through_the_catalog(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    publish(services, "com.acme.words", "1.0.0")
    publish(services, "com.acme.words", "1.1.0")

    installed = gql(
        client,
        """mutation { installPlugin(input: {catalog: {id: "com.acme.words", version: "1.0.0"}})
           { plugins { id version state } plan } }""",
        tokens["operator"],
    )
    assert "errors" not in installed, installed
    result = installed["data"]["installPlugin"]
    assert result["plugins"] == [{"id": "com.acme.words", "version": "1.0.0", "state": "LOADED"}]
    assert [s["version"] for s in result["plan"]["install"]] == ["1.0.0"]

    notice = gql(
        client, '{ plugin(id: "com.acme.words") { updateAvailable { version } } }', tokens["viewer"]
    )
    assert notice["data"]["plugin"]["updateAvailable"] == {"version": "1.1.0"}

    upgraded = gql(
        client, 'mutation { upgradePlugin(id: "com.acme.words") { version } }', tokens["operator"]
    )
    assert upgraded["data"]["upgradePlugin"] == {"version": "1.1.0"}
    rolled = gql(
        client, 'mutation { rollbackPlugin(id: "com.acme.words") { version } }', tokens["operator"]
    )
    assert rolled["data"]["rollbackPlugin"] == {"version": "1.0.0"}
    assert (
        client.get("/v1/plugins/com.acme.words", headers=auth(tokens["viewer"])).json()["version"]
        == "1.0.0"
    )


def test_install_from_an_image_and_its_refusals(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    ref = publish(services, "com.acme.image", "2.0.0")
    query = "mutation($input: InstallInput!) { installPlugin(input: $input) { plugins { id } } }"

    both = gql(client, query, tokens["operator"], {"input": {"image": ref, "catalog": {"id": "x"}}})
    assert error_codes(both) == ["invalid_request"]

    done = gql(client, query, tokens["operator"], {"input": {"image": ref}})
    assert done["data"]["installPlugin"] == {"plugins": [{"id": "com.acme.image"}]}
    shown = client.get("/v1/plugins/com.acme.image", headers=auth(tokens["viewer"]))
    assert shown.json()["state"] == "LOADED"

    again = gql(client, query, tokens["operator"], {"input": {"image": ref}})
    rest = client.post("/v1/plugins", json={"image": ref}, headers=auth(tokens["operator"]))
    assert rest.status_code == 409
    assert error_codes(again) == [rest.json()["error"]["code"]]


def test_execute_answers_and_refuses_as_rest_does(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)
    query = """mutation($point: String!, $plugins: [String!], $input: JSON) {
        execute(point: $point, plugins: $plugins, input: $input, mode: FIRST) {
            result job { jobId }
        }
    }"""
    cases: list[dict[str, Any]] = [
        {"point": "nope"},  # unknown point
        {"point": "analyzer", "plugins": ["com.nope"]},  # not installed
        {"point": "analyzer", "plugins": [PID]},  # installed, not ACTIVE
        {"point": "export"},  # no provider at all
    ]
    for case in cases:
        answer = gql(client, query, tokens["operator"], {**case, "input": {"text": "a b"}})
        rest = client.post(
            f"/v1/extension-points/{case['point']}/execute",
            json={"input": {"text": "a b"}, "mode": "first", "plugins": case.get("plugins")},
            headers=auth(tokens["operator"]),
        )
        assert rest.status_code >= 400, case
        [error] = answer["errors"]
        assert error["extensions"]["code"] == rest.json()["error"]["code"], case
        assert error["extensions"]["status"] == rest.status_code, case


@dataclass
class EchoTransport:
    """A plugin that answers every extension call with its input (no socket, no container)."""

    async def request(
        self, method: bytes, target: bytes, *, headers: Any, content: bytes = b"", **_: Any
    ) -> H1Response:
        call = json.loads(content)
        output = {"echo": call["input"], "by": target.decode().rsplit("/", 1)[-1]}
        return H1Response(
            200, [(b"content-type", b"application/json")], json.dumps({"output": output}).encode()
        )

    async def aclose(self) -> None:
        return None


def untimed(value: Any) -> Any:
    """``value`` without its ``ms`` timings (two calls never take the same time)."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "ms"}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def test_execute_calls_the_providers_through_the_broker(
    services: Services, tokens: dict[str, str]
) -> None:
    app = build_app(services)
    broker = Broker(
        limits=BrokerLimits(rate_limit_requests=0),
        transport_factory=lambda endpoint, **_: EchoTransport(),
    )
    for name, priority in (("first", 200), ("second", 100)):
        broker.set_route(
            Route(
                f"com.echo.{name}",
                "1.0.0",
                UnixEndpoint(Path(f"/run/summit/{name}/plugin.sock")),
                (Extension(point=ExtensionPoint.ANALYZER, name=name, priority=priority),),
            )
        )
    app.state.broker = broker
    with TestClient(app) as client:
        made = app.state.api_tokens.create(name="ops", role="operator")
        for mode in ("ALL", "FIRST", "PIPELINE"):
            answer = gql(
                client,
                f'mutation {{ execute(point: "analyzer", input: {{n: 1}}, mode: {mode}) '
                "{ result job { jobId } } }",
                made.token,
            )
            rest = client.post(
                "/v1/extension-points/analyzer/execute",
                json={"input": {"n": 1}, "mode": mode.lower()},
                headers=auth(made.token),
            )
            assert rest.status_code == 200, rest.text
            ours = answer["data"]["execute"]
            assert ours["job"] is None
            assert untimed(ours["result"]) == untimed(rest.json()), mode
        assert "echo" in json.dumps(rest.json())


# -- who may do what ------------------------------------------------------------------------------


def test_roles_are_the_rest_roles(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)

    refused = gql(client, f'mutation {{ enablePlugin(id: "{PID}") {{ state }} }}', tokens["viewer"])
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "forbidden"
    assert error["extensions"]["status"] == 403
    assert error["extensions"]["details"] == {"role": "viewer", "required": "operator"}
    assert "viewer role may not use Mutation.enablePlugin" in error["message"]
    assert services.state(PID) == "LOADED"  # nothing happened
    rest = client.post(f"/v1/plugins/{PID}/enable", headers=auth(tokens["viewer"]))
    assert rest.status_code == 403 and rest.json()["error"]["code"] == "forbidden"

    tokens_query = "{ apiTokens { name role } }"
    assert error_codes(gql(client, tokens_query, tokens["operator"])) == ["forbidden"]
    names = gql(client, tokens_query, tokens["admin"])["data"]["apiTokens"]
    assert {t["name"] for t in names} == {"ops", "eyes"}

    # A refused field refuses that field only: the rest of the operation is answered.
    mixed = gql(client, "{ plugins { id } apiTokens { name } }", tokens["viewer"])
    assert mixed["data"] == {"plugins": [{"id": PID}], "apiTokens": None}


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_without_a_valid_bearer_token_it_is_a_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.post("/graphql", json={"query": "{ plugins { id } }"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_refused(client: TestClient, app: FastAPI) -> None:
    api: ApiTokens = app.state.api_tokens
    made = api.create(name="gone", role="admin")
    assert (
        client.post(
            "/graphql", json={"query": "{ plugins { id } }"}, headers=auth(made.token)
        ).status_code
        == 200
    )
    api.revoke(made.id)
    refused = client.post(
        "/graphql", json={"query": "{ plugins { id } }"}, headers=auth(made.token)
    )
    assert refused.status_code == 401


# -- limits ---------------------------------------------------------------------------------------


def test_depth_aliases_tokens_and_cost_are_limited(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    admin = tokens["admin"]
    deep = "{ plugins { " + "a { " * 10 + "b" + " }" * 10 + " } }"
    assert any(
        "exceeds maximum operation depth of 10" in e["message"]
        for e in gql(client, deep, admin)["errors"]
    )

    aliases = "{ " + " ".join(f"p{i}: plugins {{ id }}" for i in range(16)) + " }"
    refused = gql(client, aliases, admin)
    assert refused["data"] is None
    assert refused["errors"][0]["message"] == "16 aliases found. Allowed: 15"
    assert "errors" not in gql(
        client, "{ " + " ".join(f"p{i}: plugins {{ id }}" for i in range(15)) + " }", admin
    )

    huge = "{ " + "__typename " * 6000 + "}"
    assert "more than 5000 tokens" in gql(client, huge, admin)["errors"][0]["message"]

    costly = "{ plugins(limit: 1000) { history(limit: 1000) { items { id action } } } }"
    answer = gql(client, costly, admin)
    assert answer["data"] is None
    assert error_codes(answer) == ["query_too_complex"]
    assert answer["errors"][0]["extensions"]["details"]["max_cost"] == 10_000
    # The same through a variable: the limit a client sends is the limit counted.
    by_variable = gql(
        client,
        "query($n: Int!) { plugins(limit: $n) { history(limit: $n) { items { id } } } }",
        admin,
        {"n": 1000},
    )
    assert error_codes(by_variable) == ["query_too_complex"]
    # ... and through a fragment.
    by_fragment = gql(
        client,
        "{ plugins(limit: 1000) { ...H } } "
        "fragment H on Plugin { history(limit: 1000) { items { id } } }",
        admin,
    )
    assert error_codes(by_fragment) == ["query_too_complex"]
    fine = "{ plugins(limit: 50) { id versions { version } usage { at } container { id } } }"
    assert "errors" not in gql(client, fine, admin)


def test_a_tighter_depth_setting_holds(services: Services) -> None:
    app = build_app(services, services.settings.model_copy(update={"graphql_max_depth": 2}))
    with TestClient(app) as client:
        admin = app.state.settings.admin_token
        assert "errors" not in gql(client, "{ plugins { id } }", admin)
        assert "errors" not in gql(client, "{ plugins { container { id } } }", admin)
        nested = gql(client, '{ plugin(id: "x") { history { items { id } } } }', admin)
        assert "exceeds maximum operation depth of 2" in nested["errors"][0]["message"]


def test_introspection_is_off_unless_in_development(services: Services) -> None:
    query = "{ __schema { queryType { name } } }"
    for dev, allowed in ((False, False), (True, True)):
        app = build_app(services, services.settings.model_copy(update={"dev": dev}))
        with TestClient(app) as client:
            answer = gql(client, query, app.state.settings.admin_token)
            if allowed:
                assert answer["data"] == {"__schema": {"queryType": {"name": "Query"}}}
            else:
                assert answer["data"] is None and "introspection" in answer["errors"][0]["message"]
                # Nor does a typo get the schema spelled out.
                typo = gql(client, "{ plugins { idd } }", app.state.settings.admin_token)
                assert "Did you mean" not in typo["errors"][0]["message"]
    on = build_app(services, services.settings.model_copy(update={"graphql_introspection": True}))
    with TestClient(on) as client:
        assert "errors" not in gql(client, query, on.state.settings.admin_token)


def test_unexpected_errors_are_masked_outside_development(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("db password is hunter2")

    for dev in (False, True):
        app = build_app(services, services.settings.model_copy(update={"dev": dev}))
        monkeypatch.setattr(app.state.usage, "current", broken)
        with TestClient(app) as client:
            answer = gql(client, "{ usage { at } }", app.state.settings.admin_token)
        [error] = answer["errors"]
        assert error["extensions"]["code"] == "internal_error"
        if dev:
            assert "hunter2" in error["message"]
        else:
            assert error["message"] == "Unexpected error."
            assert "hunter2" not in json.dumps(answer)


def test_no_graphiql_and_no_queries_by_get(client: TestClient, tokens: dict[str, str]) -> None:
    page = client.get("/graphql", headers={**auth(tokens["admin"]), "Accept": "text/html"})
    assert page.status_code in (404, 405)
    assert "<html" not in page.text.lower() and "cdn" not in page.text.lower()
    query = client.get(
        "/graphql", params={"query": "{ plugins { id } }"}, headers=auth(tokens["admin"])
    )
    assert query.status_code in (400, 404, 405), query.text


def test_a_body_over_the_cap_is_refused_unread(
    app: FastAPI, client: TestClient, tokens: dict[str, str]
) -> None:
    cap = app.state.settings.max_request_bytes
    r = client.post(
        "/graphql",
        content=json.dumps({"query": "{ plugins { id } }", "variables": {"x": "y" * cap}}),
        headers={**auth(tokens["admin"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# -- DataLoaders ----------------------------------------------------------------------------------


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def add_plugins(services: Services, n: int) -> None:
    """``n`` plugins with two versions, a grant, a container and a usage sample each."""
    with session_scope(services.engine) as session:
        for i in range(n):
            pid = f"com.load.p{i:03d}"
            crud.add_plugin(
                session, plugin_id=pid, version="1.1.0", state="ACTIVE", config={}, resources={}
            )
            for version in ("1.0.0", "1.1.0"):
                crud.add_version(
                    session,
                    plugin_id=pid,
                    version=version,
                    manifest={"id": pid, "version": version},
                    image=f"img/{pid}:{version}",
                    image_id=None,
                    source="image",
                    source_digest=None,
                )
            crud.set_grants(session, plugin_id=pid, permissions=["read:data"])
            crud.add_container(
                session,
                container_id=f"c{i:063d}",
                plugin_id=pid,
                name=f"summit-{i}",
                version="1.1.0",
                image=f"img/{pid}:1.1.0",
                endpoint=f"unix:///fake/run/{i}/plugin.sock",
            )
    UsageSeries(services.engine).record(
        [{"plugin_id": f"com.load.p{i:03d}", "memory_bytes": MIB * i} for i in range(n)]
    )


def test_a_list_of_plugins_costs_the_same_reads_whatever_its_length(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    add_plugins(services, 50)
    query = f"""query($n: Int!) {{ plugins(limit: $n) {{
        {PLUGIN_FIELDS}
        versions {{ version current }}
        usage {{ at usage {{ memoryUsedMb }} }}
    }} }}"""

    counts = {}
    for n in (5, 50):
        with statements(services.engine) as seen:
            body = gql(client, query, tokens["admin"], {"n": n})
        assert "errors" not in body, body
        plugins = body["data"]["plugins"]
        assert len(plugins) == n
        assert all(len(p["versions"]) == 2 and p["container"] for p in plugins)
        assert plugins[-1]["usage"]["usage"]["memoryUsedMb"] == float(n - 1)
        counts[n] = len(seen)

    assert counts[50] == counts[5]
    # One read per kind of part (plugins, versions, grants, containers, catalog versions and
    # the usage service's three), not one per plugin.
    assert counts[50] <= 10, counts
    rest_plugins = client.get("/v1/plugins", headers=auth(tokens["admin"])).json()
    assert len(rest_plugins) == 50


# -- subscriptions ------------------------------------------------------------------------------


WS = "graphql-transport-ws"


def subscribe(ws: Any, query: str, op: str = "1") -> None:
    ws.send_json({"id": op, "type": "subscribe", "payload": {"query": query}})


def test_a_viewer_follows_state_changes_and_events(
    client: TestClient, services: Services, tokens: dict[str, str]
) -> None:
    services.install(PID)
    services.install(OTHER)
    bus = services.events
    with client.websocket_connect("/graphql", subprotocols=[WS]) as ws:
        assert ws.accepted_subprotocol == WS
        ws.send_json({"type": "connection_init", "payload": auth(tokens["viewer"])})
        assert ws.receive_json() == {"type": "connection_ack", "payload": {"role": "viewer"}}
        subscribe(
            ws,
            f'subscription {{ pluginStateChanged(pluginId: "{PID}") '
            "{ pluginId fromState toState eventType plugin { state } } }",
        )
        subscribe(ws, 'subscription { events(typePattern: "document.*") { type payload } }', "2")
        # Both subscriptions are on the bus before anything happens.
        deadline = time.monotonic() + 5
        while len(bus._subs) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

        services.lifecycle.enable(OTHER)  # not the plugin followed
        services.lifecycle.enable(PID)
        bus.emit_sync("document.created", source="test", payload={"n": 1})

        got: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
        while len(got["1"]) < 2 or len(got["2"]) < 1:
            message = ws.receive_json()
            assert message["type"] == "next", message
            got[message["id"]].append(message["payload"]["data"])
        changes = [d["pluginStateChanged"] for d in got["1"]]
        assert [(c["pluginId"], c["fromState"], c["toState"]) for c in changes] == [
            (PID, "LOADED", "INITIALIZING"),
            (PID, "INITIALIZING", "ACTIVE"),
        ]
        assert changes[-1]["eventType"] == "plugin.enabled"
        assert changes[-1]["plugin"] == {"state": "ACTIVE"}
        assert got["2"] == [{"events": {"type": "document.created", "payload": {"n": 1}}}]

    # The socket is closed: both tails left the bus.
    deadline = time.monotonic() + 5
    while bus._subs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bus._subs


@pytest.mark.parametrize("payload", [{}, {"Authorization": "Bearer wrong"}])
def test_a_socket_without_a_valid_token_is_closed_4403(
    client: TestClient, payload: dict[str, str]
) -> None:
    with client.websocket_connect("/graphql", subprotocols=[WS]) as ws:
        ws.send_json({"type": "connection_init", "payload": payload})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4403


def test_subscribing_before_connection_init_is_closed_4401(client: TestClient) -> None:
    with client.websocket_connect("/graphql", subprotocols=[WS]) as ws:
        subscribe(ws, "subscription { events { type } }")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_the_legacy_graphql_ws_protocol_is_not_spoken(
    client: TestClient, tokens: dict[str, str]
) -> None:
    with (
        client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.send_json({"type": "connection_init", "payload": auth(tokens["admin"])})
        ws.receive_json()
    assert closed.value.code == 4406
