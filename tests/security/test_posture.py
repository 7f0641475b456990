"""A running plugin container, ``docker inspect``-ed against the CIS Docker Benchmark.

One test per item of section 5 (container runtime) that a container's configuration can
show, numbered as in docker-bench-security's ``tests/5_container_runtime.sh``, plus 4.1 (a
non-root user) and the log cap. Items about the daemon, exec sessions or images are outside a
plugin container's configuration and are not listed. Expected values come from the escape
plugin's manifest (256 MB, 50 % CPU) and the orchestrator's defaults.

Every check runs against both isolation tiers. Two items read differently under gVisor, and
say why where they are: the pids limit (5.28) and the host's view of the processes (5.6).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.orchestrator import OrchestratorProcess

from .conftest import PLUGIN_UID, EscapePlugin, Tier

pytestmark = [pytest.mark.docker, pytest.mark.slow]


# This module runs once per isolation tier (conftest.TIERS): its orchestrator and plugins are
# the tier's, under the names the package's fixtures have.


@pytest.fixture(scope="module")
def orch(tier: Tier) -> OrchestratorProcess:
    return tier.orch


@pytest.fixture(scope="module")
def escape(tier: Tier) -> EscapePlugin:
    return tier.escape


MIB = 1 << 20
# The OCI runtime dockerd runs each tier's containers with.
TIER_RUNTIME = {"runc": "runc", "gvisor": "runsc"}
# Where dockerd (default exec-root) keeps the state of the containers runsc runs.
RUNSC_STATE_ROOT = "/var/run/docker/runtime-runc/moby"
SENSITIVE_HOST_PATHS = {
    "/",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/proc",
    "/sys",
    "/usr",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
}

Check = Callable[[dict[str, Any]], tuple[bool, Any]]
CHECKS: list[Any] = []


def cis(item: str, slug: str) -> Callable[[Check], Check]:
    """Register a check of one benchmark item; the test id reads ``5.4-not-privileged``."""

    def register(check: Check) -> Check:
        CHECKS.append(pytest.param(item, check, id=f"{item}-{slug}"))
        return check

    return register


@cis("4.1", "runs-as-a-non-root-user")
def _user(c: dict[str, Any]) -> tuple[bool, Any]:
    user = c["Config"]["User"]
    return user == f"{PLUGIN_UID}:{PLUGIN_UID}", user


@cis("5.3", "capabilities-all-dropped-none-added")
def _capabilities(c: dict[str, Any]) -> tuple[bool, Any]:
    host = c["HostConfig"]
    return not host["CapAdd"] and host["CapDrop"] == ["ALL"], (host["CapAdd"], host["CapDrop"])


@cis("5.4", "not-privileged")
def _privileged(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["Privileged"] is False, c["HostConfig"]["Privileged"]


@cis("5.5", "no-sensitive-host-directory-mounted")
def _mounts(c: dict[str, Any]) -> tuple[bool, Any]:
    mounts = [(m["Type"], m["Source"], m["Destination"]) for m in c["Mounts"]]
    # Only the socket folder, whose host path test_socket_folder_is_private_to_its_container checks.
    only_socket_folder = [(kind, dest) for kind, _, dest in mounts] == [("bind", "/run/summit")]
    sensitive = [m for m in mounts if m[1] in SENSITIVE_HOST_PATHS]
    volumes_from = c["HostConfig"]["VolumesFrom"]
    return only_socket_folder and not sensitive and not volumes_from, (mounts, volumes_from)


@cis("5.7", "no-ports-mapped")
def _ports(c: dict[str, Any]) -> tuple[bool, Any]:
    host = c["HostConfig"]
    published = c["NetworkSettings"]["Ports"]
    ok = not host["PortBindings"] and not host["PublishAllPorts"] and not published
    return ok, (host["PortBindings"], host["PublishAllPorts"], published)


@cis("5.9", "host-network-not-shared")
def _network(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["NetworkMode"] == "none", c["HostConfig"]["NetworkMode"]


@cis("5.10", "memory-limited-without-extra-swap")
def _memory(c: dict[str, Any]) -> tuple[bool, Any]:
    host = c["HostConfig"]
    return host["Memory"] == 256 * MIB == host["MemorySwap"], (host["Memory"], host["MemorySwap"])


@cis("5.11", "cpu-quota-from-cpu-percent")
def _cpu(c: dict[str, Any]) -> tuple[bool, Any]:
    # The benchmark asks for CPU shares; a hard quota (50 % of one CPU) is the stricter form.
    return c["HostConfig"]["NanoCpus"] == 500_000_000, c["HostConfig"]["NanoCpus"]


@cis("5.12", "root-filesystem-read-only")
def _read_only(c: dict[str, Any]) -> tuple[bool, Any]:
    host = c["HostConfig"]
    tmpfs = host["Tmpfs"] or {}
    tmp_options = set(tmpfs.get("/tmp", "").split(","))
    writable_tmp_only = set(tmpfs) == {"/tmp"}
    small_noexec = {"noexec", "nosuid", "nodev", "size=16m"} <= tmp_options
    ok = host["ReadonlyRootfs"] is True and writable_tmp_only and small_noexec
    return ok, (host["ReadonlyRootfs"], tmpfs)


@cis("5.14", "docker-never-restarts-it")
def _restart(c: dict[str, Any]) -> tuple[bool, Any]:
    # Stricter than the benchmark's on-failure:5: the orchestrator restarts plugins itself,
    # with backoff and a crash limit, and a Docker restart would bypass both.
    policy = c["HostConfig"]["RestartPolicy"]
    return policy["Name"] in ("", "no"), policy


@cis("5.15", "host-pid-namespace-not-shared")
def _pid(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["PidMode"] == "", c["HostConfig"]["PidMode"]


@cis("5.16", "host-ipc-namespace-not-shared")
def _ipc(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["IpcMode"] == "private", c["HostConfig"]["IpcMode"]


@cis("5.17", "no-host-devices")
def _devices(c: dict[str, Any]) -> tuple[bool, Any]:
    host = c["HostConfig"]
    return not host["Devices"] and not host["DeviceRequests"], host["Devices"]


@cis("5.19", "mount-propagation-not-shared")
def _propagation(c: dict[str, Any]) -> tuple[bool, Any]:
    modes = [m.get("Propagation", "") for m in c["Mounts"]]
    return not any("shared" in mode for mode in modes), modes


@cis("5.20", "host-uts-namespace-not-shared")
def _uts(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["UTSMode"] == "", c["HostConfig"]["UTSMode"]


@cis("5.21", "seccomp-not-unconfined")
def _seccomp(c: dict[str, Any]) -> tuple[bool, Any]:
    options = c["HostConfig"]["SecurityOpt"] or []
    return not any(o.replace("=", ":") == "seccomp:unconfined" for o in options), options


@cis("5.24", "cgroup-parent-is-dockers-own")
def _cgroup(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["CgroupParent"] == "", c["HostConfig"]["CgroupParent"]


@cis("5.25", "no-new-privileges")
def _no_new_privileges(c: dict[str, Any]) -> tuple[bool, Any]:
    options = c["HostConfig"]["SecurityOpt"] or []
    return "no-new-privileges:true" in options, options


@cis("5.29", "not-on-the-default-bridge")
def _bridge(c: dict[str, Any]) -> tuple[bool, Any]:
    networks = list(c["NetworkSettings"]["Networks"])
    return networks == ["none"], networks


@cis("5.30", "host-user-namespace-not-shared")
def _userns(c: dict[str, Any]) -> tuple[bool, Any]:
    return c["HostConfig"]["UsernsMode"] != "host", c["HostConfig"]["UsernsMode"]


@cis("5.31", "docker-socket-not-mounted")
def _docker_socket(c: dict[str, Any]) -> tuple[bool, Any]:
    sources = [m["Source"] for m in c["Mounts"]]
    return not any(s.endswith("docker.sock") for s in sources), sources


@pytest.fixture(scope="module")
def inspected(escape: EscapePlugin, docker_client: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = escape.container(docker_client).attrs
    assert attrs["State"]["Running"], attrs["State"]
    return attrs


@pytest.mark.parametrize(("item", "check"), CHECKS)
def test_cis_docker_benchmark(item: str, check: Check, inspected: dict[str, Any]) -> None:
    ok, seen = check(inspected)
    assert ok, f"CIS Docker Benchmark {item} ({check.__name__.strip('_')}): {seen}"


def test_it_runs_under_its_tiers_runtime(tier: Tier, inspected: dict[str, Any]) -> None:
    """Not a benchmark item: the orchestrator's isolation setting reached the container."""
    assert inspected["HostConfig"]["Runtime"] == TIER_RUNTIME[tier.isolation]


