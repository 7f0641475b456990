"""The backends the ``ContainerRuntime`` contract runs against, behind one ``Backend`` face.

* ``docker``: the real Docker Engine running the probe fixture plugin, built on the plugin
  base image; crashes and OOM kills are real.
* ``kubernetes``: :class:`~orchestrator.runtime.kubernetes.KubernetesRuntime` against kmock's
  ``KubernetesEmulator``, an in-memory API server on a local port. Nothing runs there: no
  kubelet, no scheduler, no controllers. The suite plays the parts the contract needs:
  :class:`FakeKubelet` writes pod status (Running at an IP, terminated with an exit code or
  ``OOMKilled``, stuck pulling an image) and serves logs; :class:`ApiServerEmulator` stamps what
  an API server adds on create (uid, creationTimestamp, resourceVersion), which kmock leaves out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest

from orchestrator.runtime.base import ContainerRuntime, ContainerSpec, ContainerStatus
from orchestrator.runtime.endpoints import UnixEndpoint

NAMESPACE = "summit-plugins"
ORCH_NAMESPACE = "summit"
ORCH_LABELS = {"app.kubernetes.io/name": "summit", "app.kubernetes.io/component": "orchestrator"}
PLUGIN_ID = "com.summit-tests.probe"
K8S_RESOURCES = ("v1/pods", "v1/secrets", "networking.k8s.io/v1/networkpolicies")
# A digest no registry holds: pods never start in the emulator, so no image is needed.
FAKE_IMAGE = "127.0.0.1:5000/summit-tests/probe@sha256:" + "ab" * 32
UNPULLABLE_IMAGE = "127.0.0.1:5000/summit-tests/missing@sha256:" + "cd" * 32


# -- the emulated API server ---------------------------------------------------------------


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the fields a real API server sets on every object it creates."""

    _versions = itertools.count(1000)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat())
        if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(
            request.data, dict
        ):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)


