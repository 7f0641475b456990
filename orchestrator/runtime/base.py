"""The seams between the orchestrator and a container backend: ``ContainerRuntime`` runs
plugin containers, ``ImageStore`` builds, pulls, inspects and removes their images.

Services and the broker speak only these protocols; ``docker.py`` implements both with the
Docker SDK, a Kubernetes backend implements the same contracts with pods and a registry, and
``tests/fixtures/fake_runtime.py`` keeps them in memory. An endpoint is where the plugin
protocol is served, typed (``endpoints.py``): a unix socket or a TCP address.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# The labels are the SDK's (``summit-plugin`` writes and reads them too), named here for the
# backends and services.
from summit_sdk.labels import (  # noqa: F401
    LABEL_ENDPOINT,
    LABEL_MANIFEST,
    LABEL_OWNER,
    LABEL_PLUGIN,
    LABEL_SOURCE_DIGEST,
    LABEL_VERSION,
)

from orchestrator.runtime.endpoints import Endpoint
from orchestrator.runtime.image_filesystem import ImageFilesystem, PathSelector

BuildProgress = Callable[[str], None]


@dataclass(frozen=True)
class ContainerSpec:
    plugin_id: str
    version: str
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int = 256
    cpu_percent: int = 50
    pids_limit: int = 128
    tmpfs_mb: int = 16
    user: str = "10001:10001"
    log_max_size: str = "5m"
    storage_mb: int = 100
    # runc (the default) or gvisor: which kernel the plugin's system calls meet.
    isolation: str = "runc"
    # Secret the plugin requires as a bearer token on its protocol when it listens on a network
    # address (SUMMIT_PLUGIN_TOKEN); unused over unix sockets. Kept out of repr and logs.
    call_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    name: str
    plugin_id: str | None
    version: str | None
    image: str
    endpoint: Endpoint | None
    running: bool  # a paused container is running (frozen in place, not stopped)
    status: str  # backend's word: created, running, paused, exited, ...
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None
    # The secret the container requires on its protocol (set by whoever started it; a
    # backend that lists containers does not know it).
    call_token: str | None = field(default=None, repr=False, compare=False)
    paused: bool = False


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...] = ()
    # The image's WORKDIR (where its own code usually is); None when it sets none.
    workdir: str | None = None


@dataclass(frozen=True)
class RuntimeEvent:
    """A container of ours stopped on its own (``die``) or ran out of memory (``oom``)."""

    kind: str
    container_id: str
    plugin_id: str | None
    exit_code: int | None = None


class ContainerRuntime(Protocol):
    # Whether containers can be frozen in place (the idle pause); a backend that cannot says
    # so here, and its pause/unpause raise.
    can_pause: bool

    def ping(self) -> None:
        """Raise RuntimeUnavailable when the backend cannot be reached."""

    def deploy(self, spec: ContainerSpec) -> ContainerStatus:
        """Create and start a sandboxed container; its endpoint is in the returned status."""

    def remove(self, container_id: str, *, grace_s: float = 0) -> None:
        """Stop (after ``grace_s``) and delete a container and its endpoint; absent is fine."""

    def status(self, container_id: str) -> ContainerStatus | None: ...

    def pause(self, container_id: str) -> None:
        """Freeze every process of the container (the cgroup freezer); memory stays."""

    def unpause(self, container_id: str) -> None:
        """Thaw a frozen container; a container that is not frozen is left as it is."""

    def logs(self, container_id: str, *, tail: int = 100) -> str: ...

    def stats(self, container_id: str) -> dict[str, float]: ...

    def list_owned(self) -> list[ContainerStatus]:
        """Every container carrying this orchestrator's owner label, running or not."""

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Block, yielding die/oom events of owned containers until ``stop`` is set."""

    def sweep_endpoints(self, keep: set[Endpoint]) -> None:
        """Delete what backs endpoints outside ``keep`` (socket folders a crash left behind)."""


class ImageStore(Protocol):
    def ping(self) -> None:
        """Raise RuntimeUnavailable when the backend cannot be reached."""

    def image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref`` names (tag or id), or None when it is not on this host."""

    def build_image(
        self, context: Path, *, tag: str, labels: Mapping[str, str], progress: BuildProgress
    ) -> ImageInfo: ...

    def pull_image(self, ref: str) -> ImageInfo:
        """Pull ``ref`` from its registry (InvalidInput ``image_not_found`` when it cannot)."""

    def push_image(self, ref: str) -> None: ...

    def remove_image(self, ref: str) -> None:
        """Untag or delete ``ref``; absent, or still used by a container, is fine."""

    def extract_filesystem(
        self, ref: str, dest: Path, *, wanted: PathSelector, max_bytes: int
    ) -> ImageFilesystem:
        """Write the files of image ``ref`` that ``wanted`` selects into the empty folder
        ``dest``, without running the image (``image_filesystem.FilesystemWriter``: regular
        files and folders only, never outside ``dest``). ``ImageTooLarge`` when the image
        unpacks to more than ``max_bytes``; ``ImageUnreadable`` for an unsafe or unreadable
        archive; ``NotFound`` when there is no such image."""
