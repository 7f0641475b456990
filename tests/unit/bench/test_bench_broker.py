"""The figures ``bench/broker.py`` derives from what it measured (no benchmark is run here)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("broker")
    monkeypatch.setattr(module, "nproc", lambda: 2)
    return module


def series(broker: ModuleType, name: str, p50_ms: float, calls: int, cpu_s: dict) -> object:
    s = broker.Series(name, latencies_ms=[p50_ms] * calls, elapsed_s=1.0)
    s.cpu_s = cpu_s
    return s


def test_cpu_floor_is_the_cpu_per_call_over_the_cpus(broker: ModuleType) -> None:
    one = series(broker, "x1", 1.0, 100, {"client": 0.05, "orchestrator": 0.05, "plugins": 0.03})
    # 10 calls that cost 20 ms of CPU each: 2 client, 4 orchestrator, 14 plugins.
    twenty = series(
        broker, "x20", 12.0, 10, {"client": 0.02, "orchestrator": 0.04, "plugins": 0.14}
    )
    [line] = broker.cpu_floor({1: one, 20: twenty}, 1, 20)
    assert "CPU per call: 20.00 ms (client 2.00, orchestrator 4.00, plugins 14.00)" in line
    assert "less than 10.00 ms = 10.00 x the x1 p50" in line
    assert "plugins' share alone needs 7.00 ms = 7.00 x" in line
    assert "measured p50 12.00 ms is 1.20 x that floor" in line


def test_no_floor_without_the_plugins_cpu(broker: ModuleType) -> None:
    # A plugin process whose CPU could not be read (it exited, say): no made-up figure.
    one = series(broker, "x1", 1.0, 10, {"client": 0.01, "orchestrator": 0.01, "plugins": 0.01})
    twenty = series(broker, "x20", 9.0, 10, {"client": 0.01, "orchestrator": 0.03, "plugins": None})
    assert broker.cpu_floor({1: one, 20: twenty}, 1, 20) == []


@pytest.mark.parametrize("async_handler", [False, True])
def test_copies_of_the_example_carry_their_id_and_handler_kind(
    broker: ModuleType, tmp_path: Path, async_handler: bool
) -> None:
    dest = broker.make_copy(
        tmp_path / "copy", "com.example.bench-x-01", async_handler=async_handler
    )
    assert "id: com.example.bench-x-01\n" in (dest / "plugin.yaml").read_text()
    source = (dest / "word_count.py").read_text()
    assert '"com.example.bench-x-01"' in source and broker.ORIGINAL_ID not in source
    assert ("\nasync def analyze(" in source) is async_handler
    assert not (dest / "tests").exists()
