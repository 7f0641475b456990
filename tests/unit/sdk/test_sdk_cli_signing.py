"""Detached Ed25519 signatures: canonical JSON, sign, verify, what a signature must cover, and
what must be refused (:mod:`summit_sdk.signing`, used by ``summit-plugin`` and the trust store)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from summit_sdk.cli import app
from summit_sdk.signing import (
    SIGNATURE_TYPE,
    SignatureError,
    bundle_files,
    canonical_json,
    coverage_problems,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    make_document,
    public_key_from_pem,
    sign_document,
    signed_key_id,
    unpacked_files,
    verify_signature,
)
from typer.testing import CliRunner

MANIFEST = {
    "id": "com.example.demo",
    "version": "1.2.3",
    "permissions": ["write:data", "read:data"],
    "resources": {"memory_mb": 128, "cpu_percent": 50},
}
DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _signed(key: Ed25519PrivateKey, **kw: Any) -> dict[str, Any]:
    doc = make_document(MANIFEST, image_digest=DIGEST, public=key.public_key(), now=NOW, **kw)
    return sign_document(doc, key)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]}) == (
        '{"a":[1,{"c":"é","d":null}],"b":1}'.encode()
    )
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_document_fields() -> None:
    key = Ed25519PrivateKey.generate()
    doc = _signed(key)["document"]
    assert doc == {
        "type": SIGNATURE_TYPE,
        "plugin_id": "com.example.demo",
        "version": "1.2.3",
        "image_digest": DIGEST,
        "permissions": ["read:data", "write:data"],
        "resources": {"memory_mb": 128, "cpu_percent": 50},
        "key_id": key_id(key.public_key()),
        "issued_at": "2026-01-01T12:00:00Z",
        "expires_at": "2027-01-01T12:00:00Z",
    }


def test_sign_then_verify_and_the_signature_covers_canonical_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = _signed(key)
    assert (
        verify_signature(envelope, key.public_key(), now=NOW + timedelta(days=1))
        == (envelope["document"])
    )
    key.public_key().verify(
        base64.b64decode(envelope["signature"]), canonical_json(envelope["document"])
    )
    # a JSON round trip (other key order, indentation) keeps it valid
    again = json.loads(json.dumps(envelope, indent=4))
    verify_signature(again, key.public_key(), now=NOW, image_digest=DIGEST)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_digest", "sha256:" + "cd" * 32),
        ("permissions", ["read:data", "write:data", "secrets:read"]),
        ("version", "1.2.4"),
        ("expires_at", "2099-01-01T00:00:00Z"),
        ("resources", {"memory_mb": 4096, "cpu_percent": 50}),
    ],
)
def test_tampering_is_detected(field: str, value: Any) -> None:
    key = Ed25519PrivateKey.generate()
    envelope = _signed(key)
    envelope["document"][field] = value
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(envelope, key.public_key(), now=NOW)


def test_a_changed_signature_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = _signed(key)
    raw = bytearray(base64.b64decode(envelope["signature"]))
    raw[0] ^= 1
    envelope["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(envelope, key.public_key(), now=NOW)
    envelope["signature"] = "not base64!"
    with pytest.raises(SignatureError, match="base64"):
        verify_signature(envelope, key.public_key(), now=NOW)


def test_wrong_key_is_refused() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    envelope = _signed(key)
    with pytest.raises(SignatureError, match="not with this public key"):
        verify_signature(envelope, other.public_key(), now=NOW)
    # even when the attacker rewrites key_id, the signature itself fails
    envelope["document"]["key_id"] = key_id(other.public_key())
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(envelope, other.public_key(), now=NOW)
    with pytest.raises(SignatureError, match="key_id"):
        sign_document(_signed(key)["document"], other)


def test_expired_and_future_signatures_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = _signed(key, valid_days=1)
    verify_signature(envelope, key.public_key(), now=NOW + timedelta(hours=23))
    with pytest.raises(SignatureError, match="expired"):
        verify_signature(envelope, key.public_key(), now=NOW + timedelta(days=1, seconds=1))
    with pytest.raises(SignatureError, match="future"):
        verify_signature(envelope, key.public_key(), now=NOW - timedelta(hours=1))


def test_wrong_image_and_malformed_files_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = _signed(key)
    with pytest.raises(SignatureError, match="is for image"):
        verify_signature(envelope, key.public_key(), now=NOW, image_digest="sha256:00")
    bad_files: list[Any] = [[], {"document": {}}, {**envelope, "algorithm": "rsa"}]
    for bad in bad_files:
        with pytest.raises(SignatureError):
            verify_signature(bad, key.public_key(), now=NOW)
    wrong_type = json.loads(json.dumps(envelope))
    wrong_type["document"]["type"] = "other"
    with pytest.raises(SignatureError, match="type"):
        verify_signature(wrong_type, key.public_key(), now=NOW)


def test_keygen_writes_pem_files_with_key_id(tmp_path: Path) -> None:
    private_path, public_path, kid = generate_keypair(tmp_path / "keys")
    assert private_path.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in private_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public_path.read_bytes()
    public = load_public_key(public_path)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert kid == hashlib.sha256(raw).hexdigest()[:16] == key_id(public)
    assert key_id(load_private_key(private_path).public_key()) == kid
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "keys")
    with pytest.raises(SignatureError):
        load_public_key(private_path)


def test_cli_keygen_and_verify_signature(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 2
    key = load_private_key(tmp_path / "k" / "summit-signing.key")
    doc = make_document(MANIFEST, image_digest=DIGEST, public=key.public_key())
    sig = tmp_path / "sig.json"
    sig.write_text(json.dumps(sign_document(doc, key)))
    pub = str(tmp_path / "k" / "summit-signing.pub")
    ok = runner.invoke(app, ["verify-signature", str(sig), "--pub", pub])
    assert ok.exit_code == 0, ok.output
    assert "valid signature of com.example.demo 1.2.3" in ok.output

    tampered = json.loads(sig.read_text())
    tampered["document"]["permissions"].append("secrets:read")
    sig.write_text(json.dumps(tampered))
    bad = runner.invoke(app, ["verify-signature", str(sig), "--pub", pub])
    assert bad.exit_code == 1
    assert "signature invalid" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    missing = runner.invoke(app, ["verify-signature", str(tmp_path / "nope.json"), "--pub", pub])
    assert missing.exit_code == 2


@pytest.mark.parametrize(
    ("modules", "banned"),
    [
        (
            "summit_sdk.signing, summit_sdk.manifest, summit_sdk.sandbox, summit_sdk.labels",
            ("typer", "rich", "docker", "summit_sdk.cli"),
        ),
        ("orchestrator.security.trust", ("typer", "summit_sdk.cli")),
    ],
)
def test_verifying_a_signature_needs_neither_typer_nor_the_cli(
    modules: str, banned: tuple[str, ...]
) -> None:
    """The orchestrator verifies signatures and manifests with the SDK; that must not drag the
    author's command line (Typer, Rich, docker-py) in."""
    code = (
        f"import sys, {modules}\n"
        f"banned = {banned!r}\n"
        "print(sorted(m for m in sys.modules"
        " if any(m == b or m.startswith(b + '.') for b in banned)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_signed_key_is_named_before_any_key_is_looked_up() -> None:
    key = Ed25519PrivateKey.generate()
    assert signed_key_id(_signed(key)) == key_id(key.public_key())
    for bad in (None, [], {"document": []}, {"document": {"key_id": 7}}):
        with pytest.raises(SignatureError, match="names no key"):
            signed_key_id(bad)


def test_public_keys_are_read_from_pem_text_and_anything_else_is_named_in_the_error() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(public_key_from_pem(pem)) == key_id(key.public_key())
    with pytest.raises(SignatureError, match=r"^public_key is not a PEM public key"):
        public_key_from_pem(b"nope", source="public_key")


def test_a_signature_covers_the_manifest_as_written() -> None:
    doc = _signed(Ed25519PrivateKey.generate())["document"]
    assert coverage_problems(doc, MANIFEST) == []
    # Permissions in another order are the same permissions.
    assert coverage_problems(doc, {**MANIFEST, "permissions": ["read:data", "write:data"]}) == []
    other = {
        **MANIFEST,
        "version": "1.2.4",
        "permissions": ["read:data"],
        "resources": {"memory_mb": 128},  # cpu_percent left to its default: not what was signed
    }
    assert coverage_problems(doc, other) == [
        "signed for com.example.demo 1.2.3, not com.example.demo 1.2.4",
        "the permissions differ from the signed ones",
        "the resources differ from the signed ones",
    ]


def test_a_bundle_signature_covers_every_file_and_no_link(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "plugin.yaml").write_text("id: x\n")
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    key = Ed25519PrivateKey.generate()
    files = bundle_files(src)
    assert files == {
        "pkg/mod.py": hashlib.sha256(b"X = 1\n").hexdigest(),
        "plugin.yaml": hashlib.sha256(b"id: x\n").hexdigest(),
    }
    doc = make_document(MANIFEST, image_digest=None, files=files, public=key.public_key())
    assert unpacked_files(src) == (files, [])
    assert coverage_problems(doc, MANIFEST, bundle_root=src) == []

    (src / "pkg" / "mod.py").write_text("X = 2\n")
    (src / "plugin.yaml").unlink()
    (src / "extra.py").write_text("")
    (src / "link").symlink_to("/etc/passwd")
    assert coverage_problems(doc, MANIFEST, bundle_root=src) == [
        "a signed bundle may not hold links: link",
        "unlisted files: extra.py",
        "missing files: plugin.yaml",
        "changed files: pkg/mod.py",
    ]
    image_doc = _signed(key)["document"]
    assert coverage_problems(image_doc, MANIFEST, bundle_root=src) == [
        "the signature covers an image, not a source bundle"
    ]
