"""The orchestrator image (``make image``): built through scripts/build-orchestrator-image.sh and
run the way its Dockerfile tells operators to, with a read-only root filesystem, a tmpfs
``/tmp``, a volume for ``/var/lib/summit`` and the image's own user (no ``--user``).

``/readyz`` checks the database, the container runtime and the first reconcile, so it answers
200 only where the orchestrator reaches a Docker Engine: the ready test mounts the host's
socket and adds its group (the image's user is not root and gets nothing more), the other
test shows what an operator sees without it (alive, healthy, not ready, naming the runtime).

Every container and volume a test starts is removed. The image itself is kept: it is what
``make image`` builds, under its real name, and it takes minutes to rebuild (the wheels, the
install and the byte-compilation of the Kubernetes client); the build script skips the next
build when nothing changed, and an image it replaces is deleted by the script.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

IMAGE = "summit/orchestrator:latest"
BUILD_SCRIPT = REPO / "scripts" / "build-orchestrator-image.sh"
IMAGE_UID = 10001
STATE = "/var/lib/summit"
ADMIN_TOKEN = "image-test-" + secrets.token_hex(16)


def _build() -> str:
    """Run the build script (xdist workers take turns: it may bootstrap the Debian base, as
    the plugin base image's build does, under the same lock) and return its output."""
    lock_path = Path(os.environ.get("TMPDIR", "/tmp")) / "summit-base-image.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    assert done.returncode == 0, f"build failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    output = _build()
    size = docker_client.images.get(IMAGE).attrs["Size"]
    # The script reports the size it built (or found up to date), in bytes.
    assert f"size: {size} bytes" in output, output
    return IMAGE


@pytest.fixture
def run(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Start containers of the image as an operator would; remove them and their volumes."""
    containers: list[Any] = []
    volumes: list[Any] = []

    def start(
        *,
        env: dict[str, str | None] | None = None,
        command: list[str] | None = None,
        docker_socket: Path | None = None,
    ) -> Any:
        """A started container; ``env`` adds settings (None unsets one), ``docker_socket``
        mounts the Engine's socket and gives the image's user the socket's group."""
        volume = docker_client.volumes.create(
            name=f"summit-image-test-{secrets.token_hex(4)}", labels={"summit-test": "image"}
        )
        volumes.append(volume)
        defaults: dict[str, str | None] = {
            "SUMMIT_ADMIN_TOKEN": ADMIN_TOKEN,
            # Reconcile adopts or removes containers labelled with its instance: a name of its
            # own keeps it away from the plugins of every other test on this Docker Engine.
            "SUMMIT_INSTANCE": f"summit-image-test-{secrets.token_hex(4)}",
        }
        environment = {k: v for k, v in {**defaults, **(env or {})}.items() if v is not None}
        binds = {volume.name: {"bind": STATE, "mode": "rw"}}
        extra: dict[str, Any] = {}
        if docker_socket is not None:
            binds[str(docker_socket)] = {"bind": "/var/run/docker.sock", "mode": "rw"}
            extra["group_add"] = [str(docker_socket.stat().st_gid)]
        container = docker_client.containers.create(
            IMAGE,
            command=command,
            environment=environment,
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
            volumes=binds,
            ports={"8700/tcp": ("127.0.0.1", None)},
            labels={"summit-test": "image"},
            **extra,
        )
        containers.append(container)
        container.start()
        return container

    yield start
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for volume in volumes:
        volume.remove(force=True)


def _url(container: Any, path: str) -> str:
    container.reload()
    port = container.ports["8700/tcp"][0]["HostPort"]
    return f"http://127.0.0.1:{port}{path}"


def _wait_for(container: Any, path: str, status: int, timeout_s: float = 120.0) -> httpx.Response:
    """Poll ``path`` until it answers ``status``; fail with the container's logs otherwise."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            break
        try:
            response = httpx.get(_url(container, path), timeout=5)
            if response.status_code == status:
                return response
            last = (response.status_code, response.text)
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")
    pytest.fail(f"{path} did not answer {status} (last: {last!r}); logs:\n{logs}")


def _wait_healthy(container: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        if health.get("Status") == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"HEALTHCHECK never reached healthy: {health!r}")


def _ids(container: Any) -> tuple[list[int], list[int]]:
    """The real, effective, saved and filesystem uids and gids of the container's main
    process, read from the host's /proc (not from a process the test starts inside)."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (
        [int(v) for v in fields["Uid"].split()],
        [int(v) for v in fields["Gid"].split()],
    )


def _docker_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"DOCKER_HOST={host} is not a local socket the container could mount")
    return Path(host.removeprefix("unix://"))


def test_build_is_skipped_when_nothing_changed(image: str, docker_client: Any) -> None:
    before = docker_client.images.get(image).id
    output = _build()
    assert "up to date" in output
    assert "nothing to build" in output
    assert docker_client.images.get(image).id == before


def test_image_user_and_settings(image: str, docker_client: Any) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert config["Entrypoint"] == ["summit"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8700"]
    assert set(config["Volumes"]) == {STATE, "/tmp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SUMMIT_STATE_DIR"].startswith(STATE + "/")
    assert config["WorkingDir"] == STATE  # where the default sqlite:///./summit.db lands
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]


def test_serve_on_sqlite_is_ready_as_non_root(image: str, run: Callable[..., Any]) -> None:
    container = run(docker_socket=_docker_socket())

    ready = _wait_for(container, "/readyz", 200).json()
    assert ready["status"] == "ready"
    assert {"database", "runtime", "reconcile"} <= ready["checks"].keys()
    assert set(ready["checks"].values()) == {"ok"}
    uids, gids = _ids(container)
    assert uids == [IMAGE_UID] * 4
    assert gids == [IMAGE_UID] * 4
    _wait_healthy(container)
    # The state went to the volume, on SQLite: the read-only root took nothing.
    listing = container.exec_run(
        ["python", "-c", f"import os; print(sorted(os.listdir({STATE!r})))"]
    )
    assert listing.exit_code == 0
    assert "summit.db" in listing.output.decode()
    assert "state" in listing.output.decode()


def test_without_docker_alive_and_healthy_but_not_ready(
    image: str, run: Callable[..., Any]
) -> None:
    container = run()

    assert _wait_for(container, "/healthz", 200).json()["status"] == "ok"
    not_ready = _wait_for(container, "/readyz", 503).json()
    assert not_ready["status"] == "not ready"
    assert not_ready["checks"]["database"] == "ok"
    assert not_ready["checks"]["runtime"].startswith("error: the Docker Engine cannot be reached")
    assert not_ready["checks"]["reconcile"] == "pending"
    _wait_healthy(container)


def test_serve_refuses_the_default_admin_token(image: str, run: Callable[..., Any]) -> None:
    # Listening on 0.0.0.0 (the image's command) with the development token is refused.
    container = run(env={"SUMMIT_ADMIN_TOKEN": None})
    assert container.wait(timeout=60)["StatusCode"] != 0
    assert "insecure_admin_token" in container.logs().decode(errors="replace")


def test_worker_needs_the_orchestrators_database(image: str, run: Callable[..., Any]) -> None:
    # The image sets no SUMMIT_DATABASE_URL, so a worker is not silently given a private
    # SQLite file: it refuses to start until pointed at the orchestrator's database.
    container = run(command=["worker"], env={"SUMMIT_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert container.wait(timeout=60)["StatusCode"] != 0
    assert "summit worker needs SUMMIT_DATABASE_URL" in container.logs().decode(errors="replace")
