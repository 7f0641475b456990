"""Install reports: an orchestrator reading a remote catalog reports the installs and
uninstalls of that catalog's plugins to it (never failing them, sending again later when
the catalog is down); the catalog counts each in its daily statistics once per orchestrator,
version, event and day, from any viewer token, and caps what one token may report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator.catalog import reports as reports_module
from orchestrator.catalog.installer import CatalogInstall, CatalogInstaller
from orchestrator.catalog.reports import (
    InstallReporter,
    InstallReportRequest,
    InstallReportService,
    reporter_id,
)
from orchestrator.catalog.sources import RemoteCatalog
from orchestrator.domain.errors import NotFound, SummitError
from orchestrator.security.access import Caller, Role, required_role
from orchestrator.store import catalog as catalog_store
from orchestrator.store.db import make_engine, migrate, session_scope
from tests.fixtures.remote_catalog import catalog_app, publish, remote_catalog, viewer_token
from tests.unit.services.conftest import Services, services, settings

__all__ = ["services", "settings"]

VIEWER = Caller(Role.VIEWER, "tok_viewer", "consumer (tok_viewer)")


@pytest.fixture
def catalog_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def totals(engine: Engine, plugin_id: str) -> tuple[int, int, int]:
    """(installs, uninstalls, active installs) of the plugin's statistics."""
    with session_scope(engine) as session:
        s = catalog_store.stats_summary(session, plugin_id=plugin_id)
        return s.installs, s.uninstalls, s.active_installs


def report(event: str, orchestrator: str = "b-1") -> InstallReportRequest:
    return InstallReportRequest.model_validate({"event": event, "orchestrator": orchestrator})


# -- the catalog's side ----------------------------------------------------------------------------


def test_a_report_counts_once_per_orchestrator_version_event_and_day(
    catalog_engine: Engine,
) -> None:
    publish(catalog_engine, "com.acme.base", "1.0.0")
    service = InstallReportService(engine=catalog_engine)

    assert service.record("com.acme.base", "1.0.0", report("install"), VIEWER)["recorded"]
    again = service.record("com.acme.base", "1.0.0", report("install"), VIEWER)
    assert again["recorded"] is False  # a retry adds nothing
    assert totals(catalog_engine, "com.acme.base") == (1, 0, 1)
    service.record("com.acme.base", "1.0.0", report("install", "b-2"), VIEWER)
    service.record("com.acme.base", "1.0.0", report("uninstall"), VIEWER)
    assert totals(catalog_engine, "com.acme.base") == (2, 1, 1)

    with pytest.raises(NotFound):
        service.record("com.acme.base", "9.9.9", report("install"), VIEWER)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_reports_and_collections_are_stored_alike_on_both_databases(engine: Engine) -> None:
    from orchestrator.catalog.collections import CollectionPublishRequest, CollectionService

    publish(engine, "com.acme.base", "1.0.0")
    service = InstallReportService(engine=engine)
    assert service.record("com.acme.base", "1.0.0", report("install"), VIEWER)["recorded"]
    assert not service.record("com.acme.base", "1.0.0", report("install"), VIEWER)["recorded"]
    assert totals(engine, "com.acme.base") == (1, 0, 1)

    collections = CollectionService(engine=engine)
    admin = Caller(Role.ADMIN, None, "admin")
    for version in ("1.0.0", "1.10.0", "1.9.0"):
        request = CollectionPublishRequest(version=version, plugins={"com.acme.base": "^1"})
        assert collections.publish("com.acme.kit", request, admin)["created"]
    page = collections.get("com.acme.kit")
    assert page["latest_version"] == "1.10.0"
    assert [v["version"] for v in page["versions"]] == ["1.10.0", "1.9.0", "1.0.0"]


def test_one_token_reports_for_a_bounded_number_of_orchestrators(
    catalog_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports_module, "MAX_REPORTS_PER_TOKEN", 2)
    publish(catalog_engine, "com.acme.base", "1.0.0")
    service = InstallReportService(engine=catalog_engine)
    for name in ("b-1", "b-2"):
        service.record("com.acme.base", "1.0.0", report("install", name), VIEWER)
    with pytest.raises(SummitError) as caught:
        service.record("com.acme.base", "1.0.0", report("install", "b-3"), VIEWER)
    assert (caught.value.status_code, caught.value.code) == (429, "report_limit")
    other = Caller(Role.VIEWER, "tok_other", "other")
    service.record("com.acme.base", "1.0.0", report("install", "c-1"), other)
    assert totals(catalog_engine, "com.acme.base")[0] == 3


