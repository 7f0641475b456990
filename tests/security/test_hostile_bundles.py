"""Hostile source bundles and manifests posted to a running orchestrator (issue 13).

Each attack goes through the real install API while a thread polls ``/healthz``: the attack
must be refused with its own status and code, write nothing outside the bundle folder, leave
nothing under the state folder, and never hold the orchestrator long enough for a health
check to go unanswered for a second.
"""

from __future__ import annotations

import contextlib
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.fixtures.hostile_bundles import (
    MKDTEMP_SUFFIX,
    alias_bomb,
    file,
    make_tar,
    pax_padding,
    special,
    symlink_chain,
    with_pax,
)
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.waiting import wait_until

from .test_escape import PeakMemory

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MIB = 1 << 20
# Asks for a permission no test approves: were a hostile bundle ever let through, its install
# would stop at approval (409) instead of building an image.
MANIFEST = b"""schema_version: 1
id: com.summit-tests.hostile
name: Hostile
version: 1.0.0
runtime: { base: python, entrypoint: hostile:plugin }
permissions: [storage]
"""
# What an attack may take, end to end, on a busy two-core machine; the unfixed orchestrator
# took 9 s (alias bomb) or froze for minutes (a pax header full of digits).
ANSWER_WITHIN_S = 5.0


class HealthWatch:
    """Polls ``/healthz`` from a thread; every answer must come within a second."""

    def __init__(self, orch: OrchestratorProcess) -> None:
        self.url = f"{orch.url}/healthz"
        self.misses: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.wait(0.05):
                start = time.monotonic()
                try:
                    r = client.get(self.url)
                    took = time.monotonic() - start
                    if r.status_code != 200 or took > 1.0:
                        self.misses.append(f"{r.status_code} after {took:.2f}s")
                except httpx.HTTPError as exc:
                    self.misses.append(
                        f"{type(exc).__name__} after {time.monotonic() - start:.2f}s"
                    )
                self.polls += 1

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A few polls even when the attack is refused at once.
        wait_until(lambda: self.polls >= 3, 10, "three health checks")
        self._stop.set()
        self._thread.join(5)


def state_leftovers(orch: OrchestratorProcess) -> list[str]:
    """What bundle unpacking and queued uploads left under the state folder."""
    found = []
    for folder in ("bundles", "uploads"):
        root = orch.state_dir / folder
        if root.exists():
            found += sorted(str(p.relative_to(orch.state_dir)) for p in root.rglob("*"))
    return found


@contextlib.contextmanager
def attack(orch: OrchestratorProcess) -> Iterator[HealthWatch]:
    before = state_leftovers(orch)
    with HealthWatch(orch) as watch:
        yield watch
    assert watch.misses == [], f"/healthz went unanswered during the attack: {watch.misses}"
    assert state_leftovers(orch) == before


def post_bundle(
    orch: OrchestratorProcess, data: bytes, **params: str
) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = orch.client.post(
        "/v1/plugins",
        params=params,
        files={"bundle": ("hostile.tar.gz", data, "application/gzip")},
    )
    return r, time.monotonic() - start


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    return error


def bundle_dir_length(orch: OrchestratorProcess) -> int:
    """Length of the real path of the folder a bundle is unpacked into."""
    return len(str((orch.state_dir / "bundles").resolve())) + len("/bundle-") + MKDTEMP_SUFFIX


# -- links ------------------------------------------------------------------------------------


