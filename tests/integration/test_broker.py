"""The broker against plugins that are slow, flaky, too big, wrong or rude."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import temp_database
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BAD = "com.summit-tests.misbehave"
RAW = "com.summit-tests.raw"
ECHO = "com.summit-tests.broker-echo"


def _orchestrator_with_plugins(
    tmp: Path, docker_client: Any, templates: dict[str, str], **settings: str
) -> Iterator[OrchestratorProcess]:
    with temp_database("sqlite", tmp) as url:
        o = start_orchestrator(tmp, url, health_interval_s="60", **settings)
        try:
            for pid, template in templates.items():
                r = o.install_dir(make_plugin(tmp / pid, template, id=pid))
                assert r.status_code == 201, r.text
                r = o.client.post(f"/v1/plugins/{pid}/enable")
                assert r.status_code == 200, r.text
            yield o
        finally:
            o.cleanup(docker_client)


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    yield from _orchestrator_with_plugins(
        tmp_path_factory.mktemp("broker"),
        docker_client,
        {BAD: "misbehave", RAW: "raw", ECHO: "probe"},
        rate_limit_requests="0",
        max_response_bytes="65536",
        max_request_bytes="4096",
        breaker_failures="1000",  # the breaker has its own orchestrator below
    )


@pytest.fixture(scope="module")
def breaker_orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    yield from _orchestrator_with_plugins(
        tmp_path_factory.mktemp("breaker"),
        docker_client,
        {RAW: "raw", ECHO: "probe"},
        rate_limit_requests="0",
        breaker_failures="3",
        breaker_cooldown_s="2",
    )


def execute(orch: OrchestratorProcess, point: str, payload: Any, **body: Any) -> Any:
    return orch.client.post(
        f"/v1/extension-points/{point}/execute", json={"input": payload, **body}
    )


def test_unknown_point_plugin_and_inactive_plugin(orch: OrchestratorProcess) -> None:
    r = execute(orch, "teleport", {})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_point"
    r = execute(orch, "analyzer", {}, plugins=["com.nobody.nothing"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "plugin_not_found"
    orch.client.post(f"/v1/plugins/{ECHO}/disable")
    try:
        r = execute(orch, "analyzer", "x", plugins=[ECHO])
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_active"
    finally:
        assert orch.client.post(f"/v1/plugins/{ECHO}/enable").status_code == 200


def test_input_schema_is_enforced_with_plugin_and_path(orch: OrchestratorProcess) -> None:
    r = execute(orch, "analyzer", {"text": 42}, plugins=[BAD])
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert err["details"][0]["plugin"] == BAD
    assert err["details"][0]["path"] == "input['text']"
    r = execute(orch, "analyzer", {"text": "fine"}, plugins=[BAD])
    assert r.status_code == 200 and r.json()["results"][0]["output"] == {"length": 4}


def test_output_schema_is_enforced(orch: OrchestratorProcess) -> None:
    r = execute(orch, "workflow", {}, plugins=[BAD])
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "invalid_output"
    assert err["details"]["errors"][0]["path"] == "output['ok']"


def test_hanging_plugin_times_out_and_others_still_answer(orch: OrchestratorProcess) -> None:
    # The plugin hangs 30 s; a 700 ms deadline answers for it (plugin_timeout, not output).
    r = execute(orch, "data_source", {"seconds": 30}, timeout_ms=700, plugins=[BAD, RAW])
    assert r.status_code == 200, r.text
    by_plugin = {e["plugin"]: e for e in r.json()["results"]}
    assert by_plugin[BAD]["error"]["code"] == "plugin_timeout"
    assert by_plugin[BAD]["status"] == 504
    assert by_plugin[RAW]["output"] == {"fine": True}
    # Alone, the hanging plugin is a 504 naming it.
    r = execute(orch, "data_source", {"seconds": 30}, timeout_ms=300, plugins=[BAD])
    assert r.status_code == 504
    assert r.json()["error"]["details"]["plugin"] == BAD


@pytest.mark.parametrize(
    ("point", "code"),
    [("analyzer", "plugin_error"), ("export", "response_too_large"), ("workflow", "plugin_error")],
    ids=["not-json", "endless-body", "cut-mid-answer"],
)
def test_rude_answers_are_502_naming_the_plugin(
    orch: OrchestratorProcess, point: str, code: str
) -> None:
    # Each is told apart at once: a deadline would have been plugin_timeout (504).
    r = execute(orch, point, {}, plugins=[RAW], timeout_ms=4000)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["details"]["plugin"] == RAW
    assert RAW in err["message"]


def test_oversized_output_is_refused(orch: OrchestratorProcess) -> None:
    assert execute(orch, "visualization", {"bytes": 1000}, plugins=[BAD]).status_code == 200
    r = execute(orch, "visualization", {"bytes": 200_000}, plugins=[BAD])
    assert r.status_code == 502 and r.json()["error"]["code"] == "response_too_large"


def test_oversized_request_is_413(orch: OrchestratorProcess) -> None:
    r = execute(orch, "analyzer", {"text": "x" * 5000}, plugins=[ECHO])
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_idempotent_calls_are_retried(orch: OrchestratorProcess) -> None:
    # "flaky" fails every other call; it is marked idempotent, so one retry gets it through.
    for _ in range(4):
        r = execute(orch, "export", {}, plugins=[BAD])
        assert r.status_code == 200, r.text
    metrics = orch.client.get("/metrics").text
    assert f'summit_extension_retries_total{{plugin="{BAD}",point="export"}}' in metrics


def test_breaker_opens_then_probes(breaker_orch: OrchestratorProcess) -> None:
    orch = breaker_orch
    for _ in range(3):
        assert execute(orch, "analyzer", {}, plugins=[RAW]).status_code == 502
    r = execute(orch, "analyzer", {}, plugins=[RAW])
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "circuit_open"
    assert int(r.headers["Retry-After"]) >= 1
    listing = orch.client.get("/v1/extension-points").json()
    [provider] = [
        p
        for point in listing
        if point["point"] == "analyzer"
        for p in point["providers"]
        if p["plugin"] == RAW
    ]
    assert provider["breaker"]["state"] == "open"
    assert (
        'summit_breaker_state{plugin="com.summit-tests.raw"} 2.0'
        in orch.client.get("/metrics").text
    )
    # Other plugins are not affected.
    assert execute(orch, "analyzer", "hi", plugins=[ECHO]).status_code == 200
    time.sleep(2.2)
    # Half-open: one probe goes through (and fails again, re-opening the breaker).
    assert execute(orch, "analyzer", {}, plugins=[RAW]).status_code == 502
    assert execute(orch, "analyzer", {}, plugins=[RAW]).status_code == 503
    # A healthy extension of the same plugin closes it again after the cool-down.
    time.sleep(2.2)
    assert execute(orch, "data_source", {}, plugins=[RAW]).status_code == 200
    assert execute(orch, "data_source", {}, plugins=[RAW]).status_code == 200


def test_rate_limit_per_plugin(orch: OrchestratorProcess) -> None:
    r = orch.client.put(
        f"/v1/plugins/{ECHO}/limits", json={"rate_limit_requests": 3, "rate_limit_window_s": 60}
    )
    assert r.status_code == 200, r.text
    try:
        codes = [execute(orch, "analyzer", i, plugins=[ECHO]).status_code for i in range(3)]
        assert codes == [200, 200, 200]
        r = execute(orch, "analyzer", 4, plugins=[ECHO])
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert execute(orch, "analyzer", {"text": "ok"}, plugins=[BAD]).status_code == 200
    finally:
        orch.client.put(f"/v1/plugins/{ECHO}/limits", json={})
    assert execute(orch, "analyzer", 5, plugins=[ECHO]).status_code == 200


def test_concurrency_limit_per_plugin(orch: OrchestratorProcess) -> None:
    orch.client.put(f"/v1/plugins/{BAD}/limits", json={"concurrency": 1})
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(execute, orch, "data_source", {"seconds": 1.5}, plugins=[BAD])
            time.sleep(0.5)
            second = execute(orch, "data_source", {"seconds": 0}, plugins=[BAD])
            assert slow.result().status_code == 200
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "concurrency_limited"
    finally:
        orch.client.put(f"/v1/plugins/{BAD}/limits", json={})


def test_modes_pipeline_and_first(orch: OrchestratorProcess) -> None:
    r = execute(orch, "analyzer", "hi", mode="first", plugins=[ECHO])
    assert r.status_code == 200 and r.json()["output"]["echo"] == "hi"
    # pipeline runs in priority order (then by id): the echo's output is the next input,
    # and it does not fit misbehave's input_schema, so the pipeline stops there and says so.
    r = execute(orch, "analyzer", {"text": "abc"}, mode="pipeline", plugins=[BAD, ECHO])
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_output"
    assert err["details"]["failed_at"] == BAD
    assert [s["plugin"] for s in err["details"]["results"]] == [ECHO]
    assert err["details"]["results"][0]["output"]["echo"] == {"text": "abc"}
    r = execute(orch, "analyzer", {"text": "abc"}, mode="pipeline", plugins=[BAD])
    assert r.status_code == 200 and r.json()["output"] == {"length": 3}


def test_metrics_count_calls(orch: OrchestratorProcess) -> None:
    assert execute(orch, "analyzer", "m", plugins=[ECHO]).status_code == 200
    orch.client.put(f"/v1/plugins/{ECHO}/limits", json={"rate_limit_requests": 1})
    try:
        execute(orch, "analyzer", "m", plugins=[ECHO])
        assert execute(orch, "analyzer", "m", plugins=[ECHO]).status_code == 429
    finally:
        orch.client.put(f"/v1/plugins/{ECHO}/limits", json={})
    text = orch.client.get("/metrics").text
    ok = f'summit_extension_calls_total{{outcome="ok",plugin="{ECHO}",point="analyzer"}}'
    assert ok in text
    assert f'summit_extension_call_seconds_bucket{{le="0.001",plugin="{ECHO}"' in text
    assert f'summit_calls_refused_total{{plugin="{ECHO}",reason="rate_limited"}}' in text
    assert "summit_job_queue_depth 0.0" in text
