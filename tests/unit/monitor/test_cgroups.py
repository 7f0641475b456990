"""Reading a container's cgroup files: both cgroup versions, both Docker drivers, and the
fall-back to the runtime's stats where there are no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.monitor.cgroups import CgroupLocator, ContainerMeter, read_v1, read_v2

CID = "ab" * 32


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cgroup.procs").write_text("1\n")
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


V2_FILES = {
    "memory.current": "73400320\n",
    "memory.stat": "anon 60000000\nfile 13400320\ninactive_file 5000000\nactive_file 100\n",
    "memory.max": "134217728\n",
    "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
    "nr_periods 100\nnr_throttled 40\nthrottled_usec 800000\n",
    "pids.current": "7\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
    "8:16 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
}


def v2_root(tmp_path: Path, layout: str) -> Path:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    rel = f"docker/{CID}" if layout == "cgroupfs" else f"system.slice/docker-{CID}.scope"
    write(root / rel, V2_FILES)
    return root


@pytest.mark.parametrize("layout", ["cgroupfs", "systemd"])
def test_v2_both_drivers(tmp_path: Path, layout: str) -> None:
    meter = ContainerMeter(CgroupLocator(v2_root(tmp_path, layout)))
    usage = meter.read(CID)
    assert usage.source == "cgroup2"
    assert usage.memory_bytes == 73400320 - 5000000  # working set: less inactive file cache
    assert usage.memory_limit_bytes == 134217728
    assert usage.cpu_usec == 2500000
    assert (usage.cpu_periods, usage.cpu_throttled_periods) == (100, 40)
    assert usage.cpu_throttled_usec == 800000
    assert usage.pids == 7
    assert (usage.io_read_bytes, usage.io_write_bytes) == (5096, 8192)


def test_v2_unlimited_and_missing_files_are_none(tmp_path: Path) -> None:
    folder = write(tmp_path / "c", {"memory.current": "1000\n", "memory.max": "max\n"})
    usage = read_v2(folder)
    assert usage.memory_bytes == 1000
    assert usage.memory_limit_bytes is None
    assert usage.cpu_usec is None and usage.pids is None and usage.io_read_bytes is None


V1_FILES = {
    "memory": {
        "memory.usage_in_bytes": "34578432\n",
        "memory.limit_in_bytes": "67108864\n",
        "memory.stat": "cache 28672\nrss 34144256\ntotal_inactive_file 8192\n",
    },
    "cpu": {"cpu.stat": "nr_periods 6\nnr_throttled 1\nthrottled_time 14464095\n"},
    "cpuacct": {"cpuacct.usage": "132154559\n"},
    "pids": {"pids.current": "3\n"},
    "blkio": {
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\n"
        "8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n"
    },
}


@pytest.mark.parametrize("layout", ["cgroupfs", "systemd"])
def test_v1_both_drivers(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "cg"
    rel = f"docker/{CID}" if layout == "cgroupfs" else f"system.slice/docker-{CID}.scope"
    for controller, files in V1_FILES.items():
        write(root / controller / rel, files)
    usage = ContainerMeter(CgroupLocator(root)).read(CID)
    assert usage.source == "cgroup1"
    assert usage.memory_bytes == 34578432 - 8192
    assert usage.memory_limit_bytes == 67108864
    assert usage.cpu_usec == 132154
    assert (usage.cpu_periods, usage.cpu_throttled_periods) == (6, 1)
    assert usage.cpu_throttled_usec == 14464
    assert usage.pids == 3
    assert (usage.io_read_bytes, usage.io_write_bytes) == (4096, 512)


def test_v1_unlimited_memory_is_none(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        {"memory.usage_in_bytes": "10\n", "memory.limit_in_bytes": str(2**63 - 4096)},
    )
    usage = read_v1({"memory": folder})
    assert usage.memory_bytes == 10 and usage.memory_limit_bytes is None


def test_garbage_in_a_file_is_none_not_an_error(tmp_path: Path) -> None:
    folder = write(tmp_path / "c", {"memory.current": "lots\n", "cpu.stat": "usage_usec x\n"})
    usage = read_v2(folder)
    assert usage.memory_bytes is None and usage.cpu_usec is None


def test_not_found_falls_back_to_the_runtime(tmp_path: Path) -> None:
    asked: list[str] = []

    def stats(container_id: str) -> dict[str, float]:
        asked.append(container_id)
        return {"memory_bytes": 5e6, "memory_limit_bytes": 6.4e7, "cpu_percent": 3.0, "pids": 2}

    meter = ContainerMeter(CgroupLocator(v2_root(tmp_path, "cgroupfs")), runtime_stats=stats)
    other = "cd" * 32
    usage = meter.read(other)
    assert asked == [other]
    assert usage.source == "runtime"
    assert (usage.memory_bytes, usage.memory_limit_bytes, usage.pids) == (5000000, 64000000, 2)
    assert usage.cpu_usec is None  # a percentage is not a counter: not available


def test_pod_names_are_never_paths_and_runtime_errors_are_not_available(tmp_path: Path) -> None:
    def broken(_container_id: str) -> dict[str, float]:
        raise RuntimeError("metrics API away")

    locator = CgroupLocator(v2_root(tmp_path, "cgroupfs"))
    assert locator.locate("../../etc") is None
    assert locator.locate("summit-com-example-abc") is None
    usage = ContainerMeter(locator, runtime_stats=broken).read("summit-com-example-abc")
    assert usage.source == "none" and usage.memory_bytes is None


def test_a_vanished_cgroup_is_looked_up_again(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "cgroupfs")
    locator = CgroupLocator(root)
    assert locator.locate(CID) is not None
    import shutil

    shutil.rmtree(root / "docker" / CID)
    assert locator.locate(CID) is None
    assert ContainerMeter(locator).read(CID).source == "none"
