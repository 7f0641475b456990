"""A bounded schemathesis run over the whole REST API: no generated request gets a 5xx.

A real orchestrator, on SQLite and on PostgreSQL, serves its own ``/openapi.json``; every
operation in it gets a few dozen cases, valid and invalid alike, drawn derandomized, so a run
sends the same requests every time and a failure names the request that caused it. Only
``not_a_server_error`` is checked: a 4xx for nonsense is the right answer, and whether each
answer matches its documented schema is another test's business.

The SSE stream never ends, so it is left out. Fuzzed installs cannot succeed (no registry is
reachable and no random bundle is a plugin); the end of the test proves nothing was left behind.

schemathesis' lazy pytest loader (``schemathesis.pytest.from_fixture``) breaks under pytest 9.2
(it rewrites the item's private ``_nodeid``, which is gone), and an eager
``schema.parametrize()`` would need the server at import time. So each operation runs as a
plain Hypothesis test over the operation's own strategies (``APIOperation.as_strategy``, both
generation modes), reported as a pytest subtest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.conftest import temp_database
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.integration.conftest import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Ten per operation miss an id past 64 bits on SQLite; 25 take about 15 s per database here.
EXAMPLES_PER_OPERATION = 25
# Operations that never answer on their own; a fuzzer would only wait for its request timeout.
ENDLESS = ["/v1/events/stream"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# `schemathesis.toml` keys, given here so that no config file is discovered from the cwd.
FUZZ_CONFIG: dict[str, Any] = {
    "request-timeout": 30,
    # The admin token goes on every call; generated Authorization headers would only test the
    # 401 path, over and over.
    "generation": {"with-security-parameters": False},
}

FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same cases on every run and every machine
    deadline=None,
    database=None,
    # A failing case is reported as drawn: shrinking it would send an unbounded number of
    # further requests.
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    # These fire on a loaded machine or on a large schema, not on a fault of the API.
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
        hypothesis.HealthCheck.data_too_large,
        hypothesis.HealthCheck.large_base_example,
    ],
)


@contextmanager
def running_orchestrator(
    tmp: Path, database_url: str, docker_client: Any
) -> Iterator[OrchestratorProcess]:
    orch = start_orchestrator(tmp, database_url)
    try:
        yield orch
    finally:
        orch.cleanup(docker_client)  # uninstalls, stops, removes the containers it owns


def fuzz_operation(
    operation: schemathesis.APIOperation, statuses: Counter[tuple[str, int]]
) -> None:
    """Send the operation's cases, valid and invalid, and fail on the first 5xx."""
    cases = st.one_of(
        [operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode]
    )

    @FUZZ_SETTINGS
    @hypothesis.given(case=cases)
    def no_server_error(case: schemathesis.Case) -> None:
        response = case.call(headers=AUTH)
        statuses[(operation.label, response.status_code)] += 1
        case.validate_response(response, checks=[not_a_server_error])

    no_server_error()


# PostgreSQL refuses values SQLite takes (a NUL character in text, an id past 32 bits), so the
# API is fuzzed on both.
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_no_generated_request_gets_a_server_error(
    database: str,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: Any,
    subtests: pytest.Subtests,
) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    tmp = tmp_path_factory.mktemp(f"fuzz-{database}")
    with temp_database(database, tmp) as url, running_orchestrator(tmp, url, docker_client) as orch:
        schema = schemathesis.openapi.from_url(
            f"{orch.url}/openapi.json",
            config=schemathesis.Config.from_dict(FUZZ_CONFIG),
            timeout=30,
        ).exclude(path=ENDLESS)
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "the schema has operations it cannot test"
        assert len(operations) > 30, [op.label for op in operations]
        for operation in operations:
            with subtests.test(operation.label):
                fuzz_operation(operation, statuses)

        # The run proves something only if the cases went in with the admin token.
        assert statuses[("GET /v1/plugins", 200)], statuses
        assert not [key for key in statuses if key[1] == 401], statuses
        assert {label for label, _ in statuses} == {op.label for op in operations}
        installed = orch.client.get("/v1/plugins").json()
        assert installed == [], f"a fuzzed request installed plugins: {installed}"
    leftovers = orch.owned_containers(docker_client)
    assert leftovers == [], f"containers left behind: {[c.name for c in leftovers]}"
    print(f"\n{sum(statuses.values())} cases over {len(operations)} operations")
