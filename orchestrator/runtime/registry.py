"""``ImageStore`` for Kubernetes: plugin images are read from their OCI registry, never built.

On Kubernetes the orchestrator has no container engine of its own: the kubelet pulls images.
What the install pipeline needs from an image (its plugin manifest label and the digest that
pins it) is in the image's manifest and config blob, read here over the distribution API v2
with httpx. This is hand-written because no maintained, synchronous Python registry client
with a small dependency set exists (the options either shell out to a tool or pull in an
async stack); it stays small: two GETs per image, an index resolved to this platform.

* Plain HTTP for the registries named in ``insecure_registries``, HTTPS otherwise.
* Anonymous access; a ``WWW-Authenticate: Bearer`` challenge is answered with an anonymous
  token from the realm it names (Docker Hub, GHCR and most registries serve public images so).
  Private images need credentials the orchestrator does not hold; the kubelet pulls them with
  ``imagePullSecrets``.
* Everything the registry sends is checked against its digest and bounded in size.

An image's ``ImageInfo.id`` is its pinned reference, ``name@sha256:<manifest digest>``: the
one string that both names the image uniquely and can be run by a pod.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from orchestrator.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
)
from orchestrator.domain.images import names_registry
from orchestrator.runtime.base import BuildProgress, ImageInfo
from orchestrator.runtime.image_filesystem import (
    ChunkReader,
    FilesystemWriter,
    ImageFilesystem,
    ImageUnreadable,
    PathSelector,
)

log = logging.getLogger(__name__)

__all__ = ["ImageRef", "RegistryImageStore", "parse_reference"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

DOCKER_HUB = "registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the limit registries themselves apply
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024

# Layer types the scan reads (``extract_filesystem``), by how they are compressed. zstd
# layers would need a dependency the standard library does not have (before Python 3.14).
_LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
}
_LAYER_CHUNK = 1024 * 1024

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

SOURCE_UNSUPPORTED = (
    "plugins are installed by image reference on Kubernetes: build and push the image with "
    "`summit-plugin publish`, then install it by reference"
)


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port] as the API is reached
    repository: str  # path inside the registry
    reference: str  # tag or sha256:digest
    name: str  # the name as written (without tag or digest)
    tag: str | None

    @property
    def digest(self) -> str | None:
        return self.reference if _DIGEST.fullmatch(self.reference) else None


def parse_reference(ref: str) -> ImageRef | None:
    """``[registry/]path[:tag][@sha256:digest]``; None for what names no pullable image (a bare
    image id, a malformed name)."""
    if ref.startswith("sha256:") or not ref or ref != ref.strip():
        return None
    rest, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        return None
    last = rest.rsplit("/", 1)[-1]
    tag: str | None = None
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
    if names_registry(rest):
        registry, _, repository = rest.partition("/")
        if registry in ("docker.io", "index.docker.io"):
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, rest
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or repository != repository.lower():
        return None
    return ImageRef(
        registry=registry,
        repository=repository,
        reference=digest or tag or "latest",
        name=rest,
        tag=tag,
    )


def _host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return "linux", arch


class _NotThere(Exception):
    """The registry says the manifest or blob does not exist (404, or 401 after a token)."""


class RegistryImageStore:
    def __init__(
        self,
        *,
        insecure_registries: Iterable[str] = (),
        timeout_s: float = 30.0,
        platform: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.insecure = frozenset(insecure_registries)
        self.platform = platform or _host_platform()
        self._client = httpx.Client(
            timeout=timeout_s, transport=transport, follow_redirects=False, trust_env=False
        )
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        """Each reference names its own registry; there is no one backend to reach."""

    # -- reading -----------------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        resolved = self._resolve(ref)
        if resolved is None:
            return None
        parsed, manifest, digest = resolved
        config_digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(config_digest, str) or not _DIGEST.fullmatch(config_digest):
            raise RuntimeFailure(f"the manifest of {ref} names no sha256 config blob")
        try:
            config = _json_object(self._blob(parsed, config_digest), f"config of {ref}")
        except _NotThere:
            raise RuntimeFailure(f"the config blob of {ref} is missing from its registry") from None
        image_config = config.get("config") or {}
        labels = image_config.get("Labels") or {}
        workdir = image_config.get("WorkingDir")
        pinned = f"{parsed.name}@{digest}"
        return ImageInfo(
            id=pinned,
            tags=(f"{parsed.name}:{parsed.tag}",) if parsed.tag else (),
            labels={str(k): str(v) for k, v in labels.items()},
            repo_digests=(pinned,),
            workdir=workdir if isinstance(workdir, str) and workdir else None,
        )

    def _resolve(self, ref: str) -> tuple[ImageRef, dict[str, Any], str] | None:
        """(reference, image manifest for this platform, digest it is pinned by), or None when
        the registry has no such image."""
        parsed = parse_reference(ref)
        if parsed is None:
            return None
        try:
            body, media_type, digest = self._manifest(parsed, parsed.reference)
        except _NotThere:
            return None
        if parsed.digest is not None and digest != parsed.digest:
            raise RuntimeFailure(
                f"registry {parsed.registry} answered {ref} with a manifest of digest {digest}",
                details={"image": ref},
            )
        manifest = _json_object(body, f"manifest of {ref}")
        media_type = manifest.get("mediaType") or media_type
        if media_type in INDEX_TYPES:
            child = self._pick_platform(manifest, ref)
            try:
                child_body, child_type, child_digest = self._manifest(parsed, child)
            except _NotThere:
                raise RuntimeFailure(
                    f"the index of {ref} names a missing manifest {child}"
                ) from None
            if child_digest != child:
                raise RuntimeFailure(f"manifest {child} of {ref} does not match its digest")
            manifest = _json_object(child_body, f"manifest {child} of {ref}")
            media_type = manifest.get("mediaType") or child_type
        if media_type not in MANIFEST_TYPES:
            raise InvalidInput(
                f"{ref} is not a container image (manifest type {media_type!r})",
                code="image_not_found",
                details={"image": ref},
            )
        return parsed, manifest, digest

    def _pick_platform(self, index: Mapping[str, Any], ref: str) -> str:
        os_name, arch = self.platform
        for entry in index.get("manifests") or []:
            wanted = entry.get("platform") or {}
            if wanted.get("os") == os_name and wanted.get("architecture") == arch:
                digest = entry.get("digest")
                if isinstance(digest, str) and _DIGEST.fullmatch(digest):
                    return digest
        raise InvalidInput(
            f"{ref} has no image for {os_name}/{arch}",
            code="image_not_found",
            details={"image": ref, "platform": f"{os_name}/{arch}"},
        )

    def _url(self, ref: ImageRef, kind: str, reference: str) -> str:
        scheme = "http" if ref.registry in self.insecure else "https"
        return f"{scheme}://{ref.registry}/v2/{ref.repository}/{kind}/{reference}"

    def _manifest(self, ref: ImageRef, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, sha256 digest of the body) of one manifest."""
        body, headers = self._get(
            ref, self._url(ref, "manifests", reference), ACCEPT, MAX_MANIFEST_BYTES
        )
        media_type = headers.get("content-type", "").split(";")[0].strip()
        return body, media_type, "sha256:" + hashlib.sha256(body).hexdigest()

    def _blob(self, ref: ImageRef, digest: str) -> bytes:
        body, _ = self._get(ref, self._url(ref, "blobs", digest), "*/*", MAX_CONFIG_BYTES)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RuntimeFailure(f"blob {digest} of {ref.name} does not match its digest")
        return body

    def _get(self, ref: ImageRef, url: str, accept: str, limit: int) -> tuple[bytes, httpx.Headers]:
        scope = f"repository:{ref.repository}:pull"
        for attempt in range(2):
            headers = {"Accept": accept}
            token = self._tokens.get((ref.registry, scope))
            if token:
                headers["Authorization"] = f"Bearer {token}"
            body, response = self._fetch(url, headers, limit, what=ref.registry)
            challenge = response.headers.get("www-authenticate", "")
            if (
                response.status_code == 401
                and attempt == 0
                and self._authenticate(ref, challenge, scope)
            ):
                continue
            if response.status_code in (401, 403, 404):
                raise _NotThere(response.status_code)
            if response.status_code != 200:
                raise RuntimeFailure(
                    f"registry {ref.registry} answered {response.status_code} for {url}"
                )
            return body, response.headers
        raise _NotThere(401)

    def _fetch(
        self, url: str, headers: Mapping[str, str], limit: int, *, what: str
    ) -> tuple[bytes, httpx.Response]:
        """GET ``url``, following redirects to blob storage, reading at most ``limit`` bytes."""
        with self._open(url, headers, what=what) as response:
            chunks: list[bytes] = []
            size = 0
            if response.status_code == 200:
                try:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise RuntimeFailure(
                                f"registry {what} sent more than {limit} bytes for {url}"
                            )
                        chunks.append(chunk)
                except httpx.HTTPError as exc:
                    raise _unreachable(what, exc) from exc
            return b"".join(chunks), response

    @contextmanager
    def _open(self, url: str, headers: Mapping[str, str], *, what: str) -> Iterator[httpx.Response]:
        """The response to GET ``url`` after redirects to blob storage, its body unread."""
        try:
            for _ in range(5):
                with self._client.stream("GET", url, headers=dict(headers)) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        # Storage behind a redirect gets no registry token.
                        headers = {k: v for k, v in headers.items() if k != "Authorization"}
                        continue
                    yield response
                    return
        except httpx.HTTPError as exc:
            raise _unreachable(what, exc) from exc
        raise RuntimeFailure(f"registry {what} redirected too often for {url}")

    @contextmanager
    def _open_blob(self, ref: ImageRef, digest: str) -> Iterator[httpx.Response]:
        """A blob's response, streamed (a layer is too large to hold), after a token if the
        registry asks for one."""
        url = self._url(ref, "blobs", digest)
        scope = f"repository:{ref.repository}:pull"
        for attempt in range(2):
            headers = {"Accept": "*/*"}
            token = self._tokens.get((ref.registry, scope))
            if token:
                headers["Authorization"] = f"Bearer {token}"
            with self._open(url, headers, what=ref.registry) as response:
                challenge = response.headers.get("www-authenticate", "")
                if (
                    response.status_code == 401
                    and attempt == 0
                    and self._authenticate(ref, challenge, scope)
                ):
                    continue
                if response.status_code in (401, 403, 404):
                    raise _NotThere(response.status_code)
                if response.status_code != 200:
                    raise RuntimeFailure(
                        f"registry {ref.registry} answered {response.status_code} for {url}"
                    )
                yield response
                return
        raise _NotThere(401)

    def _authenticate(self, ref: ImageRef, challenge: str, scope: str) -> bool:
        """Answer a Bearer challenge with an anonymous token; False when there is none."""
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() != "bearer":
            return False
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.get("realm", "")
        realm_url = httpx.URL(realm) if realm else None
        if realm_url is None or realm_url.scheme not in ("https", "http"):
            return False
        if realm_url.scheme == "http" and ref.registry not in self.insecure:
            log.warning("registry %s names a plain-HTTP token realm; not used", ref.registry)
            return False
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        body, response = self._fetch(
            str(realm_url.copy_merge_params(query)),
            {"Accept": "application/json"},
            MAX_TOKEN_BYTES,
            what=ref.registry,
        )
        if response.status_code != 200:
            return False
        answer = _json_object(body, f"token of {ref.registry}")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            return False
        with self._lock:
            self._tokens[(ref.registry, scope)] = token
        return True

    # -- the ImageStore contract -------------------------------------------------------------

    def pull_image(self, ref: str) -> ImageInfo:
        """Resolve ``ref`` in its registry (nothing is downloaded: the kubelet pulls)."""
        try:
            info = self.image(ref)
        except RuntimeUnavailable as exc:
            raise InvalidInput(
                f"image {ref!r} cannot be pulled: {exc.message}",
                code="image_not_found",
                details={"image": ref},
            ) from exc
        if info is None:
            raise InvalidInput(
                f"image {ref!r} was not found in its registry (or needs credentials)",
                code="image_not_found",
                details={"image": ref},
            )
        return info

    def build_image(
        self, context: Path, *, tag: str, labels: Mapping[str, str], progress: BuildProgress
    ) -> ImageInfo:
        raise Conflict(SOURCE_UNSUPPORTED, code="source_install_unsupported")

    def push_image(self, ref: str) -> None:
        raise Conflict(SOURCE_UNSUPPORTED, code="source_install_unsupported")

    def remove_image(self, ref: str) -> None:
        """Nothing to do: the registry keeps its images, and the kubelet its cache."""

    def extract_filesystem(
        self, ref: str, dest: Path, *, wanted: PathSelector, max_bytes: int
    ) -> ImageFilesystem:
        """The selected files of ``ref``, its layers read from the registry lowest first with
        their whiteouts applied. Each layer is streamed through the writer as it arrives and
        checked against its digest at the end; a layer that does not match refuses the image
        (what was written is the caller's to delete, as with any refusal)."""
        resolved = self._resolve(ref)
        if resolved is None:
            raise NotFound(
                f"image {ref!r} was not found in its registry (or needs credentials)",
                code="runtime_not_found",
                details={"image": ref},
            )
        parsed, manifest, _ = resolved
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise RuntimeFailure(f"the manifest of {ref} lists no layers")
        writer = FilesystemWriter(dest, wanted=wanted, max_bytes=max_bytes, what=f"image {ref}")
        for layer in layers:
            digest = layer.get("digest") if isinstance(layer, dict) else None
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise RuntimeFailure(f"the manifest of {ref} names a layer without a digest")
            media_type = str(layer.get("mediaType") or "")
            compression = _LAYER_COMPRESSION.get(media_type, media_type or "unknown")
            if compression not in ("gzip", "none"):
                raise ImageUnreadable(
                    f"image {ref} has a layer of type {media_type!r}, which the scan cannot "
                    "read (gzip or uncompressed tar only)",
                    details={"image": ref, "media_type": media_type},
                )
            hasher = hashlib.sha256()
            try:
                with self._open_blob(parsed, digest) as response:
                    reader = ChunkReader(_hashed(response, hasher, parsed.registry))
                    writer.add_layer(
                        io.BufferedReader(reader, _LAYER_CHUNK),
                        compression="gzip" if compression == "gzip" else None,
                    )
                    reader.drain()  # the tar's end padding, for the digest
            except _NotThere:
                raise RuntimeFailure(
                    f"layer {digest} of {ref} is missing from its registry"
                ) from None
            if "sha256:" + hasher.hexdigest() != digest:
                raise RuntimeFailure(f"layer {digest} of {ref} does not match its digest")
        return writer.result()


def _hashed(response: httpx.Response, hasher: Any, what: str) -> Iterator[bytes]:
    """The body's chunks, each added to ``hasher`` as it passes."""
    try:
        for chunk in response.iter_bytes():
            hasher.update(chunk)
            yield chunk
    except httpx.HTTPError as exc:
        raise _unreachable(what, exc) from exc


def _unreachable(what: str, exc: Exception) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"registry {what} cannot be reached: {exc}",
        details={
            "hint": "is the registry up, and listed in SUMMIT_INSECURE_REGISTRIES "
            "if it speaks plain HTTP?"
        },
    )


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RuntimeFailure(f"the {what} is not JSON") from exc
    if not isinstance(data, dict):
        raise RuntimeFailure(f"the {what} is not a JSON object")
    return data
