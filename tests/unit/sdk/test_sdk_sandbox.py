"""The one sandbox of plugin containers (:mod:`summit_sdk.sandbox`), as docker-py reads it.

The orchestrator, ``summit-plugin run`` / ``verify`` and the cold-start benchmark start
containers with these options; ``tests/security/test_posture.py`` inspects a real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from docker.types import HostConfig, LogConfig, Mount, Ulimit
from summit_sdk.sandbox import LISTEN, PLUGIN_USER, SOCKET_MOUNT, sandbox_options

MIB = 1 << 20
# What docker-py sends as the container's config rather than its host config.
CREATE_KEYS = {"user", "environment", "labels", "detach"}


def host_config(options: dict[str, Any]) -> dict[str, Any]:
    """The HostConfig docker-py builds from the options (what ``docker inspect`` shows)."""
    kwargs = {k: v for k, v in options.items() if k not in CREATE_KEYS}
    return dict(HostConfig(version="1.41", **kwargs))


def test_defaults_are_the_designs_sandbox(tmp_path: Path) -> None:
    options = sandbox_options(socket_dir=tmp_path)
    assert options["user"] == PLUGIN_USER == "10001:10001"
    assert options["environment"] == {"SUMMIT_PLUGIN_LISTEN": LISTEN}
    assert LISTEN == "unix:///run/summit/plugin.sock"
    assert options["detach"] is True
    host = host_config(options)
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert "Privileged" not in host and "Binds" not in host
    assert host["IpcMode"] == "private"
    assert host["PidsLimit"] == 128
    assert host["Memory"] == host["MemorySwap"] == 256 * MIB, "no swap beyond the memory limit"
    assert host["NanoCpus"] == 500_000_000  # 50 % of one CPU
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=16m,nr_inodes=4096,mode=1777"}
    assert host["Ulimits"] == [Ulimit(name="nofile", soft=1024, hard=1024)]
    assert host["Mounts"] == [Mount(SOCKET_MOUNT, str(tmp_path), type="bind", read_only=False)]
    assert host["LogConfig"] == LogConfig(
        type="json-file", config={"max-size": "5m", "max-file": "2"}
    )


@pytest.mark.parametrize(
    ("limit", "value", "key", "expected"),
    [
        ("memory_mb", 64, "Memory", 64 * MIB),
        ("memory_mb", 64, "MemorySwap", 64 * MIB),
        ("cpu_percent", 150, "NanoCpus", 1_500_000_000),
        ("pids_limit", 32, "PidsLimit", 32),
        (
            "tmpfs_mb",
            4,
            "Tmpfs",
            {"/tmp": "rw,noexec,nosuid,nodev,size=4m,nr_inodes=4096,mode=1777"},
        ),
        (
            "tmpfs_inodes",
            100,
            "Tmpfs",
            {"/tmp": "rw,noexec,nosuid,nodev,size=16m,nr_inodes=100,mode=1777"},
        ),
        ("nofile_limit", 256, "Ulimits", [Ulimit(name="nofile", soft=256, hard=256)]),
        (
            "log_max_size",
            "1m",
            "LogConfig",
            LogConfig(type="json-file", config={"max-size": "1m", "max-file": "2"}),
        ),
    ],
)
def test_every_limit_is_a_parameter(
    tmp_path: Path, limit: str, value: Any, key: str, expected: Any
) -> None:
    assert host_config(sandbox_options(socket_dir=tmp_path, **{limit: value}))[key] == expected


def test_the_user_and_the_socket_folder_are_parameters(tmp_path: Path) -> None:
    options = sandbox_options(socket_dir=tmp_path / "sock", user="2000:3000")
    assert options["user"] == "2000:3000"
    assert host_config(options)["Mounts"][0]["Source"] == str(tmp_path / "sock")


@pytest.mark.parametrize(
    "environment",
    [{"SUMMIT_PLUGIN_LISTEN": "tcp://0.0.0.0:8080"}, {"A": "1"}],
)
def test_the_container_always_listens_on_the_mounted_socket(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    options = sandbox_options(
        socket_dir=tmp_path, environment=environment, labels={"io.summit.owner": "x"}
    )
    assert options["environment"]["SUMMIT_PLUGIN_LISTEN"] == LISTEN
    assert options["environment"].get("A") == environment.get("A")
    assert options["labels"] == {"io.summit.owner": "x"}