def test_cis_5_28_pids_limit(tier: Tier, inspected: dict[str, Any]) -> None:
    pids_limit = inspected["HostConfig"]["PidsLimit"]
    if tier.isolation == "runc":
        assert pids_limit == 128
        return
    # Under gVisor the pids cgroup counts the sandbox's own host threads (its kernel's and the
    # ptrace platform's stub processes), not the plugin's processes: at 32 the container never
    # starts, at 128 a plugin that forks takes the whole sandbox down ("panic: error
    # initializing first thread: resource temporarily unavailable") where runc would answer
    # EAGAIN. So none is set; the memory limit stops a fork bomb (test_escape.py).
    assert pids_limit in (None, 0), pids_limit


def test_cis_5_6_only_the_plugin_runs(tier: Tier, escape: EscapePlugin, docker_client: Any) -> None:
    """5.6 (no sshd), read as: nothing but the plugin's own runtime runs, as its own user."""
    if tier.isolation == "runc":
        top = escape.container(docker_client).top(ps_args="-o uid,pid,args")
        rows = [dict(zip(top["Titles"], row, strict=True)) for row in top["Processes"]]
        assert [r["COMMAND"] for r in rows] == ["python -m summit_sdk.runtime"], rows
        assert {r["UID"] for r in rows} == {PLUGIN_UID}, rows
        return
    # `docker top` cannot see into gVisor: runsc reports the sandbox's own process ids, and
    # dockerd looks those up among the host's (the sandbox's pid 1 shows as the host's init).
    # runsc's own `ps` reads the sandbox's process table from the host side.
    done = subprocess.run(
        ["runsc", "--root", RUNSC_STATE_ROOT, "ps", escape.container_id],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    rows = [dict(zip(header.split(), line.split(), strict=False)) for line in lines]
    assert [(r["UID"], r["PID"], r["CMD"]) for r in rows] == [(PLUGIN_UID, "1", "python")], rows


def test_socket_folder_is_private_to_its_container(
    orch: OrchestratorProcess, inspected: dict[str, Any]
) -> None:
    """5.5's one allowed mount: the per-container folder the orchestrator made for it."""
    (mount,) = inspected["Mounts"]
    run_dir = (orch.state_dir / "run").resolve()
    assert mount["Source"].startswith(f"{run_dir}/"), mount
    assert mount["Source"].count("/") == str(run_dir).count("/") + 1, mount
    assert mount["RW"] is True and mount["Propagation"] == "rprivate", mount


def test_logs_are_capped(inspected: dict[str, Any]) -> None:
    """Not a section 5 item, but the sandbox's: a plugin cannot fill the host's disk by logging."""
    assert inspected["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "2", "max-size": "5m"},
    }
