"""The catalog API on a real orchestrator, Docker and the OCI registry on 127.0.0.1:5000: a
publisher (an API token with role ``publisher``, owning ``com.acme.``) publishes an image by
digest, which is pulled, read and scanned; anyone with a token finds it, reads its page and
versions; yanking hides it; namespaces, pinning and roles are enforced; the rate limit answers
429 with Retry-After."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
PID = "com.acme.weather"


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(tmp_path_factory, docker_client, "catalog") as o:
        yield o


def push_plugin_image(
    orch: OrchestratorProcess, docker_client: Any, tmp: Path, plugin_id: str, **changes: Any
) -> str:
    """Build the plugin through an install, push it to the registry, forget it here; its
    reference by digest."""
    r = orch.install_dir(make_plugin(tmp / secrets.token_hex(4), id=plugin_id, **changes))
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    [image] = docker_client.images.list(name=f"summit-plugin/{plugin_id}")
    repo = f"{REGISTRY}/summit-tests/{plugin_id}"
    tag = f"{repo}:{version}-{secrets.token_hex(3)}"
    image.tag(tag)
    for line in docker_client.images.push(tag, stream=True, decode=True):
        assert "error" not in line, line
    digest = next(
        d for d in docker_client.images.get(tag).attrs["RepoDigests"] if d.startswith(repo)
    )
    docker_client.images.remove(tag)
    assert orch.client.delete(f"/v1/plugins/{plugin_id}").status_code == 204
    return digest


def client_for(orch: OrchestratorProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=orch.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


@pytest.fixture(scope="module")
def publisher(orch: OrchestratorProcess) -> Iterator[httpx.Client]:
    token = orch.client.post("/v1/tokens", json={"name": "acme-ci", "role": "publisher"}).json()
    r = orch.client.post(
        "/v1/catalog/publishers",
        json={"id": "acme", "name": "Acme", "token_id": token["id"], "namespaces": ["com.acme."]},
    )
    assert r.status_code == 201, r.text
    with client_for(orch, token["token"]) as client:
        yield client


@pytest.fixture(scope="module")
def weather_v1(
    orch: OrchestratorProcess, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return push_plugin_image(
        orch, docker_client, tmp_path_factory.mktemp("img"), PID, version="1.0.0"
    )


def test_a_publisher_publishes_an_image_by_digest_and_it_is_scanned(
    publisher: httpx.Client, weather_v1: str, docker_client: Any
) -> None:
    def local_copies() -> list[str]:
        return sorted(
            i.id for i in docker_client.images.list(name=f"{REGISTRY}/summit-tests/{PID}")
        )

    before = local_copies()
    body = {
        "image": weather_v1,
        "readme": "# Weather\nForecasts for <b>anywhere</b>.",
        "categories": ["data"],
        "keywords": ["forecast", "rain"],
        "changelog": "First release",
    }
    r = publisher.post(f"/v1/catalog/plugins/{PID}/versions", json=body)
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["version"] == "1.0.0" and entry["image"] == weather_v1
    assert entry["digest"].startswith("sha256:") and entry["compatible"] is True
    assert entry["published_by"].startswith("acme-ci (tok_")
    assert entry["signature_status"] == "unsigned"
    assert entry["scan"]["summary"] is not None  # the image's files were read and scanned
    assert local_copies() == before  # pulled to be read and scanned, then removed

    again = publisher.post(f"/v1/catalog/plugins/{PID}/versions", json=body)
    assert again.status_code == 200  # the same digest: a retried upload changes nothing


def test_it_is_found_and_shown(orch: OrchestratorProcess, publisher: httpx.Client) -> None:
    viewer = orch.client.post("/v1/tokens", json={"name": "looker", "role": "viewer"}).json()
    with client_for(orch, viewer["token"]) as client:
        found = client.get("/v1/catalog/plugins", params={"q": "weat"}).json()
        assert [i["id"] for i in found["items"]] == [PID]
        assert found["facets"]["category"] == {"data": 1}
        assert found["facets"]["point"]["analyzer"] == 1
        by_word = client.get("/v1/catalog/plugins", params={"q": "forecast"}).json()
        assert [i["id"] for i in by_word["items"]] == [PID]
        assert client.get("/v1/catalog/plugins", params={"q": "zebra"}).json()["items"] == []

        page = client.get(f"/v1/catalog/plugins/{PID}").json()
        assert page["publisher"] == {"id": "acme", "name": "Acme"}
        assert page["latest_compatible"]["version"] == "1.0.0"
        assert page["latest_compatible"]["readme"].startswith("# Weather")
        versions = client.get(f"/v1/catalog/plugins/{PID}/versions").json()["items"]
        assert [(v["version"], v["compatible"], v["yanked"]) for v in versions] == [
            ("1.0.0", True, False)
        ]
        # A viewer reads the catalog but publishes nothing.
        r = client.post(f"/v1/catalog/plugins/{PID}/versions", json={"image": "x@sha256:0"})
        assert r.status_code == 403
        missing = client.get("/v1/catalog/plugins/com.acme.nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_in_catalog"


def test_publishing_is_held_to_namespaces_digests_and_the_image(
    orch: OrchestratorProcess, publisher: httpx.Client, weather_v1: str
) -> None:
    outside = publisher.post(
        "/v1/catalog/plugins/com.other.weather/versions", json={"image": weather_v1}
    )
    assert outside.status_code == 403
    assert outside.json()["error"]["code"] == "namespace_forbidden"

    tag = weather_v1.split("@")[0] + ":latest"
    r = publisher.post(f"/v1/catalog/plugins/{PID}/versions", json={"image": tag})
    assert r.status_code == 422 and r.json()["error"]["code"] == "image_not_pinned"

    r = publisher.post("/v1/catalog/plugins/com.acme.rain/versions", json={"image": weather_v1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "id_mismatch"
    assert publisher.get("/v1/catalog/plugins/com.acme.rain").status_code == 404

    operator = orch.client.post("/v1/tokens", json={"name": "ops", "role": "operator"}).json()
    with client_for(orch, operator["token"]) as client:
        r = client.post(f"/v1/catalog/plugins/{PID}/versions", json={"image": weather_v1})
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_publisher"


def test_a_yanked_version_is_hidden_from_search_but_listed(
    orch: OrchestratorProcess, publisher: httpx.Client
) -> None:
    r = publisher.post(
        f"/v1/catalog/plugins/{PID}/versions/1.0.0/yank", json={"reason": "wrong units"}
    )
    assert r.status_code == 200 and r.json()["yanked"] is True
    assert orch.client.get("/v1/catalog/plugins", params={"q": "weather"}).json()["items"] == []
    versions = orch.client.get(f"/v1/catalog/plugins/{PID}/versions").json()["items"]
    assert versions[0]["yanked"] is True and versions[0]["yanked_reason"] == "wrong units"

    assert publisher.post(f"/v1/catalog/plugins/{PID}/versions/1.0.0/unyank").status_code == 200
    found = orch.client.get("/v1/catalog/plugins", params={"q": "weather"}).json()["items"]
    assert [i["id"] for i in found] == [PID]


def test_the_catalog_rate_limit_answers_429_with_retry_after(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "catalog-limit", catalog_rate_limit_requests="3"
    ) as limited:
        answers = [limited.client.get("/v1/catalog/plugins") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert answers[-1].json()["error"]["code"] == "rate_limited"
        assert limited.client.get("/v1/plugins").status_code == 200  # only the catalog


def test_install_from_the_catalog_with_a_dependency_then_upgrade(
    orch: OrchestratorProcess,
    publisher: httpx.Client,
    docker_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("deps")
    base, app = "com.acme.units", "com.acme.report"
    needs_base = [{"id": base, "version": "^1.0"}]
    images = {(base, "1.0.0"): push_plugin_image(orch, docker_client, tmp, base, version="1.0.0")}
    # The app's images are built by installs, which need the dependency installed here.
    assert orch.install_dir(make_plugin(tmp / "base", id=base, version="1.0.0")).status_code == 201
    for version in ("1.0.0", "1.1.0"):
        images[(app, version)] = push_plugin_image(
            orch, docker_client, tmp, app, version=version, dependencies=needs_base
        )
    assert orch.client.delete(f"/v1/plugins/{base}").status_code == 204
    for (plugin_id, version), image in images.items():
        if version != "1.1.0":
            r = publisher.post(f"/v1/catalog/plugins/{plugin_id}/versions", json={"image": image})
            assert r.status_code == 201, r.text
    try:
        r = orch.client.post("/v1/plugins", json={"catalog": {"id": app, "version": "^1"}})
        assert r.status_code == 201, r.text
        assert [(s["id"], s["version"]) for s in r.json()["plan"]["install"]] == [
            (base, "1.0.0"),
            (app, "1.0.0"),
        ]
        assert orch.plugin(base)["version"] == "1.0.0"
        assert orch.plugin(app)["update_available"] is None
        assert orch.client.post(f"/v1/plugins/{app}/enable").json()["state"] == "ACTIVE"

        r = publisher.post(
            f"/v1/catalog/plugins/{app}/versions", json={"image": images[(app, "1.1.0")]}
        )
        assert r.status_code == 201, r.text
        assert orch.plugin(app)["update_available"]["version"] == "1.1.0"

        r = orch.client.post(f"/v1/plugins/{app}/upgrade", json={})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "1.1.0" and r.json()["state"] == "ACTIVE"
        assert r.json()["update_available"] is None
        out = orch.client.post(
            "/v1/extension-points/analyzer/execute", json={"input": "hi", "plugins": [app]}
        )
        assert out.status_code == 200 and out.json()["results"][0]["output"]["echo"] == "hi"
        again = orch.client.post(f"/v1/plugins/{app}/upgrade", json={})
        assert again.status_code == 409 and again.json()["error"]["code"] == "no_upgrade"
        actions = [
            h["action"] for h in orch.client.get(f"/v1/plugins/{app}/history").json()["items"]
        ]
        assert "upgraded" in actions
    finally:
        for plugin_id in (app, base):
            orch.client.post(f"/v1/plugins/{plugin_id}/disable")
            orch.client.delete(f"/v1/plugins/{plugin_id}")