def test_a_viewer_token_reports_through_the_route(catalog_engine: Engine) -> None:
    path = "/v1/catalog/plugins/com.acme.base/versions/1.0.0/installs"
    assert required_role("POST", path) is Role.VIEWER
    assert required_role("POST", "/v1/catalog/plugins/com.acme.base/versions") is Role.PUBLISHER
    publish(catalog_engine, "com.acme.base", "1.0.0")
    headers = {"Authorization": f"Bearer {viewer_token(catalog_engine)}"}
    with TestClient(catalog_app(catalog_engine)) as client:
        body = {"event": "install", "orchestrator": "b-1"}
        first = client.post(path, json=body, headers=headers)
        assert first.status_code == 201 and first.json()["recorded"] is True
        assert client.post(path, json=body, headers=headers).status_code == 200
        bad = client.post(path, json={"event": "bought", "orchestrator": "b-1"}, headers=headers)
        assert bad.status_code == 422
        assert client.post(path, json=body).status_code == 401
        unknown = client.post(path.replace("1.0.0", "2.0.0"), json=body, headers=headers)
        assert unknown.status_code == 404
    assert totals(catalog_engine, "com.acme.base")[0] == 1


# -- the reporting orchestrator's side -------------------------------------------------------------


@pytest.fixture
def remote(catalog_engine: Engine) -> RemoteCatalog:
    return remote_catalog(catalog_app(catalog_engine), viewer_token(catalog_engine))


@pytest.fixture
def reporter(services: Services, remote: RemoteCatalog) -> InstallReporter:
    reporter = InstallReporter(
        engine=services.engine, catalog=remote, events=services.events, orchestrator="b-1"
    )
    reporter.attach()
    return reporter


def test_catalog_installs_and_uninstalls_are_reported(
    services: Services, catalog_engine: Engine, remote: RemoteCatalog, reporter: InstallReporter
) -> None:
    publish(catalog_engine, "com.acme.base", "1.0.0", runtime=services.runtime)
    installer = CatalogInstaller(
        engine=services.engine,
        installs=services.installs,
        uninstall=services.lifecycle.uninstall,
        source=remote,
    )
    installer.install(
        CatalogInstall.model_validate({"catalog": {"id": "com.acme.base"}}),
        principal="admin",
        actor="t",
    )
    assert reporter.waiting == 1
    assert reporter.send() == 1
    assert totals(catalog_engine, "com.acme.base")[:2] == (1, 0)

    services.lifecycle.uninstall("com.acme.base")
    assert reporter.send() == 1
    assert totals(catalog_engine, "com.acme.base")[:2] == (1, 1)


def test_a_plugin_not_installed_from_the_catalogs_image_is_not_reported(
    services: Services, catalog_engine: Engine, reporter: InstallReporter
) -> None:
    publish(catalog_engine, "com.acme.base", "1.0.0")
    services.install("com.acme.base", version="1.0.0")  # built here from a bundle
    services.install("com.acme.unlisted", version="1.0.0")  # not in that catalog at all
    assert reporter.waiting == 2
    assert reporter.send() == 0 and reporter.waiting == 0
    services.lifecycle.uninstall("com.acme.base")
    assert reporter.send() == 0
    assert totals(catalog_engine, "com.acme.base")[:2] == (0, 0)


def test_reports_wait_while_the_catalog_is_down_and_are_sent_later(
    services: Services, catalog_engine: Engine, remote: RemoteCatalog
) -> None:
    publish(catalog_engine, "com.acme.base", "1.0.0", runtime=services.runtime)
    down = True
    app = TestClient(catalog_app(catalog_engine))

    def flaky(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("refused")
        answer = app.request(
            request.method,
            request.url.path,
            content=request.content,
            headers={k: v for k, v in request.headers.items() if k in ("authorization",)}
            | {"content-type": "application/json"},
        )
        return httpx.Response(answer.status_code, content=answer.content)

    client = httpx.Client(base_url="http://catalog", transport=httpx.MockTransport(flaky))
    catalog = RemoteCatalog(
        "http://catalog", viewer_token(catalog_engine), client=client, cache_s=0
    )
    reporter = InstallReporter(
        engine=services.engine, catalog=catalog, events=services.events, orchestrator="b-1"
    )
    reporter.attach()
    CatalogInstaller(
        engine=services.engine,
        installs=services.installs,
        uninstall=services.lifecycle.uninstall,
        source=remote,
    ).install(
        CatalogInstall.model_validate({"catalog": {"id": "com.acme.base"}}),
        principal="admin",
        actor="t",
    )
    assert reporter.send() == 0 and reporter.waiting == 1  # kept, not dropped

    down = False
    assert reporter.send() == 1 and reporter.waiting == 0
    assert totals(catalog_engine, "com.acme.base")[:2] == (1, 0)


def test_the_reporter_id_is_made_once(tmp_path: Path) -> None:
    first = reporter_id(tmp_path / "state", "summit")
    assert first.startswith("summit-") and reporter_id(tmp_path / "state", "summit") == first
    assert reporter_id(tmp_path / "other", "summit") != first
