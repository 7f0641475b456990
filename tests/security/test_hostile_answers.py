"""A plugin answers what no sane plugin would: its own call fails, nobody else's does.

Each attack runs in a real plugin container (``plugins/escape``) next to ``peer``, a second
copy that answers plainly; the fan-out must keep the peer's result, and the orchestrator must
keep answering its health check while it reads the hostile answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess

from .conftest import ESCAPE, PEER, EscapePlugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@contextmanager
def health_watched(orch: OrchestratorProcess) -> Iterator[list[str]]:
    """Poll ``/healthz`` from a thread (1 s timeout each) for as long as the block runs;
    yields the list of failed polls, filled in when the block ends."""
    failures: list[str] = []
    polls = [0]
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=orch.url, timeout=1.0) as client:
            while not stop.is_set():
                polls[0] += 1
                try:
                    r = client.get("/healthz")
                    if r.status_code != 200:
                        failures.append(f"HTTP {r.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(type(exc).__name__)
                time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield failures
    finally:
        stop.set()
        watcher.join(5)
    assert polls[0] >= 2, "the health check was not polled while the attack ran"


def test_an_answer_nested_100000_deep_fails_only_its_own_provider(
    orch: OrchestratorProcess, escape: EscapePlugin, peer: EscapePlugin
) -> None:
    with health_watched(orch) as failures:
        r = orch.client.post(
            "/v1/extension-points/workflow/execute",
            json={
                "input": {"attack": "deep_answer", "only": ESCAPE, "depth": 100_000},
                "mode": "all",
                "plugins": [ESCAPE, PEER],
            },
        )
        time.sleep(0.3)  # a few polls after the answer too
    assert failures == []
    assert r.status_code == 200, r.text
    results = {entry["plugin"]: entry for entry in r.json()["results"]}
    assert results[ESCAPE]["status"] == 502, results[ESCAPE]
    assert results[ESCAPE]["error"]["code"] == "invalid_answer"
    assert "64 levels" in results[ESCAPE]["error"]["message"]
    assert "output" not in results[ESCAPE]
    assert results[PEER]["output"]["detail"] == f"{PEER} answers plainly"
    # The provider that answered badly still serves the next call.
    assert escape.attack("ping")["detail"] == "pong"


def test_an_answer_just_inside_the_depth_limit_is_delivered(
    orch: OrchestratorProcess, escape: EscapePlugin
) -> None:
    r = escape.execute({"attack": "deep_answer", "depth": 64})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    output = result["output"]
    depth = 0
    while isinstance(output, list) and output:
        output, depth = output[0], depth + 1
    assert (output, depth) == ([], 63)
