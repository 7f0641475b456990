"""What a plugin container uses, read straight from its cgroup's files.

Docker's stats API takes about a second per container (it waits for a second CPU reading), so
sampling 200 plugins through it would take minutes; the kernel's cgroup files answer in well
under a millisecond. This module finds a container's cgroup on the host and reads it, for
both cgroup versions and both of Docker's cgroup drivers:

- cgroup v2 (one unified tree): ``<root>/docker/<id>`` (cgroupfs driver) or
  ``<root>/system.slice/docker-<id>.scope`` (systemd driver);
- cgroup v1 (one tree per controller): the same two paths under ``<root>/memory``,
  ``<root>/cpu``, ``<root>/cpuacct``, ``<root>/pids`` and ``<root>/blkio``.

Where no file can be read (the orchestrator runs in a container without the host's cgroup
tree mounted, a Kubernetes pod, a rootless daemon's layout), :class:`ContainerMeter` falls
back to the runtime's ``stats()``, which knows memory and pids but not cumulative CPU time:
fields nobody can tell are ``None`` ("not available"), never an error.

Memory is the working set, as ``docker stats`` shows it: usage less the inactive page cache,
which the kernel reclaims before it would kill anything.

Hand-written rather than taken from a library: the Python cgroup readers on PyPI either need
root to manage cgroups (cgroupspy) or read only the caller's own cgroup; reading six small
files needs neither.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CGROUP_ROOT",
    "CgroupLocator",
    "CgroupPath",
    "ContainerMeter",
    "ContainerUsage",
    "read_cgroup",
    "read_v1",
    "read_v2",
]

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The v1 controllers read, by the name of their folder under the root.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")
# A memory limit at or above this is the kernel's "unlimited" (v1 writes PAGE_COUNTER_MAX).
_UNLIMITED = 2**62
# A Docker container id: only these ever become a path below the cgroup root.
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ContainerUsage:
    """One reading of a container. Counters (``cpu_usec``, periods, I/O) are cumulative since
    the container started; ``None`` is "not available"."""

    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None  # None: unlimited, or unknown
    cpu_usec: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_usec: int | None = None
    pids: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    source: str = "none"  # cgroup2 | cgroup1 | runtime | none

    @property
    def empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.memory_bytes,
                self.cpu_usec,
                self.pids,
                self.io_read_bytes,
            )
        )


@dataclass(frozen=True)
class CgroupPath:
    """Where a container's cgroup is: one folder (v2), or one folder per controller (v1)."""

    version: int
    dirs: Mapping[str, Path] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs.values())


