"""Docker work of the CLI: build a plugin image, run it sandboxed, push it.

The image and the sandbox are the orchestrator's own: the build follows
:mod:`summit_sdk.imagebuild` and the container gets :func:`summit_sdk.sandbox.sandbox_options`
(no network, the protocol on a unix socket in a folder bind-mounted at ``/run/summit``,
non-root, read-only root, no capabilities, pids/memory/CPU/open-files limits).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from summit_sdk.imagebuild import prepare_context, source_digest
from summit_sdk.labels import LABEL_MANIFEST, LABEL_OWNER, LABEL_PLUGIN, LABEL_SOURCE_DIGEST
from summit_sdk.sandbox import (
    DEFAULT_CPU_PERCENT,
    DEFAULT_MEMORY_MB,
    SOCKET_NAME,
    open_socket_dir,
    sandbox_options,
)
from summit_sdk.unixsock import sync_transport

DEFAULT_BASE = "summit/plugin-python:latest"
CLI_OWNER = "summit-plugin-cli"

Progress = Callable[[str], None]


class DockerError(Exception):
    """A Docker operation failed; the message is one line for the author."""


def client() -> Any:
    import docker
    import docker.errors

    try:
        c = docker.from_env(timeout=120)
        c.ping()
    except docker.errors.DockerException as exc:
        raise DockerError(f"the Docker Engine cannot be reached: {exc}") from None
    return c


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Built:
    image_id: str
    tag: str


def build_image(
    docker: Any, source: Path, manifest: dict[str, Any], *, tag: str, base: str, progress: Progress
) -> Built:
    import docker.errors as derr

    try:
        base_img = docker.images.get(base)
    except derr.ImageNotFound:
        raise DockerError(
            f"base image {base} is not present (build it with plugin-base-images/build.sh)"
        ) from None
    digest = source_digest(source, base_image_id=base_img.id)
    manifest_json = json.dumps(manifest, sort_keys=True)
    entrypoint = (manifest.get("runtime") or {}).get("entrypoint") or ""
    ctx = Path(tempfile.mkdtemp(prefix="summit-build-"))
    try:
        prepare_context(
            ctx,
            source,
            base_image_id=base_img.id,
            entrypoint=entrypoint,
            manifest_json=manifest_json,
            manifest_yaml=yaml.safe_dump(manifest, sort_keys=False),
        )
        progress(f"building {tag} from {base}")
        try:
            stream = docker.api.build(
                path=str(ctx),
                tag=tag,
                labels={LABEL_MANIFEST: manifest_json, LABEL_SOURCE_DIGEST: digest},
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise DockerError(f"the image failed to build: {' '.join(detail.split())}")
                line = (chunk.get("stream") or chunk.get("status") or "").strip()
                if line:
                    progress(line)
        except derr.DockerException as exc:
            raise DockerError(f"the image failed to build: {exc}") from None
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return Built(image_id=docker.images.get(tag).id, tag=tag)


# --------------------------------------------------------------------------- sandbox


@dataclass
class Sandbox:
    container: Any
    socket_dir: Path
    started_at: float

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    def http(self, timeout: float = 10) -> httpx.Client:
        # The image may be hostile (verify is what the marketplace runs): never follow a link
        # it planted in place of its socket.
        transport = sync_transport(str(self.socket_path))
        return httpx.Client(transport=transport, base_url="http://plugin", timeout=timeout)

    def state(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs.get("State") or {})

    def logs(self, tail: int = 20) -> str:
        with contextlib.suppress(Exception):
            raw = self.container.logs(tail=tail, stdout=True, stderr=True)
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return ""

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True, v=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def start_sandboxed(docker: Any, image: str, manifest: dict[str, Any], purpose: str) -> Sandbox:
    """Create and start ``image`` with the orchestrator's sandbox; the caller removes it."""
    resources = manifest.get("resources") or {}
    sock_dir = Path(tempfile.mkdtemp(prefix="summit-"))
    open_socket_dir(sock_dir)
    name = f"summit-{purpose}-{secrets.token_hex(4)}"
    options = sandbox_options(
        socket_dir=sock_dir,
        memory_mb=int(resources.get("memory_mb", DEFAULT_MEMORY_MB)),
        cpu_percent=int(resources.get("cpu_percent", DEFAULT_CPU_PERCENT)),
        labels={LABEL_OWNER: CLI_OWNER, LABEL_PLUGIN: str(manifest.get("id"))},
    )
    try:
        container = docker.containers.create(image, name=name, **options)
    except Exception as exc:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise DockerError(f"cannot create a container from {image}: {exc}") from None
    box = Sandbox(container=container, socket_dir=sock_dir, started_at=time.monotonic())
    try:
        container.start()
    except Exception as exc:
        box.remove()
        raise DockerError(f"cannot start {image}: {exc}") from None
    box.started_at = time.monotonic()
    return box


def wait_healthy(box: Sandbox, timeout_s: float = 30) -> tuple[httpx.Response, float]:
    """Poll health over the socket; returns the answer and the seconds since start."""
    deadline = box.started_at + timeout_s
    last = "no answer"
    with box.http(timeout=2) as http:
        while time.monotonic() < deadline:
            if box.socket_path.exists():
                try:
                    response = http.get("/summit/v1/health")
                    if response.status_code == 200:
                        return response, time.monotonic() - box.started_at
                    last = f"health answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
            state = box.state()
            if not state.get("Running"):
                tail = " | ".join(box.logs(5).strip().splitlines()[-3:])
                raise DockerError(
                    f"the container exited with status {state.get('ExitCode')} before it was "
                    f"healthy: {tail or 'no logs'}"
                )
            time.sleep(0.05)
    raise DockerError(f"no healthy answer within {timeout_s:g} s ({last})")


# --------------------------------------------------------------------------- push


def split_ref(ref: str) -> tuple[str, str]:
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref:
        raise DockerError("push needs a tag, not a digest reference")
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def push_image(docker: Any, ref: str, on_chunk: Callable[[dict[str, Any]], None]) -> str | None:
    """Push ``ref`` (already tagged); returns the registry digest when reported."""
    import docker.errors as derr

    repo, tag = split_ref(ref)
    digest: str | None = None
    try:
        for chunk in docker.api.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise DockerError(f"push of {ref} failed: {' '.join(str(chunk['error']).split())}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            on_chunk(chunk)
    except derr.DockerException as exc:
        raise DockerError(f"push of {ref} failed: {exc}") from None
    return digest


@contextlib.contextmanager
def removing(box: Sandbox) -> Iterator[Sandbox]:
    try:
        yield box
    finally:
        box.remove()
