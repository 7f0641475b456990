"""The sandbox every plugin container runs in, as keyword arguments of docker-py's
``containers.create`` / ``containers.run``.

The orchestrator (``orchestrator/runtime/docker.py``), ``summit-plugin run`` / ``verify`` and
the cold-start benchmark start plugin containers with :func:`sandbox_options`, so an author
meets the sandbox the orchestrator applies, and the benchmark's floor is that same container.

No network stack (``network_mode: none``): the plugin protocol is served on a unix socket in a
folder the caller creates and bind-mounts at :data:`SOCKET_MOUNT`, the one host path a plugin
sees. A non-root user, a read-only root with a small ``noexec`` tmpfs ``/tmp`` capped in bytes
and in inodes (empty files cost no bytes but each takes kernel memory), every capability
dropped, ``no-new-privileges``, the default seccomp profile, a private IPC namespace, pids,
memory (no swap beyond it), CPU and open-files limits, and a capped log.

Two isolation tiers (:data:`ISOLATIONS`): ``runc``, the default, where the plugin's system calls
meet the host's kernel through namespaces and seccomp; and ``gvisor``, where dockerd runs the
container with gVisor's ``runsc`` (:data:`GVISOR_RUNTIME`, registered by
``scripts/ensure-gvisor.sh``) and those calls meet a user-space kernel instead.

The options are plain data (docker-py turns them into its own types), so this module needs
neither docker-py nor a daemon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "GVISOR_RUNTIME",
    "HOST_SOCKET_NAME",
    "ISOLATIONS",
    "LISTEN",
    "PLUGIN_USER",
    "SOCKET_MOUNT",
    "SOCKET_NAME",
    "open_socket_dir",
    "sandbox_options",
]

SOCKET_MOUNT: Final = "/run/summit"
SOCKET_NAME: Final = "plugin.sock"  # the plugin's own socket, in the mounted folder
HOST_SOCKET_NAME: Final = "host.sock"  # the host API's socket, beside it
LISTEN: Final = f"unix://{SOCKET_MOUNT}/{SOCKET_NAME}"  # SUMMIT_PLUGIN_LISTEN in the container
PLUGIN_USER: Final = "10001:10001"  # the base images' ``summit`` user

DEFAULT_MEMORY_MB: Final = 256
DEFAULT_CPU_PERCENT: Final = 50
DEFAULT_PIDS_LIMIT: Final = 128
DEFAULT_TMPFS_MB: Final = 16
DEFAULT_TMPFS_INODES: Final = 4096
DEFAULT_NOFILE_LIMIT: Final = 1024  # below the orchestrator's own
DEFAULT_LOG_MAX_SIZE: Final = "5m"

ISOLATIONS: Final = ("runc", "gvisor")
GVISOR_RUNTIME: Final = "runsc"  # the name scripts/ensure-gvisor.sh gives it in dockerd


def open_socket_dir(path: Path, user: str = PLUGIN_USER) -> None:
    """Let the plugin's ``user`` bind its socket in the existing folder ``path``: the folder
    becomes that user's own (0700) when this process is root, else writable by all."""
    if os.geteuid() == 0:
        uid, _, gid = user.partition(":")
        os.chown(path, int(uid), int(gid or uid))
        path.chmod(0o700)
    else:
        path.chmod(0o777)


def sandbox_options(
    *,
    socket_dir: str | Path,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cpu_percent: int = DEFAULT_CPU_PERCENT,
    pids_limit: int = DEFAULT_PIDS_LIMIT,
    tmpfs_mb: int = DEFAULT_TMPFS_MB,
    tmpfs_inodes: int = DEFAULT_TMPFS_INODES,
    nofile_limit: int = DEFAULT_NOFILE_LIMIT,
    user: str = PLUGIN_USER,
    log_max_size: str = DEFAULT_LOG_MAX_SIZE,
    environment: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    isolation: str = "runc",
) -> dict[str, Any]:
    """Every keyword of a sandboxed plugin container but the image and its name.

    ``socket_dir`` is the host folder mounted at :data:`SOCKET_MOUNT`; the container is told
    to listen there (``SUMMIT_PLUGIN_LISTEN``, over any value in ``environment``).
    ``cpu_percent`` is of one CPU (150 = one and a half). ``isolation`` is one of
    :data:`ISOLATIONS`, anything else a ValueError; under ``gvisor`` ``pids_limit`` is not
    applied (see below).
    """
    if isolation not in ISOLATIONS:
        raise ValueError(
            f"unknown isolation {isolation!r}: expected one of {', '.join(ISOLATIONS)}"
        )
    memory = f"{memory_mb}m"
    options: dict[str, Any] = {
        "user": user,
        "environment": {**(environment or {}), "SUMMIT_PLUGIN_LISTEN": LISTEN},
        "labels": dict(labels or {}),
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"rw,noexec,nosuid,nodev,size={tmpfs_mb}m,nr_inodes={tmpfs_inodes},mode=1777"
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": pids_limit,
        "ulimits": [{"name": "nofile", "soft": nofile_limit, "hard": nofile_limit}],
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": cpu_percent * 10_000_000,
        "ipc_mode": "private",
        "mounts": [
            {"Target": SOCKET_MOUNT, "Source": str(socket_dir), "Type": "bind", "ReadOnly": False}
        ],
        "log_config": {"type": "json-file", "config": {"max-size": log_max_size, "max-file": "2"}},
        "detach": True,
    }
    if isolation == "gvisor":
        options["runtime"] = GVISOR_RUNTIME
        # No pids limit: with runsc 0.0~20221219 (Debian bookworm) the pids cgroup counts the
        # sandbox's own host threads and the ptrace platform's stub processes (about 47 for
        # an idle plugin), not the plugin's processes. Over it the sandbox dies instead of
        # the plugin's fork() failing with EAGAIN: "panic: error initializing first thread:
        # resource temporarily unavailable" (exit 2) at 40 during start-up, or at 128 on the
        # plugin's first burst of forks; at 32 `runsc start` hangs; elsewhere it has been seen
        # as `urpc method "containerManager.StartRoot" failed: EOF`. The memory limit, which
        # every task of the sandbox counts against, stops a fork bomb instead (OOM kill).
        del options["pids_limit"]
    return options
