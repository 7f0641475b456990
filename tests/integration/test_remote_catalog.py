"""One catalog serving two orchestrators, on Docker and the OCI registry on 127.0.0.1:5000:
orchestrator A holds the catalog; orchestrator B, started with ``SUMMIT_CATALOG_URL`` = A and a
viewer token of A, installs from it by ``{"catalog": ...}`` (the image pulled by digest,
scanned, checked) and reports the install and the uninstall to A, whose statistics count
them; B's own catalog routes point at A. A collection of two plugins published on A installs
there as one operation, and a collection whose member cannot be resolved installs nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess

from .conftest import sqlite_orchestrator
from .test_catalog_api import REGISTRY, push_plugin_image

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

FIRST, SECOND = "com.acme.remote-first", "com.acme.remote-second"


@pytest.fixture(scope="module")
def catalog(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    """Orchestrator A, which holds the catalog."""
    with sqlite_orchestrator(tmp_path_factory, docker_client, "catalog-a") as a:
        yield a


@pytest.fixture(scope="module")
def images(
    catalog: OrchestratorProcess, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Both plugins' images in the registry by digest, published in A's catalog (by A's
    admin); deleted from the registry at the end."""
    tmp = tmp_path_factory.mktemp("remote-images")
    refs = {
        pid: push_plugin_image(catalog, docker_client, tmp, pid, version="1.0.0")
        for pid in (FIRST, SECOND)
    }
    for pid, ref in refs.items():
        r = catalog.client.post(f"/v1/catalog/plugins/{pid}/versions", json={"image": ref})
        assert r.status_code == 201, r.text
    yield refs
    with httpx.Client(base_url=f"http://{REGISTRY}", timeout=10) as http:
        for ref in refs.values():
            name, digest = ref.split("@")
            http.delete(f"/v2/{name.removeprefix(REGISTRY + '/')}/manifests/{digest}")


@pytest.fixture(scope="module")
def consumer(
    catalog: OrchestratorProcess, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    """Orchestrator B, reading A's catalog with a viewer token of A."""
    r = catalog.client.post("/v1/tokens", json={"name": "orchestrator-b", "role": "viewer"})
    assert r.status_code == 201, r.text
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "catalog-b",
        catalog_url=catalog.url,
        catalog_token=r.json()["token"],
    ) as b:
        yield b


def wait_for_stats(catalog: OrchestratorProcess, plugin_id: str, **expected: int) -> None:
    deadline = time.monotonic() + 30
    summary: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = catalog.client.get(f"/v1/catalog/plugins/{plugin_id}/stats")
        assert r.status_code == 200, r.text
        summary = r.json()["summary"]
        if all(summary[k] == v for k, v in expected.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"the catalog's statistics never showed {expected}: {summary}")


def test_an_orchestrator_installs_from_a_remote_catalog_and_reports_it(
    catalog: OrchestratorProcess, consumer: OrchestratorProcess, images: dict[str, str]
) -> None:
    r = consumer.client.post("/v1/plugins", json={"catalog": {"id": FIRST, "version": "^1"}})
    assert r.status_code == 201, r.text
    [step] = r.json()["plan"]["install"]
    assert (step["id"], step["version"], step["image"]) == (FIRST, "1.0.0", images[FIRST])
    plugin = consumer.plugin(FIRST)
    assert plugin["state"] == "LOADED" and plugin["update_available"] is None
    scan = consumer.client.get(f"/v1/plugins/{FIRST}/scan")
    assert scan.status_code == 200, scan.text  # scanned here, at install
    wait_for_stats(catalog, FIRST, installs=1)

    # B serves no catalog of its own: it names the one it reads.
    refused = consumer.client.get("/v1/catalog/plugins")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["catalog_url"] == catalog.url
    missing = consumer.client.post("/v1/plugins", json={"catalog": {"id": "com.acme.nothing"}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_in_catalog"

    assert consumer.client.delete(f"/v1/plugins/{FIRST}").status_code == 204
    wait_for_stats(catalog, FIRST, installs=1, uninstalls=1)


def test_a_collection_installs_as_one_operation_or_not_at_all(
    catalog: OrchestratorProcess, images: dict[str, str]
) -> None:
    broken = catalog.client.post(
        "/v1/catalog/collections/com.acme.broken-kit/versions",
        json={"version": "1.0.0", "plugins": {FIRST: "^1", SECOND: "^5"}},
    )
    assert broken.status_code == 201, broken.text
    r = catalog.client.post("/v1/plugins", json={"collection": {"id": "com.acme.broken-kit"}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "dependency_missing", r.text
    installed = {p["id"] for p in catalog.client.get("/v1/plugins").json()}
    assert not installed & {FIRST, SECOND}

    kit = catalog.client.post(
        "/v1/catalog/collections/com.acme.kit/versions",
        json={"version": "1.0.0", "plugins": {FIRST: "^1", SECOND: "*"}, "description": "Both"},
    )
    assert kit.status_code == 201, kit.text
    listed = catalog.client.get("/v1/catalog/collections").json()["items"]
    assert {c["id"] for c in listed} == {"com.acme.kit", "com.acme.broken-kit"}
    try:
        r = catalog.client.post(
            "/v1/plugins", json={"collection": {"id": "com.acme.kit", "version": "^1"}}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["collection"] == {"id": "com.acme.kit", "version": "1.0.0"}
        assert sorted(v["id"] for v in body["installed"]) == [FIRST, SECOND]
        for pid in (FIRST, SECOND):
            assert catalog.plugin(pid)["version"] == "1.0.0"
    finally:
        for pid in (FIRST, SECOND):
            catalog.client.delete(f"/v1/plugins/{pid}")
