"""What the marketplace reads of a catalog source: a remote catalog (another orchestrator's
catalog routes, in process) answers searches, plugin pages, version lists and manifests as the
local source does for the same rows; it says ``compatible`` for the orchestrator that reads
it; and an answer it cannot use is a clear 502/503, never a half-drawn page."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from orchestrator.catalog.search import CatalogQuery
from orchestrator.catalog.service import CatalogService
from orchestrator.catalog.sources import CatalogUnreachable, LocalCatalog, RemoteCatalog
from orchestrator.domain.errors import NotFound
from orchestrator.store import catalog as catalog_store
from orchestrator.store.db import session_scope
from tests.fixtures.remote_catalog import (
    ManifestlessCatalog,
    catalog_app,
    catalog_engine,
    catalog_service,
    probe_manifest,
    publish_entry,
    remote_catalog,
    viewer_token,
)

__all__ = ["catalog_engine"]  # the shared fixture

URL = "http://catalog.example"


def service_on(engine: Engine, kind: type[CatalogService] = CatalogService) -> CatalogService:
    return catalog_service(engine, kind)


def put(engine: Engine, plugin_id: str, version: str = "1.0.0", **fields: Any) -> None:
    publish_entry(engine, plugin_id, version, published_by="publisher-token", **fields)


@pytest.fixture
def local(catalog_engine: Engine) -> LocalCatalog:
    """The catalog as its own orchestrator reads it."""
    return LocalCatalog(catalog_engine, service=service_on(catalog_engine))


@pytest.fixture
def remote(catalog_engine: Engine) -> RemoteCatalog:
    return remote_catalog(catalog_app(catalog_engine), viewer_token(catalog_engine))


def test_a_remote_search_answers_what_the_catalog_answers_there(
    catalog_engine: Engine, local: LocalCatalog, remote: RemoteCatalog
) -> None:
    for n in range(3):
        put(catalog_engine, f"com.acme.chart{n}", categories=("charts",), signed=n == 0)
    put(catalog_engine, "com.acme.mailer", categories=("mail",), permissions=["read:data"])
    put(catalog_engine, "com.acme.future", summit=">=9")

    everything = remote.search(CatalogQuery())
    assert everything == local.search(CatalogQuery())
    assert everything["total"] == 5
    assert everything["facets"]["category"] == {"charts": 3, "mail": 1}

    # Filters, as the remote applies them.
    charts = remote.search(CatalogQuery(category="Charts", sort="name"))
    assert [i["id"] for i in charts["items"]] == [f"com.acme.chart{n}" for n in range(3)]
    assert [i["id"] for i in remote.search(CatalogQuery(signed=True))["items"]] == [
        "com.acme.chart0"
    ]
    assert [i["id"] for i in remote.search(CatalogQuery(permission="read:data"))["items"]] == [
        "com.acme.mailer"
    ]
    runs = remote.search(CatalogQuery(compatible=True))
    assert runs["total"] == 4 and "com.acme.future" not in {i["id"] for i in runs["items"]}
    assert {i["compatible_version"] for i in runs["items"]} == {"1.0.0"}

    # Paging: the remote's cursor is handed back to it, and every plugin comes once.
    seen: list[str] = []
    query = CatalogQuery(sort="name", limit=2)
    while True:
        page = remote.search(query)
        seen += [i["id"] for i in page["items"]]
        if page["next"] is None:
            break
        query = CatalogQuery(sort="name", limit=2, cursor=page["next"])
    assert seen == sorted(i["id"] for i in everything["items"])


def test_a_remote_plugin_page_and_versions_say_what_runs_on_this_orchestrator(
    catalog_engine: Engine, local: LocalCatalog
) -> None:
    put(catalog_engine, "com.acme.chart", "1.0.0", readme="# Old", signed=True)
    put(catalog_engine, "com.acme.chart", "2.0.0", summit=">=2,<3", readme="# New", signed=True)
    with session_scope(catalog_engine) as session:
        catalog_store.record_stats(
            session, plugin_id="com.acme.chart", version="1.0.0", installs=7, calls=40
        )
    app = catalog_app(catalog_engine)
    token = viewer_token(catalog_engine)
    same = remote_catalog(app, token)  # reads with the catalog's own version, 0.1.0

    page = same.plugin_page("com.acme.chart")
    there = local.plugin_page("com.acme.chart")
    assert page["publisher"] == {"id": "acme", "name": "Acme Plugins"}
    assert page["stats"]["installs"] == there["stats"]["installs"] == 7
    assert page["signed"] is there["signed"] is True
    assert page["latest_compatible"]["version"] == there["latest_compatible"]["version"]
    assert page["latest_compatible"]["readme"] == "# Old"
    assert page["latest_compatible"]["signature_status"] == "verified"
    assert page["latest_compatible"]["scan"]["summary"] == {"LOW": 2}
    listed = same.version_list("com.acme.chart")
    assert [(v["version"], v["compatible"]) for v in listed] == [("2.0.0", False), ("1.0.0", True)]
    assert [v["version"] for v in local.version_list("com.acme.chart")] == ["2.0.0", "1.0.0"]

    # An orchestrator at 2.1 runs 2.0.0 and not 1.0.0, whatever the catalog's own version says.
    newer = remote_catalog(app, token, summit_version="2.1.0")
    assert newer.plugin_page("com.acme.chart")["latest_compatible"]["version"] == "2.0.0"
    assert [(v["version"], v["compatible"]) for v in newer.version_list("com.acme.chart")] == [
        ("2.0.0", True),
        ("1.0.0", False),
    ]

    with pytest.raises(NotFound) as caught:
        same.plugin_page("com.acme.nothing")
    assert caught.value.code == "not_in_catalog" and "http://testserver" in caught.value.message
    with pytest.raises(NotFound):
        same.version_list("com.acme.nothing")


def test_manifests_come_from_a_remote_that_lists_them(catalog_engine: Engine) -> None:
    put(
        catalog_engine,
        "com.acme.fetch",
        permissions=["network:access"],
        hosts=["api.example.com"],
    )
    token = viewer_token(catalog_engine)
    local = LocalCatalog(catalog_engine)
    assert local.manifest("com.acme.fetch", "1.0.0") is not None
    assert local.manifest("com.acme.fetch", "9.9.9") is None

    # A catalog that lists no manifests (an older one): the dialog then asks for JSON.
    older = catalog_app(catalog_engine)
    older.state.catalog = service_on(catalog_engine, ManifestlessCatalog)
    assert remote_catalog(older, token).manifest("com.acme.fetch", "1.0.0") is None

    remote = remote_catalog(catalog_app(catalog_engine), token)
    manifest = remote.manifest("com.acme.fetch", "1.0.0")
    assert manifest == local.manifest("com.acme.fetch", "1.0.0")
    assert manifest is not None and manifest["network"]["allowed_hosts"] == ["api.example.com"]
    assert manifest["config_schema"]["properties"]["init_delay_s"]["minimum"] == 0
    assert remote.manifest("com.acme.fetch", "2.0.0") is None
    assert remote.manifest("com.acme.none", "1.0.0") is None


def listing(manifest: dict[str, Any]) -> httpx.MockTransport:
    digest = "sha256:" + "ab" * 32
    item = {
        "version": "1.0.0",
        "image": f"registry.example/x@{digest}",
        "digest": digest,
        "summit_range": "*",
        "published_at": "2025-01-02T03:04:05+00:00",
        "manifest": manifest,
    }
    return httpx.MockTransport(lambda request: httpx.Response(200, json={"items": [item]}))


def test_a_manifest_of_another_plugin_or_an_invalid_one_is_not_used() -> None:
    other = probe_manifest("com.acme.other", "1.0.0")
    for manifest in (other, {"id": "com.acme.x", "version": "1.0.0"}):
        client = httpx.Client(base_url=URL, transport=listing(manifest))
        assert RemoteCatalog(URL, None, client=client).manifest("com.acme.x", "1.0.0") is None
    good = probe_manifest("com.acme.x", "1.0.0")
    client = httpx.Client(base_url=URL, transport=listing(good))
    assert RemoteCatalog(URL, None, client=client).manifest("com.acme.x", "1.0.0") == good


@pytest.mark.parametrize(
    ("call", "answer", "status", "words"),
    [
        ("search", httpx.ConnectError("refused"), 503, "cannot be reached"),
        ("page", httpx.ConnectError("refused"), 503, "cannot be reached"),
        ("search", httpx.Response(403, json={"error": {"code": "forbidden"}}), 502, "token"),
        ("search", httpx.Response(404, json={}), 502, "no catalog search"),
        ("search", httpx.Response(200, json={"items": [{"id": "x"}]}), 502, "search page"),
        (
            "search",
            httpx.Response(200, json={"items": [], "facets": {}, "total": "many"}),
            502,
            "total",
        ),
        ("page", httpx.Response(200, json={"id": "com.acme.x", "name": "X"}), 502, "the page of"),
        (
            "page",
            httpx.Response(409, json={"error": {"code": "catalog_is_remote"}}),
            502,
            "answered 409",
        ),
    ],
)
def test_a_remote_that_cannot_answer_a_page_says_so(
    call: str, answer: Any, status: int, words: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    catalog = RemoteCatalog(URL, "smt_token", client=client)
    with pytest.raises(CatalogUnreachable) as caught:
        if call == "search":
            catalog.search(CatalogQuery())
        else:
            catalog.plugin_page("com.acme.x")
    assert caught.value.status_code == status
    assert words in caught.value.message and URL in caught.value.message


def test_search_and_plugin_pages_are_cached_for_a_few_seconds() -> None:
    asked: list[str] = []
    digest = "sha256:" + "cd" * 32
    page: dict[str, Any] = {
        "id": "com.acme.x",
        "name": "X",
        "description": "",
        "publisher": {"id": "acme", "name": "Acme"},
        "signed": False,
        "deprecated": False,
        "deprecation_reason": None,
        "successor": None,
        "stats": {
            "installs": 1,
            "active_installs": 1,
            "calls": 0,
            "errors": 0,
            "latency_p50_ms": None,
            "latency_p99_ms": None,
        },
    }
    version: dict[str, Any] = {
        "version": "1.0.0",
        "image": f"registry.example/x@{digest}",
        "digest": digest,
        "summit_range": "*",
        "permissions": [],
        "resources": {},
        "dependencies": [],
        "changelog": "",
        "signature_status": "unsigned",
        "signature": None,
        "scan": {"summary": {}, "blocking": []},
        "published_at": "2025-01-02T03:04:05+00:00",
        "published_by": "p",
        "yanked": False,
        "yanked_reason": None,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(
            request.url.path + ("?" + request.url.query.decode() if request.url.query else "")
        )
        if request.url.path.endswith("/versions"):
            return httpx.Response(200, json={"items": [version]})
        if request.url.path == "/v1/catalog/plugins":
            return httpx.Response(200, json={"items": [], "facets": {}, "total": 0, "next": None})
        return httpx.Response(200, json=page)

    now = [100.0]
    client = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    catalog = RemoteCatalog(URL, None, client=client, cache_s=5.0, clock=lambda: now[0])
    catalog.search(CatalogQuery(q="chart", signed=False, compatible=True, limit=24))
    catalog.search(CatalogQuery(q="chart", signed=False, compatible=True, limit=24))
    assert asked == ["/v1/catalog/plugins?limit=24&q=chart&signed=false&compatible=true"]
    catalog.search(CatalogQuery(q="chart", limit=24))  # another query is asked
    assert asked[1:] == ["/v1/catalog/plugins?limit=24&q=chart"]
    now[0] += 6
    catalog.search(CatalogQuery(q="chart", signed=False, compatible=True, limit=24))
    assert len(asked) == 3  # a few seconds later the remote is asked again

    asked.clear()
    for _ in range(2):
        shown = catalog.plugin_page("com.acme.x")
    assert shown["latest_compatible"]["version"] == "1.0.0"
    assert catalog.versions("com.acme.x")[0].version == "1.0.0"  # the same read as the page's
    assert asked == ["/v1/catalog/plugins/com.acme.x", "/v1/catalog/plugins/com.acme.x/versions"]
    now[0] += 6
    catalog.plugin_page("com.acme.x")
    assert len(asked) == 4
