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

The options are plain data (docker-py turns them into its own types), so this module needs
neither docker-py nor a daemon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "HOST_SOCKET_NAME",
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
) -> dict[str, Any]:
    """Every keyword of a sandboxed plugin container but the image and its name.

    ``socket_dir`` is the host folder mounted at :data:`SOCKET_MOUNT`; the container is told
    to listen there (``SUMMIT_PLUGIN_LISTEN``, over any value in ``environment``).
    ``cpu_percent`` is of one CPU (150 = one and a half).
    """
    memory = f"{memory_mb}m"
    return {
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
