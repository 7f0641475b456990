"""Signed plugins with SUMMIT_REQUIRE_SIGNED=true: the trust store, signed bundles and images,
and every way a signature must be refused (unsigned, tampered, unlisted files, links, untrusted,
revoked, expired, another image)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from summit_sdk import signing

from orchestrator.services.bundles import pack_directory
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def orch_signed(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "orch-signed", require_signed="true"
    ) as o:
        yield o


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(folder / "trusted")
    signing.generate_keypair(folder / "stranger")
    return {
        name: signing.load_private_key(folder / name / "summit-signing.key")
        for name in ("trusted", "stranger")
    }


def _pem(private: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _sign_folder(folder: Path, private: Any, **kw: Any) -> dict[str, Any]:
    import yaml

    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    doc = signing.make_document(
        manifest,
        image_digest=None,
        files=signing.bundle_files(folder),
        public=private.public_key(),
        **kw,
    )
    return signing.sign_document(doc, private)


def _install(orch: OrchestratorProcess, data: bytes, envelope: Any | None) -> httpx.Response:
    form = {"signature": json.dumps(envelope)} if envelope is not None else {}
    return orch.client.post(
        "/v1/plugins",
        files={"bundle": ("p.tar.gz", data, "application/gzip")},
        data=form,
    )


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    return dict(r.json()["error"])


def test_trust_store_api(orch_signed: OrchestratorProcess, keys: dict[str, Any]) -> None:
    bad = orch_signed.client.post("/v1/trust/keys", json={"name": "x", "public_key": "nope"})
    assert bad.status_code == 422
    added = orch_signed.client.post(
        "/v1/trust/keys", json={"name": "Example Ltd", "public_key": _pem(keys["trusted"])}
    )
    assert added.status_code == 201, added.text
    assert added.json()["key_id"] == signing.key_id(keys["trusted"].public_key())
    again = orch_signed.client.post(
        "/v1/trust/keys", json={"name": "dup", "public_key": _pem(keys["trusted"])}
    )
    assert again.status_code == 409
    listed = orch_signed.client.get("/v1/trust/keys").json()
    assert [k["name"] for k in listed] == ["Example Ltd"]


def test_signed_bundles_install_and_every_bad_signature_is_refused(
    orch_signed: OrchestratorProcess, keys: dict[str, Any], tmp_path: Path
) -> None:
    pid = "com.summit-tests.signed"
    folder = make_plugin(tmp_path / "p", id=pid)
    good = _sign_folder(folder, keys["trusted"])
    data = pack_directory(folder)

    assert _error(_install(orch_signed, data, None))["code"] == "signature_required"
    untrusted = _error(_install(orch_signed, data, _sign_folder(folder, keys["stranger"])))
    assert untrusted["code"] == "untrusted_key"
    tampered = json.loads(json.dumps(good))
    tampered["document"]["permissions"] = ["storage"]
    assert "tampered" in _error(_install(orch_signed, data, tampered))["message"]
    past = datetime.now(UTC) - timedelta(days=3)
    expired = _sign_folder(folder, keys["trusted"], now=past, valid_days=1)
    assert "expired" in _error(_install(orch_signed, data, expired))["message"]

    (folder / "extra.py").write_text("print('not signed')\n")
    unlisted = _error(_install(orch_signed, pack_directory(folder), good))
    assert "unlisted files: extra.py" in unlisted["message"]
    (folder / "extra.py").unlink()
    code = next(folder.glob("*.py"))
    original = code.read_text()
    code.write_text(original + "\n# changed after signing\n")
    assert "changed files" in _error(_install(orch_signed, pack_directory(folder), good))["message"]
    code.write_text(original)

    # A link inside the bundle is refused as it is unpacked, signed or not.
    raw = io.BytesIO()
    with (
        tarfile.open(fileobj=raw, mode="w:gz") as tar,
        tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src,
    ):
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member))
        link = tarfile.TarInfo("alias.py")
        link.type, link.linkname = tarfile.SYMTYPE, code.name
        tar.addfile(link)
    refused = _install(orch_signed, raw.getvalue(), good)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_bundle"
    assert "may not contain symbolic or hard links" in refused.json()["error"]["message"]
    assert orch_signed.client.get(f"/v1/plugins/{pid}").status_code == 404  # nothing written

    installed = _install(orch_signed, data, good)
    assert installed.status_code == 201, installed.text
    report = orch_signed.client.get(f"/v1/plugins/{pid}/scan").json()
    assert report["signature"]["key_id"] == good["document"]["key_id"]
    assert report["signature"]["document"] == good["document"]  # kept exactly as signed
    assert orch_signed.client.delete(f"/v1/plugins/{pid}").status_code == 204

    # A revoked key signs nothing any more.
    kid = good["document"]["key_id"]
    assert orch_signed.client.delete(f"/v1/trust/keys/{kid}").status_code == 200
    assert _error(_install(orch_signed, data, good))["code"] == "untrusted_key"
    readd = orch_signed.client.post(
        "/v1/trust/keys", json={"name": "again", "public_key": _pem(keys["trusted"])}
    )
    assert readd.status_code == 409


def test_signed_image_is_checked_against_its_digest(
    orch_signed: OrchestratorProcess,
    keys: dict[str, Any],
    tmp_path: Path,
    docker_client: Any,
    base_image: str,
) -> None:
    pid = "com.summit-tests.signed-image"
    tag = f"summit-tests/signed-image:{tmp_path.name[-8:].lower()}"
    folder = make_plugin(tmp_path / "p", id=pid)
    cli = [sys.executable, "-c", "from summit_sdk.cli import app; app()"]
    built = subprocess.run(
        [*cli, "build", str(folder), "--tag", tag, "--base", base_image],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    try:
        kid = signing.key_id(keys["stranger"].public_key())
        orch_signed.client.post(
            "/v1/trust/keys", json={"name": "Stranger Ltd", "public_key": _pem(keys["stranger"])}
        )
        image = docker_client.images.get(tag)
        manifest = json.loads(image.labels["io.summit.plugin"])
        good = signing.sign_document(
            signing.make_document(
                manifest, image_digest=image.id, public=keys["stranger"].public_key()
            ),
            keys["stranger"],
        )
        other = signing.sign_document(
            signing.make_document(
                manifest, image_digest="sha256:" + "0" * 64, public=keys["stranger"].public_key()
            ),
            keys["stranger"],
        )
        wrong = orch_signed.client.post("/v1/plugins", json={"image": tag, "signature": other})
        assert "not sha256:" in _error(wrong)["message"] or "is for image" in wrong.text
        r = orch_signed.client.post("/v1/plugins", json={"image": tag, "signature": good})
        assert r.status_code == 201, r.text
        enabled = orch_signed.client.post(f"/v1/plugins/{pid}/enable")
        assert enabled.status_code == 200, enabled.text
        container = docker_client.containers.get(enabled.json()["container"]["id"])
        # Run by the digest that was signed, never by a tag that could move.
        assert container.attrs["Image"] == image.id
        assert orch_signed.client.post(f"/v1/plugins/{pid}/disable").status_code == 200
        assert orch_signed.client.delete(f"/v1/plugins/{pid}").status_code == 204
        orch_signed.client.delete(f"/v1/trust/keys/{kid}")
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)
