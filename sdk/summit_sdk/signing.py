"""Detached Ed25519 signatures of plugins (``summit.plugin.signature/v1``).

``summit-plugin keygen / sign / verify-signature`` and the orchestrator's trust store
(``orchestrator/security/trust.py``) both use this module, so what an author signs is exactly
what an install checks. It needs ``cryptography`` (the SDK's ``signing`` extra, part of
``cli``), never Typer or the orchestrator.

The signed document is the canonical JSON (sorted keys, no spaces, UTF-8) of::

    {type, plugin_id, version, image_digest, permissions, resources, key_id,
     issued_at, expires_at, files}

where an image is signed by its ``image_digest`` and a source bundle by ``files``, the sha256
of every file it carries by posix path. A signature file is
``{"document": {...}, "algorithm": "ed25519", "signature": base64}``. The key id is the first
16 hex digits of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from summit_sdk.imagebuild import source_files

__all__ = [
    "ALGORITHM",
    "SIGNATURE_TYPE",
    "SignatureError",
    "bundle_files",
    "canonical_json",
    "coverage_problems",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_document",
    "public_key_from_pem",
    "sign_document",
    "signed_key_id",
    "unpacked_files",
    "verify_signature",
]

SIGNATURE_TYPE = "summit.plugin.signature/v1"
ALGORITHM = "ed25519"
CLOCK_SKEW = timedelta(minutes=5)
PRIVATE_NAME = "summit-signing.key"
PUBLIC_NAME = "summit-signing.pub"


class SignatureError(Exception):
    """A signature that does not verify: tampered, wrong key, expired or malformed."""


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN/Infinity: the bytes that get signed."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# --------------------------------------------------------------------------- keys


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _from_pem(data: bytes, source: str, *, private: bool) -> object:
    try:
        if private:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        what = "an unencrypted PEM private key" if private else "a PEM public key"
        raise SignatureError(f"{source} is not {what}: {exc}") from None


def public_key_from_pem(data: bytes, *, source: str = "the key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text; ``source`` names it in the error."""
    key = _from_pem(data, source, private=False)
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{source} is not an Ed25519 public key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    return public_key_from_pem(path.read_bytes(), source=str(path))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = _from_pem(path.read_bytes(), str(path), private=True)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def generate_keypair(out_dir: Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write ``summit-signing.key`` (PKCS#8 PEM, mode 0600) and ``summit-signing.pub``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise FileExistsError(f"a key pair already exists in {out_dir}")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(private.public_key())


# --------------------------------------------------------------------------- documents


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise SignatureError(f"document.{field} must be a timestamp string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError(f"document.{field} is not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise SignatureError(f"document.{field} has no time zone")
    return moment


def _manifest_facts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a signature says of a manifest: id, version, permissions and the resources as
    written (a default left out is not signed)."""
    return {
        "plugin_id": manifest.get("id"),
        "version": manifest.get("version"),
        "permissions": sorted(str(p) for p in manifest.get("permissions") or []),
        "resources": dict(manifest.get("resources") or {}),
    }


def make_document(
    manifest: Mapping[str, Any],
    *,
    image_digest: str | None,
    public: Ed25519PublicKey,
    valid_days: float = 365,
    now: datetime | None = None,
    files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The document to sign: an image (``image_digest``) or a source bundle (``files``,
    path -> sha256 of every file; see :func:`bundle_files`)."""
    if valid_days <= 0:
        raise ValueError("valid_days must be positive")
    if (image_digest is None) == (files is None):
        raise ValueError("sign either an image digest or the files of a bundle")
    issued = now or datetime.now(UTC)
    document = {
        "type": SIGNATURE_TYPE,
        **_manifest_facts(manifest),
        "image_digest": image_digest,
        "key_id": key_id(public),
        "issued_at": _timestamp(issued),
        "expires_at": _timestamp(issued + timedelta(days=valid_days)),
    }
    if files is not None:
        document["files"] = dict(sorted(files.items()))
    return document


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_files(folder: Path) -> dict[str, str]:
    """sha256 of every file a bundle of ``folder`` carries (the build's own file list)."""
    return {path.relative_to(folder).as_posix(): _sha256_of(path) for path in source_files(folder)}


def unpacked_files(root: Path) -> tuple[dict[str, str], list[str]]:
    """(sha256 of every regular file, the links found) in an unpacked bundle, by posix path:
    what an install holds against a signature's ``files``."""
    files: dict[str, str] = {}
    links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append(rel)
            elif name in filenames and path.is_file():
                files[rel] = _sha256_of(path)
    return files, sorted(links)


def sign_document(document: Mapping[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """The signature file content for ``document``."""
    if document.get("key_id") != key_id(private.public_key()):
        raise SignatureError("document.key_id does not belong to the signing key")
    signature = private.sign(canonical_json(dict(document)))
    return {
        "document": dict(document),
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


# --------------------------------------------------------------------------- checking


def signed_key_id(envelope: Any) -> str:
    """The key a signature file says it was made with (to look that key up), unverified."""
    document = envelope.get("document") if isinstance(envelope, dict) else None
    kid = document.get("key_id") if isinstance(document, dict) else None
    if not isinstance(kid, str):
        raise SignatureError("the signature names no key (document.key_id)")
    return kid


def verify_signature(
    envelope: Any,
    public: Ed25519PublicKey,
    *,
    now: datetime | None = None,
    image_digest: str | None = None,
) -> dict[str, Any]:
    """Check a signature file; returns its document or raises :class:`SignatureError`."""
    if not isinstance(envelope, dict):
        raise SignatureError("a signature file must be a JSON object")
    document, encoded = envelope.get("document"), envelope.get("signature")
    if not isinstance(document, dict) or not isinstance(encoded, str):
        raise SignatureError("a signature file needs 'document' (object) and 'signature' (string)")
    if envelope.get("algorithm", ALGORITHM) != ALGORITHM:
        raise SignatureError(f"unsupported algorithm {envelope.get('algorithm')!r}")
    if document.get("type") != SIGNATURE_TYPE:
        raise SignatureError(f"document.type must be {SIGNATURE_TYPE!r}")
    if document.get("key_id") != key_id(public):
        raise SignatureError(
            f"signed with key {document.get('key_id')!r}, not with this public key "
            f"({key_id(public)})"
        )
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not valid base64") from None
    try:
        public.verify(signature, canonical_json(document))
    except InvalidSignature:
        raise SignatureError("the signature does not match the document (tampered?)") from None
    moment = now or datetime.now(UTC)
    issued = _parse_time(document.get("issued_at"), "issued_at")
    expires = _parse_time(document.get("expires_at"), "expires_at")
    if issued - CLOCK_SKEW > moment:
        raise SignatureError(f"the signature is issued in the future ({document['issued_at']})")
    if expires <= moment:
        raise SignatureError(f"the signature expired at {document['expires_at']}")
    if image_digest is not None and document.get("image_digest") != image_digest:
        raise SignatureError(
            f"the signature is for image {document.get('image_digest')}, not {image_digest}"
        )
    return document


def coverage_problems(
    document: Mapping[str, Any], manifest: Mapping[str, Any], *, bundle_root: Path | None = None
) -> list[str]:
    """What a verified ``document`` does not cover of the plugin being installed: its id and
    version, permissions and resources as written in ``manifest``, and with ``bundle_root``
    (the unpacked source bundle) every file in it, unchanged, and no links. Empty: covered."""
    facts = _manifest_facts(manifest)
    problems = []
    if (document.get("plugin_id"), document.get("version")) != (
        facts["plugin_id"],
        facts["version"],
    ):
        problems.append(
            f"signed for {document.get('plugin_id')} {document.get('version')}, "
            f"not {facts['plugin_id']} {facts['version']}"
        )
    if sorted(document.get("permissions") or []) != facts["permissions"]:
        problems.append("the permissions differ from the signed ones")
    if (document.get("resources") or {}) != facts["resources"]:
        problems.append("the resources differ from the signed ones")
    if bundle_root is not None:
        problems += _file_problems(document.get("files"), bundle_root)
    return problems


def _file_problems(signed: Any, bundle_root: Path) -> list[str]:
    if not isinstance(signed, dict):
        return ["the signature covers an image, not a source bundle"]
    problems = []
    files, links = unpacked_files(bundle_root)
    if links:
        problems.append(f"a signed bundle may not hold links: {', '.join(links)}")
    changed = sorted(p for p in set(files) & set(signed) if files[p] != signed[p])
    for label, names in (
        ("unlisted", sorted(set(files) - set(signed))),
        ("missing", sorted(set(signed) - set(files))),
        ("changed", changed),
    ):
        if names:
            problems.append(f"{label} files: {', '.join(names[:10])}")
    return problems
