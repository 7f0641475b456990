"""The isolation tiers of :func:`summit_sdk.sandbox.sandbox_options`, as docker-py reads them.

``runc`` is the sandbox ``test_sdk_sandbox.py`` describes; ``gvisor`` is the same sandbox run
by dockerd's ``runsc`` runtime, without the pids limit that build of runsc cannot start with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from docker.types import HostConfig
from summit_sdk.sandbox import GVISOR_RUNTIME, ISOLATIONS, sandbox_options

# What docker-py sends as the container's config rather than its host config.
CREATE_KEYS = {"user", "environment", "labels", "detach"}


def host_config(options: dict[str, Any]) -> dict[str, Any]:
    """The HostConfig docker-py builds from the options (what ``docker inspect`` shows)."""
    kwargs = {k: v for k, v in options.items() if k not in CREATE_KEYS}
    return dict(HostConfig(version="1.41", **kwargs))


def test_the_tiers_are_runc_and_gvisor() -> None:
    assert ISOLATIONS == ("runc", "gvisor")
    assert GVISOR_RUNTIME == "runsc"  # the name scripts/ensure-gvisor.sh registers


def test_runc_is_the_default_and_names_no_runtime(tmp_path: Path) -> None:
    default = sandbox_options(socket_dir=tmp_path)
    assert sandbox_options(socket_dir=tmp_path, isolation="runc") == default
    assert "runtime" not in default  # dockerd's default runtime, runc
    assert host_config(default)["PidsLimit"] == 128


def test_gvisor_runs_under_runsc_without_a_pids_limit(tmp_path: Path) -> None:
    host = host_config(sandbox_options(socket_dir=tmp_path, isolation="gvisor", pids_limit=64))
    assert host["Runtime"] == "runsc"
    # runsc 20221219 fails to start a container that has one; the sandbox bounds tasks itself.
    assert "PidsLimit" not in host


def test_gvisor_keeps_every_other_option(tmp_path: Path) -> None:
    """The tier changes the kernel under the plugin, not the rest of its sandbox."""
    kwargs: dict[str, Any] = {
        "socket_dir": tmp_path,
        "memory_mb": 64,
        "cpu_percent": 150,
        "tmpfs_mb": 4,
        "tmpfs_inodes": 100,
        "nofile_limit": 256,
        "user": "2000:3000",
        "log_max_size": "1m",
        "environment": {"A": "1"},
        "labels": {"io.summit.owner": "x"},
    }
    runc = sandbox_options(**kwargs)
    gvisor = sandbox_options(**kwargs, isolation="gvisor")
    assert set(runc) - set(gvisor) == {"pids_limit"}
    assert set(gvisor) - set(runc) == {"runtime"}
    assert {k: v for k, v in gvisor.items() if k != "runtime"} == {
        k: v for k, v in runc.items() if k != "pids_limit"
    }
    host = host_config(gvisor)
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["Memory"] == host["MemorySwap"] == 64 << 20


@pytest.mark.parametrize("isolation", ["kata", "gVisor", "runsc", "", "RUNC"])
def test_an_unknown_isolation_is_a_value_error(tmp_path: Path, isolation: str) -> None:
    with pytest.raises(ValueError, match="unknown isolation") as caught:
        sandbox_options(socket_dir=tmp_path, isolation=isolation)
    assert "runc, gvisor" in str(caught.value)
