"""The seam between the orchestrator and a container backend.

Services and the broker speak only this protocol; ``docker.py`` implements it with the Docker
SDK, and a Kubernetes backend implements the same contract with pods. An endpoint is where
the plugin protocol is served: ``unix:///path/plugin.sock`` or ``tcp://host:port``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LABEL_OWNER = "io.summit.owner"
LABEL_PLUGIN = "io.summit.plugin-id"
LABEL_VERSION = "io.summit.plugin-version"
LABEL_ENDPOINT = "io.summit.endpoint"
LABEL_MANIFEST = "io.summit.plugin"  # manifest JSON on plugin images
LABEL_SOURCE_DIGEST = "io.summit.source-digest"

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


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    name: str
    plugin_id: str | None
    version: str | None
    image: str
    endpoint: str | None
    running: bool
    status: str  # backend's word: created, running, exited, ...
    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeEvent:
    """A container of ours stopped on its own (``die``) or ran out of memory (``oom``)."""

    kind: str
    container_id: str
    plugin_id: str | None
    exit_code: int | None = None


class ContainerRuntime(Protocol):
    def ping(self) -> None:
        """Raise RuntimeUnavailable when the backend cannot be reached."""

    def deploy(self, spec: ContainerSpec) -> ContainerStatus:
        """Create and start a sandboxed container; its endpoint is in the returned status."""

    def remove(self, container_id: str, *, grace_s: float = 0) -> None:
        """Stop (after ``grace_s``) and delete a container and its endpoint; absent is fine."""

    def status(self, container_id: str) -> ContainerStatus | None: ...

    def logs(self, container_id: str, *, tail: int = 100) -> str: ...

    def stats(self, container_id: str) -> dict[str, float]: ...

    def list_owned(self) -> list[ContainerStatus]:
        """Every container carrying this orchestrator's owner label, running or not."""

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Block, yielding die/oom events of owned containers until ``stop`` is set."""

    def build_image(
        self, context: Path, *, tag: str, labels: Mapping[str, str], progress: BuildProgress
    ) -> ImageInfo: ...

    def image(self, ref: str) -> ImageInfo | None: ...

    def pull_image(self, ref: str) -> ImageInfo: ...

    def push_image(self, ref: str) -> None: ...

    def remove_image(self, ref: str) -> None: ...