class EmulatorThread:
    """The emulator served on 127.0.0.1:<free port> from its own event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="kmock")
        self.stack = contextlib.AsyncExitStack()
        self.handler: ApiServerEmulator | None = None
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        self.url = self.run(self._enter())

    async def _enter(self) -> str:
        self.handler = ApiServerEmulator()
        for resource in K8S_RESOURCES:
            self.handler.resources[resource] = kmock.ResourceInfo(namespaced=True)
        await self.stack.enter_async_context(self.handler)
        server = await self.stack.enter_async_context(kmock.Server(self.handler))
        return str(server.url).rstrip("/")

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def react(self, criteria: Any, payload: Any) -> None:
        """Add a reaction (kmock's ``handler[criteria] << payload``) on the loop's thread."""

        async def add() -> None:
            assert self.handler is not None
            self.handler[criteria] << payload

        self.run(add())


class FakeKubelet:
    """Plays the node: writes the status a kubelet would into the emulator's pods.

    By default every new pod starts (Running, ready, at an IP of 10.244.0.0/24); a pod whose
    image is ``UNPULLABLE_IMAGE`` is left waiting in ``ImagePullBackOff``. Runs on a thread
    polling the API like any client, so the runtime sees status change as it would."""

    def __init__(self, url: str, emulator: EmulatorThread) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)
        self.emulator = emulator
        self.stop = threading.Event()
        self.seen: set[str] = set()
        self.logs: dict[str, str] = {}
        self.auto_start = True
        self._ips = itertools.count(10)
        self.thread = threading.Thread(target=self._loop, daemon=True, name="fake-kubelet")

    def _pod_path(self, name: str, sub: str = "") -> str:
        return f"/api/v1/namespaces/{NAMESPACE}/pods/{name}{sub}"

    def start(self) -> None:
        self.emulator.react(
            ("get", re.compile(rf"/api/v1/namespaces/{NAMESPACE}/pods/[^/]+/log")),
            lambda request: self.logs.get(str(request.name), "").encode(),
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.close()

    def _loop(self) -> None:
        while not self.stop.wait(0.05):
            with contextlib.suppress(httpx.HTTPError):
                pods = self.client.get(f"/api/v1/namespaces/{NAMESPACE}/pods").json()["items"]
                for pod in pods:
                    name = pod["metadata"]["name"]
                    if name in self.seen or not self.auto_start:
                        continue
                    self.seen.add(name)
                    if pod["spec"]["containers"][0]["image"] == UNPULLABLE_IMAGE:
                        self.wait(name, "ImagePullBackOff", "Back-off pulling image")
                    else:
                        self.run_pod(name)

    def _status(self, name: str, status: dict[str, Any]) -> None:
        response = self.client.patch(
            self._pod_path(name, "/status"),
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()

    def run_pod(self, name: str) -> None:
        now = datetime.now(UTC).isoformat()
        self.logs.setdefault(name, f"serving plugin {PLUGIN_ID} on tcp://0.0.0.0:8080\n")
        self._status(
            name,
            {
                "phase": "Running",
                "podIP": f"10.244.0.{next(self._ips)}",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "plugin",
                        "ready": True,
                        "restartCount": 0,
                        "image": FAKE_IMAGE,
                        "imageID": FAKE_IMAGE,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            },
        )

    def wait(self, name: str, reason: str, message: str) -> None:
        self._status(
            name,
            {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "plugin",
                        "ready": False,
                        "restartCount": 0,
                        "image": UNPULLABLE_IMAGE,
                        "imageID": "",
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ],
            },
        )

    def terminate(self, name: str, exit_code: int, reason: str = "Error") -> None:
        now = datetime.now(UTC).isoformat()
        self._status(
            name,
            {
                "phase": "Failed",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "plugin",
                        "ready": False,
                        "restartCount": 0,
                        "image": FAKE_IMAGE,
                        "imageID": FAKE_IMAGE,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": reason,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            },
        )


# -- one face for both backends --------------------------------------------------------------


@dataclass
class Backend:
    name: str
    runtime: ContainerRuntime
    make_spec: Callable[..., ContainerSpec]
    crash: Callable[[ContainerStatus, int], None]
    oom: Callable[[ContainerStatus], None]
    broken_spec: Callable[[], ContainerSpec]
    # What of a container exists besides itself (socket folder; Secret and NetworkPolicy).
    traces: Callable[[str, ContainerStatus | None], set[str]]
    # A leftover of a container that is gone (made old enough to be swept); its checker.
    make_leftover: Callable[[], Callable[[], bool]]
    # Everything of this runtime's owner that exists, by kind and name.
    inventory: Callable[[], set[str]]
    deployed: list[str] = field(default_factory=list)

    def deploy(self, **changes: Any) -> ContainerStatus:
        status = self.runtime.deploy(self.make_spec(**changes))
        self.deployed.append(status.id)
        return status

    def cleanup(self) -> None:
        for cid in self.deployed:
            with contextlib.suppress(Exception):
                self.runtime.remove(cid)


def _kubernetes_backend(emulator: EmulatorThread, kubelet: FakeKubelet) -> Backend:
    from kubernetes import client

    from orchestrator.runtime.kubernetes import KubernetesRuntime

    configuration = client.Configuration()
    configuration.host = emulator.url
    runtime = KubernetesRuntime(
        namespace=NAMESPACE,
        owner=f"contract-{secrets.token_hex(3)}",
        orchestrator_namespace=ORCH_NAMESPACE,
        orchestrator_labels=ORCH_LABELS,
        host_api_port=8701,
        runtime_classes={"gvisor": "gvisor"},
        api_client=client.ApiClient(configuration),
        start_timeout_s=10,
        poll_s=0.05,
        watch_poll_s=0.3,
    )
    http = kubelet.client

    def make_spec(**changes: Any) -> ContainerSpec:
        values: dict[str, Any] = {
            "plugin_id": PLUGIN_ID,
            "version": "1.0.0",
            "image": FAKE_IMAGE,
            "memory_mb": 96,
            "call_token": secrets.token_urlsafe(24),
        }
        values.update(changes)
        return ContainerSpec(**values)

    def exists(path: str) -> bool:
        return http.get(path).status_code == 200

    def traces(cid: str, status: ContainerStatus | None) -> set[str]:
        found = set()
        for kind, path in (
            ("pod", f"/api/v1/namespaces/{NAMESPACE}/pods/{cid}"),
            ("secret", f"/api/v1/namespaces/{NAMESPACE}/secrets/{cid}"),
            (
                "networkpolicy",
                f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/{cid}",
            ),
        ):
            if exists(path):
                found.add(kind)
        return found

    def make_leftover() -> Callable[[], bool]:
        # What a crash between writing the Secret and the pod leaves: a Secret and a policy
        # of ours naming a pod that does not exist, written long ago.
        from orchestrator.runtime.kube_objects import (
            network_policy_object,
            pod_name,
            secret_object,
        )

        name = pod_name(PLUGIN_ID, secrets.token_hex(6))
        common: dict[str, Any] = {
            "name": name,
            "namespace": NAMESPACE,
            "owner": runtime.owner,
            "spec": make_spec(),
        }
        old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        secret = secret_object(**common, token="t")
        policy = network_policy_object(
            **common,
            plugin_port=8080,
            orchestrator_namespace=ORCH_NAMESPACE,
            orchestrator_labels=ORCH_LABELS,
            host_api_port=None,
        )
        for obj, path in (
            (secret, f"/api/v1/namespaces/{NAMESPACE}/secrets"),
            (policy, f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"),
        ):
            obj["metadata"]["creationTimestamp"] = old
            http.post(path, json=obj).raise_for_status()
        return lambda: bool(traces(name, None))

    def inventory() -> set[str]:
        from orchestrator.runtime.base import LABEL_OWNER

        found = set()
        for kind, path in (
            ("pod", f"/api/v1/namespaces/{NAMESPACE}/pods"),
            ("secret", f"/api/v1/namespaces/{NAMESPACE}/secrets"),
            ("networkpolicy", f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"),
        ):
            for item in http.get(path).json()["items"]:
                if item["metadata"].get("labels", {}).get(LABEL_OWNER) == runtime.owner:
                    found.add(f"{kind}/{item['metadata']['name']}")
        return found

    return Backend(
        name="kubernetes",
        runtime=runtime,
        make_spec=make_spec,
        crash=lambda status, code: kubelet.terminate(status.id, code),
        oom=lambda status: kubelet.terminate(status.id, 137, "OOMKilled"),
        broken_spec=lambda: make_spec(image=UNPULLABLE_IMAGE),
        traces=traces,
        make_leftover=make_leftover,
        inventory=inventory,
    )


def _docker_backend(image: str, sockets_dir: Path) -> Backend:
    from orchestrator.runtime.docker import DockerRuntime

    runtime = DockerRuntime(owner=f"contract-{secrets.token_hex(3)}", sockets_dir=sockets_dir)

    def make_spec(**changes: Any) -> ContainerSpec:
        values: dict[str, Any] = {
            "plugin_id": PLUGIN_ID,
            "version": "1.0.0",
            "image": image,
            "memory_mb": 96,
        }
        values.update(changes)
        return ContainerSpec(**values)

    def call(status: ContainerStatus, action: dict[str, Any]) -> None:
        assert isinstance(status.endpoint, UnixEndpoint)
        transport = httpx.HTTPTransport(uds=str(status.endpoint.path))
        with httpx.Client(transport=transport, base_url="http://plugin", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    http.get("/summit/v1/health").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with contextlib.suppress(httpx.HTTPError):  # it dies answering
                http.post(
                    "/summit/v1/extensions/workflow/crash",
                    json={"input": action, "context": {"request_id": "contract"}},
                )

    def traces(cid: str, status: ContainerStatus | None) -> set[str]:
        found = set()
        if runtime.status(cid) is not None:
            found.add("container")
        endpoint = status.endpoint if status is not None else None
        if isinstance(endpoint, UnixEndpoint) and endpoint.folder.exists():
            found.add("socket folder")
        return found

    def make_leftover() -> Callable[[], bool]:
        folder = sockets_dir / secrets.token_hex(6)
        folder.mkdir(parents=True)
        hour_ago = time.time() - 3600
        os.utime(folder, (hour_ago, hour_ago))
        return folder.exists

    def inventory() -> set[str]:
        found = {f"container/{s.id}" for s in runtime.list_owned()}
        return found | {f"folder/{p.name}" for p in sockets_dir.iterdir()}

    return Backend(
        name="docker",
        runtime=runtime,
        make_spec=make_spec,
        crash=lambda status, code: call(status, {"action": "exit", "code": code}),
        oom=lambda status: call(status, {"action": "oom"}),
        broken_spec=lambda: make_spec(image=f"summit-tests/absent:{secrets.token_hex(4)}"),
        traces=traces,
        make_leftover=make_leftover,
        inventory=inventory,
    )


@pytest.fixture(scope="session")
def probe_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The probe fixture plugin built on the plugin base image (removed afterwards)."""
    from orchestrator.domain.manifest import load_manifest_text
    from orchestrator.runtime.builder import ImageBuilder
    from orchestrator.runtime.docker import DockerRuntime
    from tests.fixtures.plugins import make_plugin

    work = tmp_path_factory.mktemp("probe")
    source = make_plugin(work / "probe", version=f"1.0.0-contract.x{secrets.token_hex(3)}")
    store = DockerRuntime(owner="contract-build", sockets_dir=work / "run")
    manifest = load_manifest_text((source / "plugin.yaml").read_text())
    built = ImageBuilder(store, base_image=base_image, workdir=work / "build").build(
        source, manifest, lambda line: None
    )
    yield built.tag
    store.remove_image(built.tag)


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    server = EmulatorThread()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kubelet(emulator: EmulatorThread) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(emulator.url, emulator)
    fake.start()
    yield fake
    fake.close()


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    # Short and under /tmp: a unix socket path must stay under 108 bytes.
    path = Path("/tmp") / f"summit-contract-{secrets.token_hex(3)}"
    path.mkdir()
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(
    params=[
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        pytest.param("kubernetes", marks=pytest.mark.kubernetes),
    ]
)
def backend(request: pytest.FixtureRequest, sockets_dir: Path) -> Iterator[Backend]:
    if request.param == "docker":
        made = _docker_backend(request.getfixturevalue("probe_image"), sockets_dir)
    else:
        made = _kubernetes_backend(
            request.getfixturevalue("emulator"), request.getfixturevalue("kubelet")
        )
    yield made
    made.cleanup()
