"""Ed25519 keys and detached signatures of plugin images (``summit.plugin.signature/v1``).

The signed document is the canonical JSON (sorted keys, no spaces, UTF-8) of::

    {type, plugin_id, version, image_digest, permissions, resources, key_id,
     issued_at, expires_at}

and a signature file is ``{"document": {...}, "algorithm": "ed25519", "signature": base64}``.
The key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
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

__all__ = [
    "ALGORITHM",
    "SIGNATURE_TYPE",
    "SignatureError",
    "bundle_files",
    "canonical_json",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_document",
    "sign_document",
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


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


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


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


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
        "plugin_id": manifest.get("id"),
        "version": manifest.get("version"),
        "image_digest": image_digest,
        "permissions": sorted(str(p) for p in manifest.get("permissions") or []),
        "resources": dict(manifest.get("resources") or {}),
        "key_id": key_id(public),
        "issued_at": _timestamp(issued),
        "expires_at": _timestamp(issued + timedelta(days=valid_days)),
    }
    if files is not None:
        document["files"] = dict(sorted(files.items()))
    return document


def bundle_files(folder: Path) -> dict[str, str]:
    """sha256 of every file a bundle of ``folder`` carries (the build's own file list)."""
    from summit_sdk.imagebuild import source_files

    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in source_files(folder)
    }


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
