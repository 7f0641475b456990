"""Catalog archives: a catalog carried to an air-gapped site as one signed file.

An archive is an uncompressed tar holding an OCI image layout (the image-spec's
``image-layout.md``) and two files of Summit's own::

    oci-layout              {"imageLayoutVersion": "1.0.0"}
    summit-catalog.json     the index: publishers, namespaces, plugins, versions (see below)
    summit-catalog.sig      a detached Ed25519 signature of the index
    index.json              the layout's index: one descriptor per version
    blobs/sha256/<hex>      every manifest, config and layer, byte for byte

``index.json`` names each version's manifest with ``org.opencontainers.image.ref.name`` set to
``<plugin id>:<version>``, so other tools read an image out of the layout by that name
(``oras``, ``crane``; ``skopeo`` 1.9 looks names up among OCI-typed manifests only, and a
Docker schema 2 manifest keeps its type here, as its digest depends on it). Blobs are copied
from the registry by digest, unchanged (layers are compressed already, so the tar is not), so
an image keeps its digest wherever it is imported: what was reviewed is what gets installed,
on either side of the air gap.

**The index** (``summit-catalog.json``) lists publishers with their namespaces, plugins with
their deprecation, and every version with its plugin manifest, README, categories, keywords,
links, changelog, signature, scan report, yank state, where its image came from, and its image
manifest's digest in the layout. API tokens are not exported (they belong to one site).

**The signature** (``summit-catalog.sig``) is the SDK's signature envelope
(:mod:`summit_sdk.signing`: same key format as ``summit-plugin keygen``, same canonical JSON
and Ed25519), over a document of type ``summit.catalog.signature/v1`` that names the index's
sha256 and size. The index names every manifest by digest and each manifest names its config
and layers by digest, so the signature covers every byte an import uses.

**Export** (:func:`export_catalog`) reads each selected version's image from its registry and
streams it into the tar as it arrives (a layer is never held in memory), checking each blob
against its digest; the file appears at its final name only once it is complete. A multi-arch
image (an image index or manifest list) is copied whole: the index, every manifest it names
(every platform, and attestation manifests too), and their configs and layers. An index inside
an index is refused.

**Import** (:func:`import_catalog`) refuses an archive that is not plain tar, holds anything
but the layout's own files (no other paths, no traversal, no links or devices, no duplicate
entries), is larger than ``max_bytes``, or has an index larger than ``max_index_bytes``. Then it
checks the signature against this orchestrator's trust store (unsigned, tampered, untrusted and
revoked keys are refused, 422) and every blob's sha256, all before it pushes anything or writes
a row. It pushes each new version's blobs and manifests by digest to
``<target>/<repository>`` (blobs the registry has already are not sent again) and publishes the
versions into the catalog in one transaction, with their images rewritten to
``<target>/<repository>@<the same digest>``, keeping publishers (matched by id), namespaces,
yanks and deprecations. Importing again changes nothing: a version already in the catalog with
the same digest is skipped; with another digest it is reported as a conflict, as is a version
that another publisher's namespace or plugin holds here. A yank or deprecation in the archive
reaches a version or plugin that is already here; an unyank does not (this site's operators
may have yanked it themselves). The repository is the one the image had where it was
exported (``registry.example.com/acme/weather`` imported under ``mirror.local/summit`` becomes
``mirror.local/summit/acme/weather``), pushed by digest only: no tag is written or moved.
The rows are all or nothing; blobs pushed before a failure stay in the registry (they are
content-addressed, unreferenced, and reused by the next import).

A version's plugin signature status stays ``verified`` only if this site trusts that plugin
key too; otherwise it becomes ``unverified`` (the envelope is kept as it was).

Registries are reached anonymously or with the anonymous token their challenge offers, as
:mod:`orchestrator.runtime.registry` reads them; one that wants credentials to push refuses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import logging
import os
import re
import secrets
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session, select
from summit_sdk.signing import ALGORITHM, SignatureError, canonical_json, key_id
from summit_sdk.signing import public_key_from_pem as sdk_public_key_from_pem

from orchestrator import __version__
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import (
    InvalidInput,
    NotFound,
    RuntimeFailure,
    SummitError,
    TooLarge,
)
from orchestrator.domain.images import check_image_reference, names_registry
from orchestrator.domain.manifest import Manifest
from orchestrator.domain.versions import Version, VersionError
from orchestrator.runtime.image_filesystem import ChunkReader
from orchestrator.runtime.registry import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageRef,
    RegistryImageStore,
    _hashed,  # the registry module's streaming helpers, shared rather than copied
    _NotThere,
    _unreachable,
    parse_reference,
)
from orchestrator.security.trust import SignatureRefused
from orchestrator.store import catalog as store
from orchestrator.store import trust as trust_store
from orchestrator.store.catalog_models import CatalogPlugin, CatalogVersion
from orchestrator.store.db import Engine, session_scope

__all__ = [
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "DEFAULT_MAX_INDEX_BYTES",
    "FORMAT",
    "SIGNATURE_TYPE",
    "ArchiveRefused",
    "CatalogIndex",
    "ExportResult",
    "ImportReport",
    "RegistryMirror",
    "export_catalog",
    "import_catalog",
    "load_signing_key",
    "sign_index",
    "verify_index_signature",
]

log = logging.getLogger(__name__)

FORMAT = "summit.catalog.archive/v1"
SIGNATURE_TYPE = "summit.catalog.signature/v1"

LAYOUT_FILE = "oci-layout"
LAYOUT_INDEX = "index.json"
INDEX_NAME = "summit-catalog.json"
SIGNATURE_NAME = "summit-catalog.sig"
BLOB_DIR = "blobs/sha256"
REF_NAME = "org.opencontainers.image.ref.name"

DEFAULT_MAX_ARCHIVE_BYTES = 32 * 1024**3
DEFAULT_MAX_INDEX_BYTES = 64 * 1024**2
MAX_ENTRIES = 100_000  # a tar entry per blob: far more than any catalog's layers
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_LAYOUT_FILE_BYTES = 4 * 1024
MAX_LAYOUT_INDEX_BYTES = 16 * 1024**2
MAX_PLUGIN_IDS = 1000
_CHUNK = 1024 * 1024

_HEX = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_FIXED_FILES = frozenset({LAYOUT_FILE, LAYOUT_INDEX, INDEX_NAME, SIGNATURE_NAME})
_DIRECTORIES = frozenset({"blobs", BLOB_DIR})


class ArchiveRefused(SummitError):
    """The file is not a catalog archive this orchestrator accepts (its shape, not its
    signature: see :class:`~orchestrator.security.trust.SignatureRefused`)."""

    status_code = 400
    code = "invalid_archive"


class InvalidSigningKey(InvalidInput):
    code = "invalid_signing_key"


# -- the index -----------------------------------------------------------------------------------


class IndexPublisher(BaseModel):
    id: str
    name: str
    namespaces: list[str] = Field(default_factory=list)


class IndexVersion(BaseModel):
    version: str
    manifest: dict[str, Any]
    repository: str = Field(description="The image's repository, without its registry")
    source_image: str = Field(description="The image as the exporting catalog named it")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="Its manifest's digest")
    media_type: str
    size: int = Field(ge=0)
    readme: str = ""
    categories: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    links: dict[str, str] = Field(default_factory=dict)
    changelog: str = ""
    license: str | None = None
    price: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None
    signature_status: str = "unsigned"
    scan_report: dict[str, Any] | None = None
    scan_summary: dict[str, Any] | None = None
    published_at: datetime
    published_by: str
    yanked: bool = False
    yanked_reason: str | None = None
    yanked_at: datetime | None = None


class IndexPlugin(BaseModel):
    id: str
    name: str
    publisher: str
    deprecated: bool = False
    deprecation_reason: str | None = None
    successor: str | None = None
    versions: list[IndexVersion]


class CatalogIndex(BaseModel):
    """``summit-catalog.json``: what an archive holds, in catalog terms."""

    format: Literal["summit.catalog.archive/v1"] = "summit.catalog.archive/v1"
    created_at: datetime
    summit_version: str
    include_yanked: bool
    publishers: list[IndexPublisher]
    plugins: list[IndexPlugin]


# -- signing the index ---------------------------------------------------------------------------


def load_signing_key(pem: str | bytes) -> Ed25519PrivateKey:
    """An unencrypted PEM Ed25519 private key (what ``summit-plugin keygen`` writes)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Never the parser's words: they might quote the key.
        raise InvalidSigningKey(
            "the signing key is not an unencrypted PEM private key "
            "(summit-plugin keygen writes one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidSigningKey("the signing key is not an Ed25519 key")
    return key


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_index(
    index: bytes, private: Ed25519PrivateKey, *, now: datetime | None = None
) -> dict[str, Any]:
    """The signature envelope of an index: ``{document, algorithm, signature}``."""
    document = {
        "type": SIGNATURE_TYPE,
        "index": INDEX_NAME,
        "index_sha256": hashlib.sha256(index).hexdigest(),
        "index_size": len(index),
        "key_id": key_id(private.public_key()),
        "issued_at": _timestamp(now or datetime.now(UTC)),
    }
    return {
        "document": document,
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(private.sign(canonical_json(document))).decode("ascii"),
    }


def _refused(message: str, code: str = "signature_invalid", **details: Any) -> SignatureRefused:
    return SignatureRefused(message, code=code, details=details or None)


def verify_index_signature(
    envelope: Any, index: bytes, public_key_for: Callable[[str], Ed25519PublicKey]
) -> dict[str, Any]:
    """The verified signature document of ``index``, or :class:`SignatureRefused`.

    ``public_key_for`` answers the trusted public key of a key id, or raises (untrusted,
    revoked) itself."""
    if not isinstance(envelope, dict):
        raise _refused("the archive's signature is not a signature envelope")
    document, encoded = envelope.get("document"), envelope.get("signature")
    if not isinstance(document, dict) or not isinstance(encoded, str):
        raise _refused("the archive's signature needs 'document' (object) and 'signature'")
    if envelope.get("algorithm", ALGORITHM) != ALGORITHM:
        raise _refused(f"unsupported signature algorithm {envelope.get('algorithm')!r}")
    if document.get("type") != SIGNATURE_TYPE:
        raise _refused(f"the archive's signature is not of type {SIGNATURE_TYPE}")
    kid = document.get("key_id")
    if not isinstance(kid, str):
        raise _refused("the archive's signature names no key (document.key_id)")
    public = public_key_for(kid)
    try:
        signature = base64.b64decode(encoded, validate=True)
        public.verify(signature, canonical_json(document))
    except (binascii.Error, ValueError, InvalidSignature):
        raise _refused(
            "the archive's signature does not match its document (tampered?)", key_id=kid
        ) from None
    if document.get("index_sha256") != hashlib.sha256(index).hexdigest() or document.get(
        "index_size"
    ) != len(index):
        raise _refused(f"{INDEX_NAME} is not the index that was signed (tampered?)", key_id=kid)
    return document


def _trusted_key(engine: Engine) -> Callable[[str], Ed25519PublicKey]:
    """A lookup of this orchestrator's trusted keys, refusing unknown and revoked ones."""

    def lookup(kid: str) -> Ed25519PublicKey:
        with session_scope(engine) as session:
            row = trust_store.get_trusted_key(session, key_id=kid)
            pem = row.public_key if row is not None else None
            revoked = row is not None and row.revoked_at is not None
        if pem is None:
            raise _refused(
                f"the archive is signed with key {kid}, which this orchestrator does not trust "
                "(add its public key: summit trust add, or POST /v1/trust/keys)",
                code="untrusted_key",
                key_id=kid,
            )
        if revoked:
            raise _refused(
                f"the archive is signed with key {kid}, which was revoked",
                code="untrusted_key",
                key_id=kid,
            )
        try:
            return sdk_public_key_from_pem(pem.encode(), source=f"trusted key {kid}")
        except SignatureError as exc:
            raise _refused(str(exc), key_id=kid) from None

    return lookup


def _key_is_trusted(session: Session, kid: Any) -> bool:
    if not isinstance(kid, str):
        return False
    row = trust_store.get_trusted_key(session, key_id=kid)
    return row is not None and row.revoked_at is None


# -- registries ----------------------------------------------------------------------------------


class RegistryMirror(RegistryImageStore):
    """The registry client, with what copying an image needs beyond reading it: a
    manifest's exact bytes, a blob as a stream, and pushing blobs and manifests by digest."""

    def fetch_manifest(self, ref: ImageRef, digest: str) -> tuple[bytes, str]:
        """(the manifest's bytes, its media type as the registry says it)."""
        try:
            body, media_type, actual = self._manifest(ref, digest)
        except _NotThere:
            raise RuntimeFailure(
                f"manifest {digest} of {ref.name} is missing from its registry",
                code="image_missing",
                details={"image": f"{ref.name}@{digest}"},
            ) from None
        if actual != digest:
            raise RuntimeFailure(f"registry {ref.registry} answered {digest} with {actual}")
        return body, media_type

    @contextmanager
    def blob_chunks(self, ref: ImageRef, digest: str, hasher: Any) -> Iterator[Iterator[bytes]]:
        """A blob's bytes as they arrive, each chunk added to ``hasher``."""
        try:
            with self._open_blob(ref, digest) as response:
                yield _hashed(response, hasher, ref.registry)
        except _NotThere:
            raise RuntimeFailure(
                f"blob {digest} of {ref.name} is missing from its registry",
                code="image_missing",
                details={"image": ref.name, "blob": digest},
            ) from None

    def has_blob(self, ref: ImageRef, digest: str) -> bool:
        response = self._send(ref, "HEAD", self._url(ref, "blobs", digest))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise _push_refused(ref, response, f"the check for blob {digest}")

    def push_blob(self, ref: ImageRef, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """One monolithic upload (POST, then PUT with the digest), streamed from ``chunks``."""
        started = self._send(
            ref, "POST", self._url(ref, "blobs", "uploads/"), headers={"Content-Length": "0"}
        )
        location = started.headers.get("location")
        if started.status_code != 202 or not location:
            raise _push_refused(ref, started, f"the upload of blob {digest}")
        url = started.url.join(location).copy_merge_params({"digest": digest})
        done = self._send(
            ref,
            "PUT",
            str(url),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=chunks,
            may_retry=False,
        )
        if done.status_code != 201:
            raise _push_refused(ref, done, f"the upload of blob {digest}")

    def push_manifest(self, ref: ImageRef, digest: str, media_type: str, body: bytes) -> None:
        response = self._send(
            ref,
            "PUT",
            self._url(ref, "manifests", digest),
            headers={"Content-Type": media_type},
            content=body,
        )
        if response.status_code != 201:
            raise _push_refused(ref, response, f"manifest {digest}")

    def _send(
        self,
        ref: ImageRef,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        may_retry: bool = True,
    ) -> httpx.Response:
        """One request with this repository's push token; a Bearer challenge is answered once
        (a streamed body cannot be sent twice: the upload's POST gets the token first)."""
        scope = f"repository:{ref.repository}:pull,push"
        response: httpx.Response | None = None
        for attempt in range(2):
            sent = dict(headers or {})
            token = self._tokens.get((ref.registry, scope))
            if token:
                sent["Authorization"] = f"Bearer {token}"
            try:
                response = self._client.request(method, url, headers=sent, content=content)
            except httpx.HTTPError as exc:
                raise _unreachable(ref.registry, exc) from exc
            challenge = response.headers.get("www-authenticate", "")
            if (
                response.status_code == 401
                and attempt == 0
                and may_retry
                and self._authenticate(ref, challenge, scope)
            ):
                continue
            break
        assert response is not None
        return response


def _push_refused(ref: ImageRef, response: httpx.Response, what: str) -> RuntimeFailure:
    hint = ""
    if response.status_code in (401, 403):
        hint = " (it wants credentials: the orchestrator pushes anonymously)"
    return RuntimeFailure(
        f"registry {ref.registry} refused {what} in {ref.repository}: "
        f"HTTP {response.status_code}{hint}",
        code="registry_refused",
        details={"registry": ref.registry, "body": response.text[:300]},
    )


# -- images as a graph of blobs ------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int


@dataclass
class _Image:
    """One version's image: its manifests (children first, the top one last) and the
    configs and layers they name."""

    digest: str
    media_type: str
    size: int
    manifests: list[tuple[str, str, bytes]] = field(default_factory=list)  # digest, type, body
    blobs: list[_Blob] = field(default_factory=list)


def _descriptor(entry: Any, what: str, error: type[SummitError]) -> tuple[str, int, str]:
    if not isinstance(entry, dict):
        raise error(f"{what} holds a descriptor that is not an object")
    digest, size = entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise error(f"{what} names a blob that is not sha256:<64 hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise error(f"{what} gives blob {digest} no valid size")
    return digest, size, str(entry.get("mediaType") or "")


def _image_graph(
    digest: str,
    declared_type: str,
    fetch: Callable[[str], tuple[bytes, str]],
    what: str,
    *,
    error: type[SummitError],
) -> _Image:
    """Walk an image from its manifest: ``fetch`` answers (bytes, media type or "") of a
    manifest by digest, already checked against it. An index's children are walked too."""

    def parse(body: bytes, hint: str, name: str) -> tuple[dict[str, Any], str]:
        data = jsonlimits.loads(body, what=name, max_bytes=MAX_MANIFEST_BYTES)
        if not isinstance(data, dict):
            raise error(f"{name} is not a JSON object")
        # OCI lets a manifest leave its own type out; then the descriptor or the registry
        # says it, or its shape does.
        guess = OCI_INDEX if "manifests" in data else OCI_MANIFEST
        return data, str(data.get("mediaType") or hint or guess)

    body, header_type = fetch(digest)
    top, top_type = parse(body, header_type or declared_type, f"manifest {digest} of {what}")
    image = _Image(digest=digest, media_type=top_type, size=len(body))
    seen: set[str] = set()

    def add_manifest(manifest: dict[str, Any], media_type: str, name: str) -> None:
        if media_type not in MANIFEST_TYPES and "config" not in manifest:
            raise error(f"{name} is not an image manifest (type {media_type!r})")
        descriptors = [manifest.get("config"), *(manifest.get("layers") or [])]
        for entry in descriptors:
            blob, size, _ = _descriptor(entry, name, error)
            if blob not in seen:
                seen.add(blob)
                image.blobs.append(_Blob(blob, size))

    if top_type in INDEX_TYPES:
        children = top.get("manifests")
        if not isinstance(children, list):
            raise error(f"the index {digest} of {what} lists no manifests")
        for entry in children:
            child, size, listed_type = _descriptor(entry, f"the index {digest} of {what}", error)
            child_body, child_header = fetch(child)
            if len(child_body) != size:
                raise error(f"manifest {child} of {what} is not the size its index says")
            name = f"manifest {child} of {what}"
            manifest, child_type = parse(child_body, child_header or listed_type, name)
            if child_type in INDEX_TYPES or "manifests" in manifest:
                raise error(f"{what} nests an index inside an index, which is not supported")
            add_manifest(manifest, child_type, name)
            if all(m[0] != child for m in image.manifests):
                image.manifests.append((child, child_type, child_body))
    else:
        add_manifest(top, top_type, f"manifest {digest} of {what}")
    image.manifests.append((digest, top_type, body))
    return image


# -- export ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: Path
    plugins: int
    versions: int
    blobs: int
    bytes: int
    key_id: str
    index_sha256: str


def _all_plugin_ids(session: Session) -> list[str]:
    # Every plugin, whether or not a version of it is visible (search leaves out plugins whose
    # versions are all yanked). Belongs in store/catalog.py as list_plugin_ids().
    return sorted(session.exec(select(CatalogPlugin.id)).all())


def _semver_key(text: str) -> Version:
    try:
        return Version.parse(text)
    except VersionError:
        return Version(0, 0, 0, ("0",))


def _version_entry(row: CatalogVersion, image: _Image, repository: str) -> IndexVersion:
    return IndexVersion(
        version=row.version,
        manifest=row.manifest,
        repository=repository,
        source_image=row.image,
        digest=image.digest,
        media_type=image.media_type,
        size=image.size,
        readme=row.readme,
        categories=row.categories,
        keywords=row.keywords,
        links=row.links,
        changelog=row.changelog,
        license=row.license,
        price=row.price,
        signature=row.signature,
        signature_status=row.signature_status,
        scan_report=row.scan_report,
        scan_summary=row.scan_summary,
        published_at=row.published_at,
        published_by=row.published_by,
        yanked=row.yanked,
        yanked_reason=row.yanked_reason,
        yanked_at=row.yanked_at,
    )


def _selected(
    engine: Engine, plugin_ids: Sequence[str] | None, include_yanked: bool
) -> tuple[list[IndexPublisher], list[tuple[CatalogPlugin, list[CatalogVersion]]]]:
    with session_scope(engine) as session:
        if plugin_ids and len(plugin_ids) > MAX_PLUGIN_IDS:
            raise InvalidInput(f"at most {MAX_PLUGIN_IDS} plugins are exported by id at once")
        ids = list(dict.fromkeys(plugin_ids)) if plugin_ids else _all_plugin_ids(session)
        chosen: list[tuple[CatalogPlugin, list[CatalogVersion]]] = []
        for plugin_id in ids:
            plugin = store.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
            rows = store.list_versions(session, plugin_id=plugin_id, include_yanked=include_yanked)
            if rows:
                chosen.append((plugin, sorted(rows, key=lambda v: _semver_key(v.version))))
        publishers = []
        for publisher_id in sorted({plugin.publisher for plugin, _ in chosen}):
            row = store.get_publisher(session, publisher_id=publisher_id)
            publishers.append(
                IndexPublisher(
                    id=publisher_id,
                    name=row.name if row is not None else publisher_id,
                    namespaces=store.list_namespaces(session, publisher_id=publisher_id),
                )
            )
        for plugin, rows in chosen:
            session.expunge(plugin)
            for version in rows:
                session.expunge(version)
        return publishers, chosen


def _tarinfo(name: str, size: int, mtime: int, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = mtime
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


class _LayoutWriter:
    """Writes the layout into a tar: each blob once, under its digest."""

    def __init__(self, tar: tarfile.TarFile, mtime: int) -> None:
        self.tar = tar
        self.mtime = mtime
        self.blobs: set[str] = set()
        self.blob_bytes = 0

    def add_file(self, name: str, data: bytes) -> None:
        self.tar.addfile(_tarinfo(name, len(data), self.mtime), io.BytesIO(data))

    def add_directories(self) -> None:
        for name in ("blobs", BLOB_DIR):
            self.tar.addfile(_tarinfo(name, 0, self.mtime, directory=True))

    def add_blob(self, digest: str, data: bytes) -> None:
        if digest not in self.blobs:
            self.add_file(f"{BLOB_DIR}/{digest.removeprefix('sha256:')}", data)
            self.blobs.add(digest)
            self.blob_bytes += len(data)

    def stream_blob(self, registry: RegistryMirror, ref: ImageRef, blob: _Blob) -> None:
        """Copy one blob from the registry into the tar as it arrives, then check it."""
        if blob.digest in self.blobs:
            return
        hasher = hashlib.sha256()
        info = _tarinfo(f"{BLOB_DIR}/{blob.digest.removeprefix('sha256:')}", blob.size, self.mtime)
        with registry.blob_chunks(ref, blob.digest, hasher) as chunks:
            reader = io.BufferedReader(ChunkReader(chunks), _CHUNK)
            try:
                self.tar.addfile(info, reader)
            except OSError:  # tarfile's "unexpected end of data"
                raise RuntimeFailure(
                    f"blob {blob.digest} of {ref.name} is shorter than its manifest says"
                ) from None
            if reader.read(1):
                raise RuntimeFailure(
                    f"blob {blob.digest} of {ref.name} is longer than its manifest says"
                )
        if "sha256:" + hasher.hexdigest() != blob.digest:
            raise RuntimeFailure(f"blob {blob.digest} of {ref.name} does not match its digest")
        self.blobs.add(blob.digest)
        self.blob_bytes += blob.size


def export_catalog(
    engine: Engine,
    dest: Path,
    *,
    key: Ed25519PrivateKey,
    registry: RegistryMirror,
    plugin_ids: Sequence[str] | None = None,
    include_yanked: bool = True,
    now: datetime | None = None,
) -> ExportResult:
    """Write the catalog (every plugin, or those of ``plugin_ids``) to ``dest`` as a signed
    archive. Yanked versions are included unless ``include_yanked`` is False (they stay
    yanked on the other side). A multi-arch image is copied whole (see the module's
    docstring). ``dest`` appears only when it is complete."""
    moment = now or datetime.now(UTC)
    publishers, chosen = _selected(engine, plugin_ids, include_yanked)
    images: list[tuple[ImageRef, _Image]] = []
    plugins: list[IndexPlugin] = []
    for plugin, rows in chosen:
        entries = []
        for row in rows:
            ref = parse_reference(row.image)
            if ref is None or ref.digest is None:
                raise RuntimeFailure(
                    f"{plugin.id} {row.version} names no image by digest in a registry: "
                    f"{row.image!r}",
                    code="image_not_exportable",
                )
            image = _image_graph(
                ref.digest,
                "",
                functools.partial(registry.fetch_manifest, ref),
                f"{plugin.id} {row.version}",
                error=RuntimeFailure,
            )
            images.append((ref, image))
            entries.append(_version_entry(row, image, ref.repository))
        plugins.append(
            IndexPlugin(
                id=plugin.id,
                name=plugin.name,
                publisher=plugin.publisher,
                deprecated=plugin.deprecated,
                deprecation_reason=plugin.deprecation_reason,
                successor=plugin.successor_id,
                versions=entries,
            )
        )
    index = CatalogIndex(
        created_at=moment,
        summit_version=__version__,
        include_yanked=include_yanked,
        publishers=publishers,
        plugins=plugins,
    )
    index_bytes = index.model_dump_json(indent=1).encode()
    envelope = sign_index(index_bytes, key, now=moment)
    layout_index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": version.media_type,
                "digest": version.digest,
                "size": version.size,
                "annotations": {
                    REF_NAME: f"{plugin.id}:{version.version}",
                    "io.summit.plugin.id": plugin.id,
                    "io.summit.plugin.version": version.version,
                },
            }
            for plugin in plugins
            for version in plugin.versions
        ],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    mtime = int(moment.timestamp())
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            writer = _LayoutWriter(tar, mtime)
            writer.add_file(LAYOUT_FILE, b'{"imageLayoutVersion":"1.0.0"}')
            writer.add_file(INDEX_NAME, index_bytes)
            writer.add_file(SIGNATURE_NAME, json.dumps(envelope, indent=1).encode())
            writer.add_file(LAYOUT_INDEX, json.dumps(layout_index, indent=1).encode())
            writer.add_directories()
            for _, image in images:
                for digest, _, body in image.manifests:
                    writer.add_blob(digest, body)
            for ref, image in images:
                for blob in image.blobs:
                    writer.stream_blob(registry, ref, blob)
        with partial.open("rb") as done:
            os.fsync(done.fileno())
        partial.replace(dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    result = ExportResult(
        path=dest,
        plugins=len(plugins),
        versions=sum(len(p.versions) for p in plugins),
        blobs=len(writer.blobs),
        bytes=dest.stat().st_size,
        key_id=envelope["document"]["key_id"],
        index_sha256=envelope["document"]["index_sha256"],
    )
    log.info(
        "exported %d versions of %d plugins (%d blobs, %d bytes) to %s, signed by %s",
        result.versions,
        result.plugins,
        result.blobs,
        result.bytes,
        dest,
        result.key_id,
    )
    return result


# -- reading an archive ---------------------------------------------------------------------------


def _too_large(what: str, limit: int) -> TooLarge:
    return TooLarge(
        f"{what} is over the limit of {limit} bytes",
        code="archive_too_large",
        details={"limit_bytes": limit},
    )


class _ArchiveReader:
    """The members of an archive, checked before anything is read: only the layout's own
    files, regular files and its two directories, each name once, within the size caps."""

    def __init__(self, source: Path | BinaryIO, *, max_bytes: int, max_index_bytes: int) -> None:
        self._owned: IO[bytes] | None = None
        if isinstance(source, Path):
            self._owned = source.open("rb")
            fileobj: IO[bytes] = self._owned
        else:
            fileobj = source
        try:
            self._open(fileobj, max_bytes, max_index_bytes)
        except BaseException:
            self.close()
            raise

    def _open(self, fileobj: IO[bytes], max_bytes: int, max_index_bytes: int) -> None:
        fileobj.seek(0, io.SEEK_END)
        size = fileobj.tell()
        fileobj.seek(0)
        if size > max_bytes:
            raise _too_large("the archive", max_bytes)
        magic = fileobj.read(4)
        fileobj.seek(0)
        if magic[:2] == b"\x1f\x8b" or magic == b"(\xb5/\xfd" or magic[:3] == b"BZh":
            raise ArchiveRefused(
                "the archive is compressed; import the plain tar that export wrote "
                "(decompress it first)",
                code="archive_compressed",
            )
        try:
            self.tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115 (see close)
        except tarfile.TarError as exc:
            raise ArchiveRefused(f"the file is not a tar archive: {exc}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.blobs: dict[str, tarfile.TarInfo] = {}
        total = 0
        limits = {
            LAYOUT_FILE: MAX_LAYOUT_FILE_BYTES,
            LAYOUT_INDEX: MAX_LAYOUT_INDEX_BYTES,
            INDEX_NAME: max_index_bytes,
            SIGNATURE_NAME: MAX_SIGNATURE_BYTES,
        }
        count = 0
        while True:
            try:
                member = self.tar.next()
            except tarfile.TarError as exc:
                raise ArchiveRefused(f"the archive is damaged: {exc}") from None
            if member is None:
                break
            count += 1
            if count > MAX_ENTRIES:
                raise ArchiveRefused(f"the archive has more than {MAX_ENTRIES} entries")
            name = self._check_member(member)
            if name is None:
                continue
            if name in self.members:
                raise ArchiveRefused(f"the archive holds {name!r} twice", details={"entry": name})
            total += member.size
            if total > max_bytes:
                raise _too_large("the archive's content", max_bytes)
            if name in limits and member.size > limits[name]:
                raise _too_large(f"the archive's {name}", limits[name])
            self.members[name] = member
            if name.startswith(BLOB_DIR + "/"):
                self.blobs["sha256:" + name.rsplit("/", 1)[1]] = member

    @staticmethod
    def _check_member(member: tarfile.TarInfo) -> str | None:
        """The member's name in the layout, None for its directories; refuses the rest."""
        raw = member.name
        name = raw[2:] if raw.startswith("./") else raw
        name = name.rstrip("/") if member.isdir() else name
        shown = raw[:200]
        if member.issym() or member.islnk():
            raise ArchiveRefused(
                f"the archive holds a link ({shown!r}); a catalog archive holds none",
                details={"entry": shown},
            )
        if name in ("", ".") and member.isdir():
            return None
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise ArchiveRefused(
                f"the archive holds a path outside its layout: {shown!r}", details={"entry": shown}
            )
        if member.isdir():
            if name in _DIRECTORIES:
                return None
            raise ArchiveRefused(
                f"the archive holds a directory outside the layout: {shown!r}",
                details={"entry": shown},
            )
        regular = member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None
        if not regular:
            raise ArchiveRefused(
                f"the archive holds {shown!r}, which is not a regular file",
                details={"entry": shown},
            )
        directory, _, base = name.rpartition("/")
        if name in _FIXED_FILES or (directory == BLOB_DIR and _HEX.fullmatch(base)):
            return name
        raise ArchiveRefused(
            f"the archive holds {shown!r}, which is not part of a catalog archive",
            details={"entry": shown},
        )

    def close(self) -> None:
        tar = getattr(self, "tar", None)
        if tar is not None:
            tar.close()
        if self._owned is not None:
            self._owned.close()

    def _open_member(self, member: tarfile.TarInfo) -> IO[bytes]:
        handle = self.tar.extractfile(member)
        assert handle is not None  # a regular file, checked on the way in
        return handle

    def read_file(self, name: str) -> bytes:
        member = self.members.get(name)
        if member is None and name == SIGNATURE_NAME:
            raise SignatureRefused(
                f"the archive is not signed (it has no {SIGNATURE_NAME})", code="catalog_unsigned"
            )
        if member is None:
            raise ArchiveRefused(f"the archive has no {name}: it is not a catalog archive")
        with self._open_member(member) as handle:
            return handle.read()

    def blob_size(self, digest: str) -> int:
        member = self.blobs.get(digest)
        if member is None:
            raise ArchiveRefused(
                f"the archive lacks blob {digest}",
                code="archive_incomplete",
                details={"blob": digest},
            )
        return member.size

    def read_blob(self, digest: str, limit: int) -> bytes:
        size = self.blob_size(digest)
        if size > limit:
            raise ArchiveRefused(f"blob {digest} is larger than a manifest may be")
        with self._open_member(self.blobs[digest]) as handle:
            data = handle.read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise _tampered(digest)
        return data

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; the last step refuses it if it does not match."""
        self.blob_size(digest)
        hasher = hashlib.sha256()
        with self._open_member(self.blobs[digest]) as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
                yield chunk
        if "sha256:" + hasher.hexdigest() != digest:
            raise _tampered(digest)

    def verify_blob(self, digest: str) -> None:
        for _ in self.blob_chunks(digest):
            pass


def _tampered(digest: str) -> ArchiveRefused:
    return ArchiveRefused(
        f"blob {digest} in the archive does not match its digest (damaged or tampered)",
        code="archive_tampered",
        details={"blob": digest},
    )


# -- import ---------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    key_id: str = ""
    imported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    blobs_pushed: int = 0
    blobs_present: int = 0
    bytes_pushed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.imported or self.updated)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "imported": self.imported,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "updated": self.updated,
            "blobs": {
                "pushed": self.blobs_pushed,
                "present": self.blobs_present,
                "bytes_pushed": self.bytes_pushed,
            },
        }


@dataclass(frozen=True)
class _Target:
    registry: str
    path: str  # the repository prefix inside it, "" for none

    @classmethod
    def parse(cls, prefix: str) -> _Target:
        text = prefix.strip().rstrip("/")
        if not names_registry(text + "/x"):
            raise InvalidInput(
                f"{prefix[:100]!r} names no registry: give host[:port][/path], "
                "e.g. registry.example.com/mirror",
                code="invalid_registry",
            )
        registry, _, path = text.partition("/")
        check_image_reference(f"{text}/x")
        return cls(registry, path)

    def ref(self, repository: str, digest: str) -> ImageRef:
        repo = f"{self.path}/{repository}" if self.path else repository
        name = f"{self.registry}/{repo}"
        check_image_reference(f"{name}@{digest}")
        return ImageRef(
            registry=self.registry, repository=repo, reference=digest, name=name, tag=None
        )


def _read_index(reader: _ArchiveReader, engine: Engine) -> tuple[CatalogIndex, str]:
    layout = jsonlimits.loads(reader.read_file(LAYOUT_FILE), what=LAYOUT_FILE)
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise ArchiveRefused("the archive's oci-layout is not image layout 1.0.0")
    layout_index = jsonlimits.loads(reader.read_file(LAYOUT_INDEX), what=LAYOUT_INDEX)
    if not isinstance(layout_index, dict) or not isinstance(layout_index.get("manifests"), list):
        raise ArchiveRefused("the archive's index.json is not an image index")
    envelope = jsonlimits.loads(reader.read_file(SIGNATURE_NAME), what=SIGNATURE_NAME)
    raw = reader.read_file(INDEX_NAME)
    document = verify_index_signature(envelope, raw, _trusted_key(engine))
    try:
        index = CatalogIndex.model_validate(jsonlimits.loads(raw, what=INDEX_NAME))
    except ValidationError as exc:
        raise ArchiveRefused(
            f"{INDEX_NAME} is not a catalog index of format {FORMAT}",
            details=[
                {"path": ".".join(map(str, e["loc"])), "message": e["msg"]}
                for e in exc.errors()[:20]
            ],
        ) from None
    return index, str(document["key_id"])


def _archive_image(reader: _ArchiveReader, plugin_id: str, version: IndexVersion) -> _Image:
    def fetch(digest: str) -> tuple[bytes, str]:
        return reader.read_blob(digest, MAX_MANIFEST_BYTES), ""

    image = _image_graph(
        version.digest,
        version.media_type,
        fetch,
        f"{plugin_id} {version.version}",
        error=ArchiveRefused,
    )
    if image.size != version.size:
        raise ArchiveRefused(f"the manifest of {plugin_id} {version.version} is not its size")
    for blob in image.blobs:
        if reader.blob_size(blob.digest) != blob.size:
            raise ArchiveRefused(
                f"blob {blob.digest} of {plugin_id} {version.version} is not the size its "
                "manifest says",
                code="archive_tampered",
            )
    return image


@dataclass
class _Plan:
    """What an import does with each version: publish it, skip it, or report a conflict."""

    publish: list[tuple[IndexPlugin, IndexVersion]] = field(default_factory=list)
    skip: list[tuple[IndexPlugin, IndexVersion, CatalogVersion]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)


def _plan(session: Session, index: CatalogIndex) -> _Plan:
    """Sort every version by the rules publishing holds it to (``store.publish_version``)."""
    plan = _Plan()
    for plugin in index.plugins:
        local = store.get_plugin(session, plugin_id=plugin.id)
        owner = store.namespace_owner(session, plugin_id=plugin.id)
        for version in plugin.versions:
            where = {"plugin_id": plugin.id, "version": version.version}
            existing = store.get_version(session, plugin_id=plugin.id, version=version.version)
            if existing is not None and existing.digest == version.digest:
                plan.skip.append((plugin, version, existing))
            elif existing is not None:
                plan.conflicts.append(
                    {
                        **where,
                        "code": "version_immutable",
                        "message": f"{plugin.id} {version.version} is already in this catalog "
                        "with another image",
                        "digest": version.digest,
                        "local_digest": existing.digest,
                    }
                )
            elif local is not None and local.publisher != plugin.publisher:
                plan.conflicts.append(
                    {
                        **where,
                        "code": "not_publisher",
                        "message": f"{plugin.id} is published here by {local.publisher}, "
                        f"not {plugin.publisher}",
                    }
                )
            elif owner is not None and owner != plugin.publisher:
                plan.conflicts.append(
                    {
                        **where,
                        "code": "namespace_taken",
                        "message": f"{plugin.id} is inside the namespace of publisher {owner} here",
                    }
                )
            else:
                plan.publish.append((plugin, version))
    return plan


def _push_image(
    reader: _ArchiveReader,
    registry: RegistryMirror,
    ref: ImageRef,
    image: _Image,
    report: ImportReport,
    pushed: set[tuple[str, str]],
) -> None:
    for blob in image.blobs:
        key = (ref.repository, blob.digest)
        if key in pushed:
            continue
        if registry.has_blob(ref, blob.digest):
            report.blobs_present += 1
        else:
            registry.push_blob(ref, blob.digest, blob.size, reader.blob_chunks(blob.digest))
            report.blobs_pushed += 1
            report.bytes_pushed += blob.size
        pushed.add(key)
    for digest, media_type, body in image.manifests:
        if (ref.repository, digest) not in pushed:
            registry.push_manifest(ref, digest, media_type, body)
            pushed.add((ref.repository, digest))


def _write_rows(
    session: Session,
    index: CatalogIndex,
    images: dict[tuple[str, str], str],
    actor: str,
    report: ImportReport,
) -> None:
    """Publishers, namespaces, versions, yanks and deprecations, in ``session`` (one
    transaction: the caller's)."""
    for publisher in index.publishers:
        if store.get_publisher(session, publisher_id=publisher.id) is None:
            store.add_publisher(session, publisher_id=publisher.id, name=publisher.name)
        for prefix in publisher.namespaces:
            try:
                store.claim_namespace(session, publisher_id=publisher.id, prefix=prefix)
            except SummitError as exc:  # raised before anything is written
                report.conflicts.append(
                    {
                        "namespace": prefix,
                        "publisher": publisher.id,
                        "code": exc.code,
                        "message": exc.message,
                    }
                )
    plan = _plan(session, index)
    report.conflicts.extend(plan.conflicts)
    for plugin, version in sorted(plan.publish, key=lambda p: _semver_key(p[1].version)):
        image = images.get((plugin.id, version.version))
        if image is None:  # the catalog changed while the blobs were pushed
            report.conflicts.append(
                {
                    "plugin_id": plugin.id,
                    "version": version.version,
                    "code": "changed_during_import",
                    "message": "the catalog changed during the import; import again",
                }
            )
            continue
        _publish(session, plugin, version, image, actor)
        report.imported.append(
            {
                "plugin_id": plugin.id,
                "version": version.version,
                "image": image,
                "digest": version.digest,
                "yanked": version.yanked,
            }
        )
    for plugin, version, existing in plan.skip:
        entry: dict[str, Any] = {
            "plugin_id": plugin.id,
            "version": version.version,
            "digest": version.digest,
            "image": existing.image,
        }
        report.skipped.append(entry)
        if version.yanked and not existing.yanked:
            store.yank_version(
                session,
                plugin_id=plugin.id,
                version=version.version,
                reason=version.yanked_reason or "",
            )
            report.updated.append({**entry, "change": "yanked"})
    for plugin in index.plugins:
        _deprecate(session, plugin, report)


def _publish(
    session: Session, plugin: IndexPlugin, version: IndexVersion, image: str, actor: str
) -> None:
    try:
        manifest = Manifest.model_validate(version.manifest)
    except ValidationError:
        raise ArchiveRefused(
            f"the plugin manifest of {plugin.id} {version.version} in the index is not valid"
        ) from None
    if (manifest.id, manifest.version) != (plugin.id, version.version):
        raise ArchiveRefused(
            f"the index lists {manifest.id} {manifest.version} as {plugin.id} {version.version}"
        )
    status = version.signature_status
    if status == "verified" and not _key_is_trusted(
        session, (version.signature or {}).get("key_id")
    ):
        status = "unverified"  # verified over there, by a key this site does not trust
    published = store.publish_version(
        session,
        manifest=manifest,
        image=image,
        publisher=plugin.publisher,
        published_by=version.published_by,
        readme=version.readme,
        categories=version.categories,
        keywords=version.keywords,
        links=version.links,
        changelog=version.changelog,
        signature=version.signature,
        signature_status=status,
        scan_report=version.scan_report,
        scan_summary=version.scan_summary,
        license=version.license,
        price=version.price,
    )
    row = published.version
    # A mirror shows when a version was first published, not when it crossed the air gap.
    row.published_at = version.published_at
    session.add(row)
    listed = store.get_plugin(session, plugin_id=plugin.id)
    if listed is not None and listed.latest_version == version.version:
        listed.latest_published_at = version.published_at  # the "newest" sort's key
        session.add(listed)
    if version.yanked:
        store.yank_version(
            session,
            plugin_id=plugin.id,
            version=version.version,
            reason=version.yanked_reason or "",
        )
        if version.yanked_at is not None:
            row.yanked_at = version.yanked_at
            session.add(row)
    session.flush()
    log.info("imported %s %s as %s (by %s)", plugin.id, version.version, image, actor)


def _deprecate(session: Session, plugin: IndexPlugin, report: ImportReport) -> None:
    local = store.get_plugin(session, plugin_id=plugin.id)
    if not plugin.deprecated or local is None or local.deprecated:
        return
    if local.publisher != plugin.publisher:
        return  # another publisher's plugin of the same id: not the archive's to deprecate
    successor = plugin.successor
    if successor is not None and store.get_plugin(session, plugin_id=successor) is None:
        successor = None  # not carried over: still deprecated, with no successor named
    store.deprecate_plugin(
        session,
        plugin_id=plugin.id,
        reason=plugin.deprecation_reason or "",
        successor_id=successor,
    )
    report.updated.append({"plugin_id": plugin.id, "change": "deprecated"})


def import_catalog(
    engine: Engine,
    archive: Path | BinaryIO,
    *,
    registry: RegistryMirror,
    target: str,
    actor: str = "catalog import",
    max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES,
) -> ImportReport:
    """Import a catalog archive (a path, or a seekable file) into this orchestrator's
    catalog, pushing its images under ``target`` (``host[:port][/path]``). See the module's
    docstring for what is checked, what is kept, and what an import twice does."""
    destination = _Target.parse(target)
    reader = _ArchiveReader(archive, max_bytes=max_bytes, max_index_bytes=max_index_bytes)
    try:
        index, kid = _read_index(reader, engine)
        report = ImportReport(key_id=kid)
        graphs: dict[tuple[str, str], _Image] = {}
        for plugin in index.plugins:
            for version in plugin.versions:
                graphs[(plugin.id, version.version)] = _archive_image(reader, plugin.id, version)
        # Every blob is checked before anything leaves the archive: a damaged or tampered
        # archive changes nothing, in the registry or in the catalog.
        for digest in sorted({b.digest for g in graphs.values() for b in g.blobs}):
            reader.verify_blob(digest)
        with session_scope(engine) as session:
            plan = _plan(session, index)
        images: dict[tuple[str, str], str] = {}
        pushed: set[tuple[str, str]] = set()
        for plugin, version in plan.publish:
            ref = destination.ref(version.repository, version.digest)
            _push_image(reader, registry, ref, graphs[(plugin.id, version.version)], report, pushed)
            images[(plugin.id, version.version)] = f"{ref.name}@{version.digest}"
        with session_scope(engine) as session:
            _write_rows(session, index, images, actor, report)
    finally:
        reader.close()
    log.info(
        "catalog import signed by %s: %d imported, %d skipped, %d conflicts",
        report.key_id,
        len(report.imported),
        len(report.skipped),
        len(report.conflicts),
    )
    return report