# -- parsing ---------------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``cpu.stat``, ``memory.stat``): ``key value`` per line."""
    out: dict[str, int] = {}
    for line in (_read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out


def _io_stat_v2(path: Path) -> tuple[int | None, int | None]:
    """``io.stat``: ``MAJ:MIN rbytes=.. wbytes=.. ...`` per device, summed over devices."""
    text = _read_text(path)
    if text is None:
        return None, None
    read = write = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes" and value.isdigit():
                read += int(value)
            elif key == "wbytes" and value.isdigit():
                write += int(value)
    return read, write


def _blkio_v1(path: Path) -> tuple[int | None, int | None]:
    """``blkio.*io_service_bytes*``: ``MAJ:MIN Read|Write|... N`` per device, and ``Total N``."""
    text = _read_text(path)
    if text is None:
        return None, None
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            write += int(parts[2])
    return read, write


def _working_set(usage: int | None, stat: Mapping[str, int], inactive_key: str) -> int | None:
    if usage is None:
        return None
    return max(0, usage - stat.get(inactive_key, 0))


def read_v2(path: Path) -> ContainerUsage:
    """Read a cgroup v2 folder; files that are missing or unreadable give ``None``."""
    memory = _working_set(
        _read_int(path / "memory.current"), _read_keyed(path / "memory.stat"), "inactive_file"
    )
    cpu = _read_keyed(path / "cpu.stat")
    io_read, io_write = _io_stat_v2(path / "io.stat")
    return ContainerUsage(
        memory_bytes=memory,
        memory_limit_bytes=_read_int(path / "memory.max"),
        cpu_usec=cpu.get("usage_usec"),
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_usec=cpu.get("throttled_usec"),
        pids=_read_int(path / "pids.current"),
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        source="cgroup2",
    )


def read_v1(dirs: Mapping[str, Path]) -> ContainerUsage:
    """Read cgroup v1 folders (controller -> folder); a controller not given gives ``None``."""
    memory = limit = cpu_usec = pids = io_read = io_write = None
    cpu: dict[str, int] = {}
    if (d := dirs.get("memory")) is not None:
        memory = _working_set(
            _read_int(d / "memory.usage_in_bytes"),
            _read_keyed(d / "memory.stat"),
            "total_inactive_file",
        )
        limit = _read_int(d / "memory.limit_in_bytes")
        if limit is not None and limit >= _UNLIMITED:
            limit = None
    if (d := dirs.get("cpuacct")) is not None:
        usage_ns = _read_int(d / "cpuacct.usage")
        cpu_usec = usage_ns // 1000 if usage_ns is not None else None
    if (d := dirs.get("cpu")) is not None:
        cpu = _read_keyed(d / "cpu.stat")
    if (d := dirs.get("pids")) is not None:
        pids = _read_int(d / "pids.current")
    if (d := dirs.get("blkio")) is not None:
        for name in (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
            "blkio.io_service_bytes_recursive",
        ):
            io_read, io_write = _blkio_v1(d / name)
            if io_read is not None:
                break
    throttled_ns = cpu.get("throttled_time")
    return ContainerUsage(
        memory_bytes=memory,
        memory_limit_bytes=limit,
        cpu_usec=cpu_usec,
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_usec=throttled_ns // 1000 if throttled_ns is not None else None,
        pids=pids,
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        source="cgroup1",
    )


def read_cgroup(path: CgroupPath) -> ContainerUsage:
    if path.version == 2:
        return read_v2(path.dirs[""])
    return read_v1(path.dirs)


# -- finding a container's cgroup --------------------------------------------------------------


class CgroupLocator:
    """Finds the cgroup of a Docker container by its full id under ``root``.

    ``parents`` are the folders (relative to the root, or to each v1 controller's folder)
    that may hold containers: ``docker`` for the cgroupfs driver, ``system.slice`` for the
    systemd driver; add dockerd's ``--cgroup-parent`` if it has one. Found paths are kept
    until the folder goes (the container is gone).
    """

    def __init__(
        self, root: Path = CGROUP_ROOT, parents: tuple[str, ...] = ("docker", "system.slice")
    ) -> None:
        self.root = root
        self.parents = parents
        self._found: dict[str, CgroupPath] = {}

    @property
    def version(self) -> int | None:
        """2 on a unified hierarchy, 1 on a legacy or hybrid one, None without cgroups."""
        if (self.root / "cgroup.controllers").is_file():
            return 2
        if (self.root / "memory").is_dir():
            return 1
        return None

    def _candidates(self, container_id: str) -> list[str]:
        out = []
        for parent in self.parents:
            out.append(f"{parent}/{container_id}")
            out.append(f"{parent}/docker-{container_id}.scope")
        return out

    def locate(self, container_id: str) -> CgroupPath | None:
        """The container's cgroup, or None when it cannot be found here."""
        if not _CONTAINER_ID.match(container_id):
            return None  # a pod name, a short id: nothing to look for
        known = self._found.get(container_id)
        if known is not None and known.exists:
            return known
        self._found.pop(container_id, None)
        found = self._search(container_id)
        if found is not None:
            self._found[container_id] = found
        return found

    def _search(self, container_id: str) -> CgroupPath | None:
        version = self.version
        if version == 2:
            for rel in self._candidates(container_id):
                d = self.root / rel
                if (d / "cgroup.procs").exists():
                    return CgroupPath(2, {"": d})
            return None
        if version == 1:
            for rel in self._candidates(container_id):
                dirs = {
                    c: self.root / c / rel
                    for c in V1_CONTROLLERS
                    if (self.root / c / rel / "cgroup.procs").exists()
                }
                if dirs:
                    return CgroupPath(1, dirs)
        return None

    def forget(self, keep: set[str]) -> None:
        """Drop the paths of containers outside ``keep``."""
        for container_id in [c for c in self._found if c not in keep]:
            del self._found[container_id]


RuntimeStats = Callable[[str], Mapping[str, float]]


class ContainerMeter:
    """Reads a container's usage from its cgroup, or else from the runtime's ``stats()``.

    ``runtime_stats`` is ``ContainerRuntime.stats`` (about a second per Docker container;
    the metrics API on Kubernetes), or None to report only what the files say.
    """

    def __init__(
        self, locator: CgroupLocator | None = None, runtime_stats: RuntimeStats | None = None
    ) -> None:
        self.locator = locator or CgroupLocator()
        self.runtime_stats = runtime_stats

    def read(self, container_id: str) -> ContainerUsage:
        path = self.locator.locate(container_id)
        if path is not None:
            usage = read_cgroup(path)
            if not usage.empty:
                return usage
        return self._from_runtime(container_id)

    def reads_files(self, container_id: str) -> bool:
        """Whether this container's usage comes from its cgroup files (cheap)."""
        return self.locator.locate(container_id) is not None

    def _from_runtime(self, container_id: str) -> ContainerUsage:
        if self.runtime_stats is None:
            return ContainerUsage()
        try:
            stats = self.runtime_stats(container_id)
        except Exception as exc:  # a runtime error is "not available" for a monitor
            log.debug("no runtime stats for %s: %s", container_id, exc)
            return ContainerUsage()

        def whole(key: str) -> int | None:
            value = stats.get(key)
            return int(value) if value is not None else None

        limit = whole("memory_limit_bytes")
        return ContainerUsage(
            memory_bytes=whole("memory_bytes"),
            memory_limit_bytes=limit if limit and limit < _UNLIMITED else None,
            # A runtime that knows cumulative CPU time says so; Docker's and the metrics
            # API's answers carry only a percentage, which is not a counter.
            cpu_usec=whole("cpu_usec"),
            pids=whole("pids"),
            source="runtime" if stats else "none",
        )
