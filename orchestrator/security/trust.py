"""Publisher keys the operator trusts, and the install-time check of a plugin's signature.

A signature is the SDK's ``summit.plugin.signature/v1`` envelope (``summit-plugin sign``):
Ed25519 over canonical JSON of the plugin id and version, the image digest (images) or the
sha256 of every file (source bundles), the requested permissions and resources, the key id,
and the issue and expiry times. It is kept exactly as signed with the installed version.
The format and every check of a signature live in :mod:`summit_sdk.signing`, shared with the
author's ``summit-plugin sign``; this module keeps the keys and turns a refusal into a 422.

With ``SUMMIT_REQUIRE_SIGNED=true`` an unsigned plugin is refused; a signature that is given is
always checked, whatever that setting says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from summit_sdk.signing import (
    SignatureError,
    coverage_problems,
    key_id,
    public_key_from_pem,
    signed_key_id,
    verify_signature,
)

from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.store import trust as store
from orchestrator.store.db import Engine, session_scope

__all__ = ["SignatureRefused", "TrustStore", "TrustedKeyView"]


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
        return public_key_from_pem(pem.encode(), source="public_key")
    except SignatureError as exc:
        raise InvalidInput(str(exc)) from None


class TrustStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, *, name: str, public_key: str) -> TrustedKeyView:
        key = _load_public(public_key)
        kid = key_id(key)
        with session_scope(self.engine) as session:
            row = store.get_trusted_key(session, key_id=kid)
            if row is not None and row.revoked_at is None:
                raise Conflict(f"key {kid} is already trusted", code="key_exists")
            if row is not None:
                raise Conflict(
                    f"key {kid} was revoked; a revoked key is not trusted again",
                    code="key_revoked",
                )
            row = store.add_trusted_key(
                session, key_id=kid, name=name, public_key=public_key.strip()
            )
            return TrustedKeyView.model_validate(row, from_attributes=True)

    def list(self) -> list[TrustedKeyView]:
        with session_scope(self.engine) as session:
            return [
                TrustedKeyView.model_validate(r, from_attributes=True)
                for r in store.list_trusted_keys(session)
            ]

    def revoke(self, kid: str) -> TrustedKeyView:
        with session_scope(self.engine) as session:
            row = store.revoke_trusted_key(session, key_id=kid)
            if row is None:
                raise NotFound(f"no trusted key {kid}")
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
        try:
            kid = signed_key_id(envelope)
        except SignatureError as exc:
            raise SignatureRefused(str(exc)) from None
        with session_scope(self.engine) as session:
            row = store.get_trusted_key(session, key_id=kid)
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
        # As written: a resource left to its default is not part of the signature either.
        written = manifest.model_dump(mode="json", exclude_unset=True)
        problems = coverage_problems(doc, written, bundle_root=bundle_root)
        if problems:
            raise SignatureRefused(
                "the signature does not cover this plugin: " + "; ".join(problems),
                details={"problems": problems, "key_id": kid},
            )
        return doc
