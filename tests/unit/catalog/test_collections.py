"""Collections: published like a plugin (under the publisher's namespaces, immutable
versions, members that are catalog plugins) and installed as one operation over FakeRuntime:
every member's range resolved at once, every permission of the set approved at once, in
dependency order, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator.catalog.collections import CollectionPublishRequest, CollectionService
from orchestrator.catalog.installer import CatalogInstaller, CollectionInstall
from orchestrator.catalog.solver import ResolutionError
from orchestrator.config import Settings
from orchestrator.domain.errors import Conflict, Forbidden, InvalidInput, SummitError
from orchestrator.security.access import ApiTokens, Caller, Role, required_role
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.remote_catalog import ADMIN, catalog_app, publish
from tests.unit.services.conftest import Services, services, settings

__all__ = ["services", "settings"]

ADMIN_CALLER = Caller(Role.ADMIN, None, "admin token")


def kit(plugins: dict[str, str], version: str = "1.0.0", **kw: Any) -> CollectionPublishRequest:
    return CollectionPublishRequest(version=version, plugins=plugins, **kw)


@pytest.fixture
def collections(engine: Engine) -> CollectionService:
    return CollectionService(engine=engine)


@pytest.fixture
def installer(services: Services) -> CatalogInstaller:
    return CatalogInstaller(
        engine=services.engine,
        installs=services.installs,
        uninstall=services.lifecycle.uninstall,
    )


def installed(services: Services) -> dict[str, str]:
    with session_scope(services.engine) as session:
        return {p.id: p.version for p in crud.list_plugins(session)}


def install(plugin_id: str, version: str = "*", **kw: Any) -> CollectionInstall:
    return CollectionInstall.model_validate(
        {"collection": {"id": plugin_id, "version": version}, **kw}
    )


def publisher_caller(engine: Engine, publisher_id: str, namespace: str) -> Caller:
    token = ApiTokens(engine).create(name=publisher_id, role="publisher")
    with session_scope(engine) as session:
        if catalog_store.get_publisher(session, publisher_id=publisher_id) is None:
            catalog_store.add_publisher(
                session, publisher_id=publisher_id, name=publisher_id, token_id=token.id
            )
            catalog_store.claim_namespace(session, publisher_id=publisher_id, prefix=namespace)
    return Caller(Role.PUBLISHER, token.id, f"{publisher_id} ({token.id})")


# -- publishing ------------------------------------------------------------------------------------


def test_a_publisher_publishes_collections_under_its_namespaces_only(
    engine: Engine, collections: CollectionService
) -> None:
    acme = publisher_caller(engine, "acme", "com.acme.")
    other = publisher_caller(engine, "other", "org.other.")
    publish(engine, "com.acme.base", "1.0.0")
    publish(engine, "org.other.tool", "1.0.0", publisher="other")

    # Members may be anyone's plugins; the collection's id is the publisher's.
    entry = collections.publish(
        "com.acme.kit", kit({"com.acme.base": "^1", "org.other.tool": "*"}), acme
    )
    assert entry["created"] is True and entry["plugins"]["org.other.tool"] == "*"
    with pytest.raises(Forbidden) as outside:
        collections.publish("org.acme.kit", kit({"com.acme.base": "^1"}), acme)
    assert outside.value.code == "namespace_forbidden"
    with pytest.raises(Forbidden) as taken:
        collections.publish("com.acme.kit", kit({"com.acme.base": "^1"}, "2.0.0"), other)
    assert taken.value.code in ("not_publisher", "namespace_forbidden")
    viewer = Caller(Role.VIEWER, None, "someone")
    with pytest.raises(Forbidden):
        collections.publish("com.acme.other-kit", kit({"com.acme.base": "^1"}), viewer)

    # An admin publishes anywhere: a new version of acme's collection stays acme's.
    collections.publish("com.acme.kit", kit({"com.acme.base": "^1"}, "1.1.0"), ADMIN_CALLER)
    page = collections.get("com.acme.kit")
    assert page["publisher"] == "acme" and page["latest_version"] == "1.1.0"
    assert [v["version"] for v in page["versions"]] == ["1.1.0", "1.0.0"]
    loose = collections.publish("net.nobody.kit", kit({"com.acme.base": "*"}), ADMIN_CALLER)
    assert loose["created"] and collections.get("net.nobody.kit")["publisher"] == "local"


def test_versions_are_immutable_and_members_must_be_in_the_catalog(
    engine: Engine, collections: CollectionService
) -> None:
    publish(engine, "com.acme.base", "1.0.0")
    first = kit({"com.acme.base": "^1"}, description="Starter")
    assert collections.publish("com.acme.kit", first, ADMIN_CALLER)["created"] is True
    assert collections.publish("com.acme.kit", first, ADMIN_CALLER)["created"] is False
    with pytest.raises(Conflict) as changed:
        collections.publish("com.acme.kit", kit({"com.acme.base": "^2"}), ADMIN_CALLER)
    assert changed.value.code == "version_exists"

    with pytest.raises(InvalidInput) as unknown:
        collections.publish(
            "com.acme.kit",
            kit({"com.acme.base": "*", "com.acme.ghost": "*"}, "2.0.0"),
            ADMIN_CALLER,
        )
    assert unknown.value.code == "unknown_members"
    assert unknown.value.details == {"missing": ["com.acme.ghost"]}
    for bad in ({}, {"com.acme.base": "not a range"}, {"Not An Id": "*"}):
        with pytest.raises(InvalidInput):
            collections.publish("com.acme.kit", kit(bad, "3.0.0"), ADMIN_CALLER)
    with pytest.raises(InvalidInput):
        collections.publish("com.acme.kit", kit({"com.acme.base": "*"}, "three"), ADMIN_CALLER)
    assert [v["version"] for v in collections.get("com.acme.kit")["versions"]] == ["1.0.0"]


def test_the_collection_routes_hold_to_roles_and_to_a_remote_catalog(engine: Engine) -> None:
    assert required_role("POST", "/v1/catalog/collections/com.acme.kit/versions") is Role.PUBLISHER
    assert required_role("GET", "/v1/catalog/collections/com.acme.kit") is Role.VIEWER
    publish(engine, "com.acme.base", "1.0.0")
    viewer = ApiTokens(engine).create(name="v", role="viewer").token
    body = {"version": "1.0.0", "plugins": {"com.acme.base": "^1"}, "description": "Starter"}
    with TestClient(catalog_app(engine)) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = client.post("/v1/catalog/collections/com.acme.kit/versions", json=body, headers=admin)
        assert r.status_code == 201, r.text
        again = client.post(
            "/v1/catalog/collections/com.acme.kit/versions", json=body, headers=admin
        )
        assert again.status_code == 200
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        refused = client.post(
            "/v1/catalog/collections/com.acme.kit/versions", json=body, headers=as_viewer
        )
        assert refused.status_code == 403
        listed = client.get("/v1/catalog/collections", headers=as_viewer).json()
        assert [(c["id"], c["latest_version"]) for c in listed["items"]] == [
            ("com.acme.kit", "1.0.0")
        ]
        page = client.get("/v1/catalog/collections/com.acme.kit", headers=as_viewer).json()
        assert page["versions"][0]["plugins"] == {"com.acme.base": "^1"}
        missing = client.get("/v1/catalog/collections/com.acme.none", headers=as_viewer)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_in_catalog"

    remote = Settings(catalog_rate_limit_requests=0, catalog_url="https://catalog.example")
    with TestClient(catalog_app(engine, settings=remote)) as client:
        for path in ("/v1/catalog/collections", "/v1/catalog/plugins"):
            r = client.get(path, headers={"Authorization": f"Bearer {viewer}"})
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "catalog_is_remote"
            assert r.json()["error"]["details"]["catalog_url"] == "https://catalog.example"
        # Who has no token learns nothing, not even where the catalog is.
        assert client.get("/v1/catalog/plugins").status_code == 401


# -- installing ------------------------------------------------------------------------------------


@pytest.fixture
def published_kit(services: Services) -> Iterator[CollectionService]:
    """``com.acme.kit`` 1.0.0: app ^1 (which needs base ^1.2, granted storage), tool *."""
    engine, runtime = services.engine, services.runtime
    publish(engine, "com.acme.base", "1.0.0", runtime=runtime, permissions=["storage"])
    publish(engine, "com.acme.base", "1.5.0", runtime=runtime, permissions=["storage"])
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        publish(
            engine,
            "com.acme.app",
            version,
            runtime=runtime,
            deps={"com.acme.base": "^1.2"},
            permissions=["events:publish"],
        )
    publish(engine, "com.acme.tool", "0.3.0", runtime=runtime)
    service = CollectionService(engine=engine)
    service.publish("com.acme.kit", kit({"com.acme.app": "^1", "com.acme.tool": "*"}), ADMIN_CALLER)
    yield service


ALL = ["events:publish", "storage"]


def test_a_collection_installs_as_one_set_in_dependency_order(
    services: Services, installer: CatalogInstaller, published_kit: CollectionService
) -> None:
    result = installer.install_collection(
        install("com.acme.kit", approved_permissions=ALL, config={"com.acme.tool": {}}),
        principal="admin",
        actor="t",
    )
    assert result["collection"] == {"id": "com.acme.kit", "version": "1.0.0"}
    assert [(s["id"], s["version"]) for s in result["plan"]["install"]] == [
        ("com.acme.base", "1.5.0"),
        ("com.acme.app", "1.1.0"),
        ("com.acme.tool", "0.3.0"),
    ]
    assert installed(services) == {
        "com.acme.base": "1.5.0",
        "com.acme.app": "1.1.0",
        "com.acme.tool": "0.3.0",
    }
    # Installing it again changes nothing: every member is there, in its range.
    again = installer.install_collection(
        install("com.acme.kit", "^1"), principal="admin", actor="t"
    )
    assert again["installed"] == [] and len(again["plan"]["kept"]) == 2


def test_every_permission_of_the_set_is_approved_at_once(
    services: Services, installer: CatalogInstaller, published_kit: CollectionService
) -> None:
    with pytest.raises(Conflict) as caught:
        installer.install_collection(
            install("com.acme.kit", approved_permissions=["events:publish"]),
            principal="admin",
            actor="t",
        )
    assert caught.value.code == "permissions_not_approved"
    assert caught.value.details["by_plugin"] == {"com.acme.base": ["storage"]}
    assert caught.value.details["requested"] == ALL
    assert installed(services) == {}


def test_a_member_that_cannot_be_resolved_installs_nothing(
    services: Services, installer: CatalogInstaller, published_kit: CollectionService
) -> None:
    published_kit.publish(
        "com.acme.kit",
        kit({"com.acme.app": "^1", "com.acme.tool": "^9"}, "1.1.0"),
        ADMIN_CALLER,
    )
    with pytest.raises(ResolutionError) as caught:
        installer.install_collection(
            install("com.acme.kit", "1.1.0", approved_permissions=ALL),
            principal="admin",
            actor="t",
        )
    assert "com.acme.tool" in json.dumps(caught.value.details)
    assert installed(services) == {}


def test_all_or_nothing_when_one_member_fails_to_install(
    services: Services, installer: CatalogInstaller, published_kit: CollectionService
) -> None:
    tool = next(r for r in services.runtime.registry if "com.acme.tool" in r)
    del services.runtime.registry[tool]  # the registry lost the last member's image
    with pytest.raises(SummitError) as caught:
        installer.install_collection(
            install("com.acme.kit", approved_permissions=ALL), principal="admin", actor="t"
        )
    assert caught.value.code == "image_not_found"
    assert installed(services) == {}  # base and app, installed first, were taken out again


def test_installed_members_are_kept_in_range_and_named_out_of_it(
    services: Services, installer: CatalogInstaller, published_kit: CollectionService
) -> None:
    published_kit.publish(
        "com.acme.kit", kit({"com.acme.app": "^2", "com.acme.tool": "*"}, "2.0.0"), ADMIN_CALLER
    )
    installer.install_collection(
        install("com.acme.kit", "~1.0", approved_permissions=ALL), principal="admin", actor="t"
    )
    with pytest.raises(Conflict) as caught:
        installer.install_collection(
            install("com.acme.kit", "2.0.0", approved_permissions=ALL),
            principal="admin",
            actor="t",
        )
    assert caught.value.code == "upgrade_needed"
    assert caught.value.details == [{"id": "com.acme.app", "installed": "1.1.0", "wanted": "^2"}]

    with pytest.raises(InvalidInput):
        installer.install_collection(
            install("com.acme.kit", "~1.0", config={"com.acme.nobody": {}}),
            principal="admin",
            actor="t",
        )
    with pytest.raises(SummitError) as none:
        installer.install_collection(install("com.acme.kit", "^7"), principal="admin", actor="t")
    assert none.value.code == "version_not_found"
