"""Where an orchestrator reads the catalog: a remote catalog read over the REST API of another
orchestrator (in process here) gives the same versions the installer needs, caches them for a
few seconds, and says clearly when it cannot be used; the update notices follow the source
the orchestrator uses; installing from a remote catalog still checks what it installs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from orchestrator.catalog.installer import CatalogInstall, CatalogInstaller
from orchestrator.catalog.sources import (
    CatalogUnreachable,
    LocalCatalog,
    RemoteCatalog,
    source_of,
    use_source,
)
from orchestrator.domain.errors import NotFound
from orchestrator.services.plugins import update_notice
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.db import make_engine, migrate, session_scope
from tests.fixtures.remote_catalog import catalog_app, publish, remote_catalog, viewer_token
from tests.unit.services.conftest import Services, services, settings

__all__ = ["services", "settings"]

URL = "http://catalog.example"


@pytest.fixture
def catalog_engine(tmp_path: Path) -> Iterator[Engine]:
    """The remote catalog's own database."""
    eng = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def remote(catalog_engine: Engine) -> RemoteCatalog:
    return remote_catalog(catalog_app(catalog_engine), viewer_token(catalog_engine))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mocked(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> RemoteCatalog:
    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    return RemoteCatalog(URL, "smt_token", client=client, **kw)


def version_item(**changes: Any) -> dict[str, Any]:
    digest = "sha256:" + "ab" * 32
    item: dict[str, Any] = {
        "plugin_id": "com.acme.base",
        "version": "1.0.0",
        "image": f"registry.example/base@{digest}",
        "digest": digest,
        "summit_range": ">=0.1,<1",
        "permissions": [],
        "dependencies": [],
        "signature": None,
        "yanked": False,
        "published_at": "2025-01-02T03:04:05Z",
    }
    item.update(changes)
    return item


def test_a_remote_catalog_lists_what_the_installer_needs(
    catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    publish(catalog_engine, "com.acme.base", "1.0.0", permissions=["storage"])
    publish(catalog_engine, "com.acme.base", "1.2.0", permissions=["storage"], yanked=True)
    app_ref = publish(catalog_engine, "com.acme.app", "2.0.0", deps={"com.acme.base": "^1.0"})

    assert remote.has_plugin("com.acme.base") and not remote.has_plugin("com.acme.nothing")
    assert remote.versions("com.acme.nothing") == []
    base = remote.versions("com.acme.base")
    assert [(e.version, e.yanked) for e in base] == [("1.2.0", True), ("1.0.0", False)]
    assert base[0].permissions == ("storage",)
    [app] = remote.versions("com.acme.app")
    assert app.image == app_ref and app_ref.endswith("@" + app.digest)
    assert dict(app.dependencies) == {"com.acme.base": "^1.0"}
    assert app.summit_range == ">=0.1,<1" and app.signature is None
    # The local source reads the same database rows into the same entries.
    assert LocalCatalog(catalog_engine).versions("com.acme.app") == [app]


def test_version_lists_are_cached_for_a_few_seconds() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        assert request.headers["authorization"] == "Bearer smt_token"
        return httpx.Response(200, json={"items": [version_item()]})

    clock = Clock()
    catalog = mocked(handler, cache_s=5.0, clock=clock)
    assert catalog.has_plugin("com.acme.base")
    assert [e.version for e in catalog.versions("com.acme.base")] == ["1.0.0"]
    assert asked == ["/v1/catalog/plugins/com.acme.base/versions"]  # one read for both
    clock.now += 6
    catalog.versions("com.acme.base")
    assert len(asked) == 2


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        (httpx.ConnectError("refused"), 503, "cannot be reached"),
        (httpx.ReadTimeout("slow"), 503, "cannot be reached"),
        (httpx.Response(500, json={"error": {"code": "internal_error"}}), 502, "answered 500"),
        (httpx.Response(401, json={"error": {"code": "unauthorized"}}), 502, "token"),
        (httpx.Response(429, headers={"Retry-After": "3"}), 503, "rate limiting"),
        (httpx.Response(200, text="<html>"), 502, "not JSON"),
        (httpx.Response(200, json={"items": [{"version": "1.0.0"}]}), 502, "not readable"),
        (
            httpx.Response(200, json={"items": [version_item(image="registry.example/base:1")]}),
            502,
            "not pinned",
        ),
    ],
)
def test_a_catalog_that_cannot_be_used_says_so(answer: Any, status: int, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    with pytest.raises(CatalogUnreachable) as caught:
        mocked(handler).versions("com.acme.base")
    assert caught.value.code == "catalog_unreachable"
    assert caught.value.status_code == status
    assert words in caught.value.message and URL in caught.value.message
    assert caught.value.details["url"] == URL


def test_update_notices_follow_the_source_and_skip_a_remote_that_is_down(
    services: Services, catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    view = services.install("com.acme.base", version="1.0.0")
    publish(catalog_engine, "com.acme.base", "1.3.0")
    assert view.update_available is None  # this orchestrator's own catalog has nothing

    use_source(services.engine, remote)
    try:
        assert source_of(services.engine) is remote
        with session_scope(services.engine) as session:
            plugin = crud.get_plugin(session, plugin_id="com.acme.base")
            assert plugin is not None
            notice = update_notice(session, plugin)
        assert notice is not None and notice.version == "1.3.0"

        def down(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        use_source(services.engine, mocked(down))
        with session_scope(services.engine) as session:
            plugin = crud.get_plugin(session, plugin_id="com.acme.base")
            assert plugin is not None
            assert update_notice(session, plugin) is None  # left out, not an error
    finally:
        use_source(services.engine, None)
    assert isinstance(source_of(services.engine), LocalCatalog)


def test_installing_from_a_remote_catalog_resolves_and_installs_there(
    services: Services, catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    runtime = services.runtime
    base = publish(catalog_engine, "com.acme.base", "1.4.0", runtime=runtime)
    publish(catalog_engine, "com.acme.app", "1.0.0", runtime=runtime, deps={"com.acme.base": "^1"})
    installer = CatalogInstaller(
        engine=services.engine,
        installs=services.installs,
        uninstall=services.lifecycle.uninstall,
        source=remote,
    )
    request = CatalogInstall.model_validate({"catalog": {"id": "com.acme.app"}})
    result = installer.install(request, principal="admin", actor="t")

    assert [(s["id"], s["version"]) for s in result["plan"]["install"]] == [
        ("com.acme.base", "1.4.0"),
        ("com.acme.app", "1.0.0"),
    ]
    with session_scope(services.engine) as session:
        row = crud.get_version(session, plugin_id="com.acme.base", version="1.4.0")
        assert row is not None and row.image == base  # pulled by the digest the catalog named
    with pytest.raises(NotFound) as caught:
        installer.plan(CatalogInstall.model_validate({"catalog": {"id": "com.acme.x"}}).catalog)
    assert caught.value.details["catalog"] == "http://testserver"


def test_a_remote_image_that_holds_another_plugin_is_not_installed(
    services: Services, catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    runtime = services.runtime
    publish(catalog_engine, "com.acme.base", "1.0.0", runtime=runtime)
    publish(
        catalog_engine,
        "com.acme.app",
        "1.0.0",
        runtime=runtime,
        deps={"com.acme.base": "*"},
        holds={"id": "com.acme.evil", "version": "6.6.6"},
    )
    installer = CatalogInstaller(
        engine=services.engine,
        installs=services.installs,
        uninstall=services.lifecycle.uninstall,
        source=remote,
    )
    with pytest.raises(CatalogUnreachable) as caught:
        installer.install(
            CatalogInstall.model_validate({"catalog": {"id": "com.acme.app"}}),
            principal="admin",
            actor="t",
        )
    assert caught.value.status_code == 502
    assert caught.value.details["found"] == ("com.acme.evil", "6.6.6")
    with session_scope(services.engine) as session:
        assert crud.list_plugins(session) == []  # not even the dependency


def test_a_remote_catalog_reads_collections(catalog_engine: Engine, remote: RemoteCatalog) -> None:
    from orchestrator.catalog.collections import CollectionPublishRequest, CollectionService
    from orchestrator.security.access import Caller, Role

    publish(catalog_engine, "com.acme.base", "1.0.0")
    service = CollectionService(engine=catalog_engine)
    admin = Caller(Role.ADMIN, None, "admin")
    for version in ("1.0.0", "1.1.0"):
        service.publish(
            "com.acme.kit",
            CollectionPublishRequest(version=version, plugins={"com.acme.base": "^1"}),
            admin,
        )
    kit = remote.collection_versions("com.acme.kit")
    assert [(c.version, dict(c.plugins)) for c in kit] == [
        ("1.1.0", {"com.acme.base": "^1"}),
        ("1.0.0", {"com.acme.base": "^1"}),
    ]
    with pytest.raises(NotFound):
        remote.collection_versions("com.acme.none")


def test_newest_of_many_is_newest_of_each_locally_and_remotely(
    catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    """The update notices of a list (GraphQL, the UI) and of one plugin follow one rule."""
    for plugin_id, versions in (
        ("com.acme.base", ("1.0.0", "2.0.0", "1.2.0")),
        ("com.acme.flat", ("1.0.0",)),
        ("com.acme.gone", ("1.0.0", "1.1.0")),
    ):
        for version in versions:
            publish(catalog_engine, plugin_id, version)
    with session_scope(catalog_engine) as session:
        catalog_store.yank_version(
            session, plugin_id="com.acme.gone", version="1.1.0", reason="broken"
        )
    installed = {"com.acme.base": "1.0.0", "com.acme.flat": "1.0.0", "com.acme.gone": "1.0.0"}
    local = LocalCatalog(catalog_engine)
    for source in (local, remote):
        many = source.newest_of(installed)
        one = {pid: source.newest(pid, after=v) for pid, v in installed.items()}
        assert {pid: e.version for pid, e in many.items()} == {
            pid: e.version for pid, e in one.items() if e is not None
        }
        # The newest by semver, not the last published; the yanked 1.1.0 is not offered.
        assert {pid: e.version for pid, e in many.items()} == {"com.acme.base": "2.0.0"}