def test_symlink_chain_writes_nothing_outside_the_bundle(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    target = tmp_path / "outside"
    target.mkdir()
    data = make_tar(
        file("plugin.yaml", MANIFEST), *symlink_chain(str(target), bundle_dir_length(orch))
    )
    with attack(orch):
        r, took = post_bundle(orch, data)
    error = error_of(r, 400, "invalid_bundle")
    assert error["details"]["member"] == "a", error  # the first link, named
    assert "link" in error["message"]
    assert list(target.iterdir()) == [], "a file was written outside the bundle"
    assert took < ANSWER_WITHIN_S


def test_symlink_chain_queued_for_a_worker_writes_nothing_outside(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    target = tmp_path / "outside"
    target.mkdir()
    data = make_tar(
        file("plugin.yaml", MANIFEST), *symlink_chain(str(target), bundle_dir_length(orch))
    )
    with attack(orch):
        r, _ = post_bundle(orch, data, **{"async": "true"})
        assert r.status_code == 202, r.text
        job_url = f"/v1/jobs/{r.json()['job_id']}"
        job = wait_until(
            lambda: (j := orch.client.get(job_url).json())["status"] == "failed" and j,
            30,
            "the install job to fail",
        )
    assert job["attempts"] == 1 and job["error"]["code"] == "invalid_bundle", job
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    "link",
    [
        special("lib/alias.py", tarfile.SYMTYPE, "real.py"),
        special("lib/alias.py", tarfile.LNKTYPE, "lib/real.py"),
    ],
    ids=["symlink", "hardlink"],
)
def test_links_are_refused_even_inside_the_bundle(
    orch: OrchestratorProcess, link: tuple[tarfile.TarInfo, None]
) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("lib/real.py", b"X = 1\n"), link)
    with attack(orch):
        r, _ = post_bundle(orch, data)
    error = error_of(r, 400, "invalid_bundle")
    assert error["details"]["member"] == "lib/alias.py"
    assert "lib/alias.py" in error["message"]


# -- header bombs -----------------------------------------------------------------------------


def test_one_huge_pax_header_is_refused_before_it_is_read(orch: OrchestratorProcess) -> None:
    # The report's bomb: a small gzip whose pax header unpacks to 128 MiB.
    data = make_tar(file("plugin.yaml", MANIFEST), with_pax(file("x"), comment="A" * 128 * MIB))
    assert len(data) < 300_000
    memory = PeakMemory(orch)
    with attack(orch):
        r, took = post_bundle(orch, data)
    error_of(r, 413, "bundle_too_large")
    assert memory.growth_mb() < 64
    assert took < ANSWER_WITHIN_S


def test_pax_headers_past_the_decompressed_budget_are_refused(orch: OrchestratorProcess) -> None:
    # Each header is of an ordinary size; together they pass SUMMIT_BUNDLE_MAX_BYTES (50 MiB).
    data = make_tar(file("plugin.yaml", MANIFEST), *pax_padding(1000, 60_000))
    assert len(data) < 1 * MIB
    memory = PeakMemory(orch)
    with attack(orch):
        r, took = post_bundle(orch, data)
    error = error_of(r, 413, "bundle_too_large")
    assert error["details"]["limit_bytes"] == 50 * MIB
    assert memory.growth_mb() < 64
    assert took < ANSWER_WITHIN_S


def test_pax_header_full_of_digits_is_read_in_linear_time(orch: OrchestratorProcess) -> None:
    # Python 3.11.7's tarfile searches pax headers with a regex that is quadratic on a run of
    # digits, holding the GIL: 60 kB of them froze the process for about 4 s a header.
    data = make_tar(*pax_padding(2, 60_000, fill="1"))
    with attack(orch):
        r, took = post_bundle(orch, data)
    assert "plugin.yaml" in error_of(r, 400, "invalid_bundle")["message"]
    assert took < ANSWER_WITHIN_S


# -- manifests --------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_while_parsing(orch: OrchestratorProcess) -> None:
    text = alias_bomb(MANIFEST)
    assert len(text) < 1500
    memory = PeakMemory(orch)
    with attack(orch):
        r, took = post_bundle(orch, make_tar(file("plugin.yaml", text)))
    error = error_of(r, 422, "invalid_manifest")
    [detail] = error["details"]
    assert detail["path"].startswith("line 9, ")  # the first anchor (&l0)
    assert "anchor" in detail["message"]
    assert memory.growth_mb() < 64
    assert took < ANSWER_WITHIN_S
