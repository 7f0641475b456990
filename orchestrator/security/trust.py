"""Publisher keys the operator trusts, and the install-time check of a plugin's signature.

A signature is the SDK's ``summit.plugin.signature/v1`` envelope (``summit-plugin sign``):
Ed25519 over canonical JSON of the plugin id and version, the image digest (images) or the
sha256 of every file (source bundles), the requested permissions and resources, the key id,
and the issue and expiry times. It is kept exactly as signed with the installed version.

With ``SUMMIT_REQUIRE_SIGNED=true`` an unsigned plugin is refused; a signature that is given is
always checked, whatever that setting says.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from summit_sdk.cli.signing import SignatureError, key_id, verify_signature

from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from orchestrator.store.models import TrustedKey, utcnow

__all__ = ["SignatureRefused", "TrustStore", "TrustedKeyView", "bundle_file_digests"]


class SignatureRefused(SummitError):
    status_code = 422
    code = "signature_invalid"


class TrustedKeyView(BaseModel):
    key_id: str
    name: str
    public_key: str
    added_at: datetime
    revoked_at: datetime | None = None


def _load_public(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise InvalidInput("public_key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("public_key must be an Ed25519 key")
    return key


def bundle_file_digests(root: Path) -> tuple[dict[str, str], list[str]]:
    """(sha256 of every regular file, the links found) in an unpacked bundle, by posix path."""
    files: dict[str, str] = {}
    links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append(rel)
            elif name in filenames and path.is_file():
                files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files, sorted(links)


class TrustStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, *, name: str, public_key: str) -> TrustedKeyView:
        key = _load_public(public_key)
        kid = key_id(key)
        with session_scope(self.engine) as session:
            row = crud.get_trusted_key(session, key_id=kid)
            if row is not None and row.revoked_at is None:
                raise Conflict(f"key {kid} is already trusted", code="key_exists")
            if row is not None:
                raise Conflict(
                    f"key {kid} was revoked; a revoked key is not trusted again",
                    code="key_revoked",
                )
            row = TrustedKey(key_id=kid, name=name, public_key=public_key.strip())
            session.add(row)
            return TrustedKeyView.model_validate(row, from_attributes=True)

    def list(self) -> list[TrustedKeyView]:
        with session_scope(self.engine) as session:
            return [
                TrustedKeyView.model_validate(r, from_attributes=True)
                for r in crud.list_trusted_keys(session)
            ]

    def revoke(self, kid: str) -> TrustedKeyView:
        with session_scope(self.engine) as session:
            row = crud.get_trusted_key(session, key_id=kid)
            if row is None:
                raise NotFound(f"no trusted key {kid}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(row)
            return TrustedKeyView.model_validate(row, from_attributes=True)

    def verify(
        self,
        envelope: Any,
        manifest: Manifest,
        *,
        image_digest: str | None = None,
        bundle_root: Path | None = None,
    ) -> dict[str, Any]:
        """The verified document, or :class:`SignatureRefused` saying why."""
        document = envelope.get("document") if isinstance(envelope, dict) else None
        kid = document.get("key_id") if isinstance(document, dict) else None
        if not isinstance(kid, str):
            raise SignatureRefused("the signature names no key (document.key_id)")
        with session_scope(self.engine) as session:
            row = crud.get_trusted_key(session, key_id=kid)
            pem = row.public_key if row is not None else None
            revoked = row is not None and row.revoked_at is not None
        if pem is None:
            raise SignatureRefused(f"key {kid} is not in the trust store", code="untrusted_key")
        if revoked:
            raise SignatureRefused(f"key {kid} was revoked", code="untrusted_key")
        try:
            doc = verify_signature(
                envelope, _load_public(pem), now=datetime.now(UTC), image_digest=image_digest
            )
        except SignatureError as exc:
            raise SignatureRefused(str(exc)) from None
        problems = []
        if doc.get("plugin_id") != manifest.id or doc.get("version") != manifest.version:
            problems.append(
                f"signed for {doc.get('plugin_id')} {doc.get('version')}, "
                f"not {manifest.id} {manifest.version}"
            )
        if sorted(doc.get("permissions") or []) != sorted(p.value for p in manifest.permissions):
            problems.append("the permissions differ from the signed ones")
        signed_resources = doc.get("resources") or {}
        declared = manifest.resources.model_dump(exclude_unset=True)
        if signed_resources != declared:
            problems.append("the resources differ from the signed ones")
        if bundle_root is not None:
            signed_files = doc.get("files")
            if not isinstance(signed_files, dict):
                problems.append("the signature covers an image, not a source bundle")
            else:
                files, links = bundle_file_digests(bundle_root)
                if links:
                    problems.append(f"a signed bundle may not hold links: {', '.join(links)}")
                unlisted = sorted(set(files) - set(signed_files))
                missing = sorted(set(signed_files) - set(files))
                changed = sorted(
                    p for p in set(files) & set(signed_files) if files[p] != signed_files[p]
                )
                for label, names in (
                    ("unlisted", unlisted),
                    ("missing", missing),
                    ("changed", changed),
                ):
                    if names:
                        problems.append(f"{label} files: {', '.join(names[:10])}")
        if problems:
            raise SignatureRefused(
                "the signature does not cover this plugin: " + "; ".join(problems),
                details={"problems": problems, "key_id": kid},
            )
        return doc
