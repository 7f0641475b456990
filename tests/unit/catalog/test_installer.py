"""Installing from the catalog over FakeRuntime (its registry holds the published images): the
solver's set installed in dependency order, every permission of the set approved at once, and
all or nothing when one of them fails."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from orchestrator.catalog.installer import CatalogInstall, CatalogInstaller
from orchestrator.catalog.search import newest_compatible
from orchestrator.catalog.solver import ResolutionError
from orchestrator.domain.errors import Conflict, NotFound, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.plugins import PLUGINS
from tests.unit.services.conftest import Services, services, settings

__all__ = ["services", "settings"]  # the services' fixtures, shared

REGISTRY = "registry.example"


def publish(
    services: Services,
    plugin_id: str,
    version: str,
    *,
    deps: dict[str, str] | None = None,
    permissions: list[str] | None = None,
    yanked: bool = False,
) -> str:
    """A probe plugin version in the fake registry and in the catalog; its image reference."""
    data: dict[str, Any] = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())
    data.update(id=plugin_id, version=version)
    data["dependencies"] = [{"id": d, "version": r} for d, r in (deps or {}).items()]
    data["permissions"] = permissions or []
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
        if yanked:
            catalog_store.yank_version(session, plugin_id=plugin_id, version=version, reason="x")
    return ref


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


def request(plugin_id: str, version: str = "*", **kw: Any) -> CatalogInstall:
    return CatalogInstall.model_validate({"catalog": {"id": plugin_id, "version": version}, **kw})


def test_the_newest_compatible_set_is_installed_dependencies_first(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0")
    publish(services, "com.acme.base", "1.4.0")
    publish(services, "com.acme.base", "2.0.0")
    publish(services, "com.acme.app", "1.0.0", deps={"com.acme.base": "^1.2"})
    publish(services, "com.acme.app", "1.1.0", deps={"com.acme.base": "^1.2"})

    result = installer.install(request("com.acme.app"), principal="admin", actor="t")

    assert [(s["id"], s["version"]) for s in result["plan"]["install"]] == [
        ("com.acme.base", "1.4.0"),
        ("com.acme.app", "1.1.0"),
    ]
    assert installed(services) == {"com.acme.base": "1.4.0", "com.acme.app": "1.1.0"}
    assert [v["id"] for v in result["installed"]] == ["com.acme.base", "com.acme.app"]


def test_an_installed_dependency_that_fits_is_kept(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.2.0")
    publish(services, "com.acme.base", "1.9.0")
    publish(services, "com.acme.app", "1.0.0", deps={"com.acme.base": "^1.0"})
    installer.install(request("com.acme.base", "1.2.0"), principal="admin", actor="t")

    plan = installer.plan(request("com.acme.app").catalog)
    assert [s.plugin_id for s in plan.steps] == ["com.acme.app"]
    assert plan.kept == (("com.acme.base", "1.2.0"),)


def test_a_dependency_installed_too_old_is_explained(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0")
    publish(services, "com.acme.base", "2.0.0")
    publish(services, "com.acme.app", "1.0.0", deps={"com.acme.base": "^2"})
    installer.install(request("com.acme.base", "1.0.0"), principal="admin", actor="t")

    with pytest.raises(ResolutionError) as caught:
        installer.install(request("com.acme.app"), principal="admin", actor="t")
    assert "com.acme.base" in caught.value.message and "^2" in json.dumps(caught.value.details)
    assert installed(services) == {"com.acme.base": "1.0.0"}


def test_every_permission_of_the_set_is_approved_at_once(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0", permissions=["storage"])
    publish(
        services,
        "com.acme.app",
        "1.0.0",
        deps={"com.acme.base": "*"},
        permissions=["events:publish"],
    )
    with pytest.raises(Conflict) as caught:
        installer.install(
            request("com.acme.app", approved_permissions=["events:publish"]),
            principal="admin",
            actor="t",
        )
    assert caught.value.code == "permissions_not_approved"
    assert caught.value.details["by_plugin"] == {"com.acme.base": ["storage"]}
    assert installed(services) == {}  # refused before anything was read

    installer.install(
        request("com.acme.app", approved_permissions=["events:publish", "storage"]),
        principal="admin",
        actor="t",
    )
    assert set(installed(services)) == {"com.acme.base", "com.acme.app"}


def test_all_or_nothing_when_one_of_the_set_fails(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0")
    app = publish(services, "com.acme.app", "1.0.0", deps={"com.acme.base": "*"})
    del services.runtime.registry[app]  # the registry lost the app's image

    with pytest.raises(SummitError) as caught:
        installer.install(request("com.acme.app"), principal="admin", actor="t")
    assert caught.value.code == "image_not_found"
    assert installed(services) == {}  # the dependency installed first was taken out again


def test_yanked_versions_only_by_exact_version_and_unknown_plugins(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0")
    publish(services, "com.acme.base", "1.1.0", yanked=True)
    assert installer.plan(request("com.acme.base").catalog).steps[0].version == "1.0.0"
    exact = installer.plan(request("com.acme.base", "1.1.0").catalog)
    assert exact.steps[0].version == "1.1.0" and exact.warnings
    with pytest.raises(NotFound):
        installer.plan(request("com.acme.nothing").catalog)


def test_installing_an_installed_plugin_again_says_upgrade(
    services: Services, installer: CatalogInstaller
) -> None:
    publish(services, "com.acme.base", "1.0.0")
    installer.install(request("com.acme.base"), principal="admin", actor="t")
    with pytest.raises(Conflict) as caught:
        installer.install(request("com.acme.base"), principal="admin", actor="t")
    assert caught.value.code == "already_installed"


def test_newest_compatible_names_what_an_update_notice_shows(services: Services) -> None:
    for version in ("1.0.0", "1.2.0", "2.0.0-beta.1"):
        publish(services, "com.acme.base", version)
    publish(services, "com.acme.base", "1.3.0", yanked=True)
    with session_scope(services.engine) as session:
        rows = list(catalog_store.list_versions(session, plugin_id="com.acme.base"))
        newest = newest_compatible(rows, after="1.0.0")
        assert newest is not None and newest.version == "2.0.0-beta.1"
        assert newest_compatible(rows, after="2.0.0-beta.1") is None
