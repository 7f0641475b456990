"""The ``ContainerRuntime`` contract, one suite for every backend (``conftest.Backend``).

What the services rely on: a deploy answers a running container at an endpoint, labelled with
its owner, plugin and version; status and removal behave for unknown and removed containers
and removal leaves nothing behind; a container that stops is reported once as ``die`` (with
its exit code), an out-of-memory kill as ``oom``, and the watch ends when asked; logs and stats
answer; a sweep removes what backs dead containers only; a failed deploy leaves nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator.domain.errors import SummitError
from orchestrator.runtime.base import RuntimeEvent
from orchestrator.runtime.endpoints import TcpEndpoint, UnixEndpoint
from tests.contract.conftest import PLUGIN_ID, Backend


class EventLog:
    """``runtime.events`` drained on a thread, as the supervisor does."""

    def __init__(self, backend: Backend) -> None:
        self.stop = threading.Event()
        self.events: queue.Queue[RuntimeEvent] = queue.Queue()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, args=(backend,), daemon=True)
        self.thread.start()
        time.sleep(1.0)  # the watch is open before anything happens

    def _drain(self, backend: Backend) -> None:
        try:
            for event in backend.runtime.events(self.stop):
                self.events.put(event)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended.set()

    def wait_for(self, kind: str, container_id: str, timeout_s: float = 60) -> RuntimeEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event.kind == kind and event.container_id == container_id:
                return event
        raise AssertionError(f"no {kind} event for {container_id} within {timeout_s}s")


@pytest.fixture
def event_log(backend: Backend) -> Iterator[EventLog]:
    log = EventLog(backend)
    yield log
    log.stop.set()


def test_deploy_answers_a_running_container_at_an_endpoint(backend: Backend) -> None:
    status = backend.deploy()
    assert status.running
    assert status.status == "running"
    assert status.endpoint is not None
    assert isinstance(status.endpoint, TcpEndpoint | UnixEndpoint)
    assert (status.plugin_id, status.version) == (PLUGIN_ID, "1.0.0")

    again = backend.runtime.status(status.id)
    assert again is not None and again.running
    assert again.endpoint == status.endpoint
    [listed] = [s for s in backend.runtime.list_owned() if s.id == status.id]
    assert (listed.plugin_id, listed.version, listed.endpoint) == (
        PLUGIN_ID,
        "1.0.0",
        status.endpoint,
    )


def test_a_version_that_is_no_label_value_reads_back_exactly(backend: Backend) -> None:
    status = backend.deploy(version="1.0.0+build.7")
    assert status.version == "1.0.0+build.7"
    [listed] = [s for s in backend.runtime.list_owned() if s.id == status.id]
    assert listed.version == "1.0.0+build.7"


def test_status_of_an_unknown_container_is_none(backend: Backend) -> None:
    assert backend.runtime.status("summit-no-such-container-0123") is None


def test_remove_is_idempotent_and_leaves_nothing(backend: Backend) -> None:
    status = backend.deploy()
    assert backend.traces(status.id, status)  # something exists while it runs
    backend.runtime.remove(status.id, grace_s=1)
    assert backend.runtime.status(status.id) is None
    assert backend.traces(status.id, status) == set()
    assert status.id not in {s.id for s in backend.runtime.list_owned()}
    backend.runtime.remove(status.id)  # absent is fine
    backend.runtime.remove("summit-no-such-container-0123")


def test_a_container_that_exits_is_reported_once_as_die_with_its_code(
    backend: Backend, event_log: EventLog
) -> None:
    status = backend.deploy()
    backend.crash(status, 3)
    event = event_log.wait_for("die", status.id)
    assert (event.plugin_id, event.exit_code) == (PLUGIN_ID, 3)
    stopped = backend.runtime.status(status.id)
    assert stopped is not None and not stopped.running and stopped.exit_code == 3


def test_an_out_of_memory_kill_is_reported_as_oom(backend: Backend, event_log: EventLog) -> None:
    status = backend.deploy(memory_mb=64)
    backend.oom(status)
    event_log.wait_for("oom", status.id)
    die = event_log.wait_for("die", status.id)
    assert die.exit_code == 137
    stopped = backend.runtime.status(status.id)
    assert stopped is not None and stopped.oom_killed


def test_the_event_watch_ends_soon_after_stop(backend: Backend) -> None:
    log = EventLog(backend)
    log.stop.set()
    assert log.ended.wait(10), "events() kept running after stop was set"
    assert log.error is None


def test_logs_are_text_and_stats_a_dict(backend: Backend) -> None:
    status = backend.deploy()
    deadline = time.monotonic() + 30
    text = backend.runtime.logs(status.id, tail=20)
    while not text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = backend.runtime.logs(status.id, tail=20)
    assert isinstance(text, str) and PLUGIN_ID in text
    stats = backend.runtime.stats(status.id)
    assert isinstance(stats, dict)
    assert all(isinstance(v, float) for v in stats.values())


def test_sweep_removes_leftovers_only(backend: Backend) -> None:
    live = backend.deploy()
    leftover_exists = backend.make_leftover()
    assert leftover_exists()
    backend.runtime.sweep_endpoints({live.endpoint} if live.endpoint else set())
    assert not leftover_exists()
    assert backend.traces(live.id, live)  # the live container keeps what backs it
    still = backend.runtime.status(live.id)
    assert still is not None and still.running


def test_a_failed_deploy_leaves_nothing_behind(backend: Backend) -> None:
    before = backend.inventory()
    with pytest.raises(SummitError):
        backend.runtime.deploy(backend.broken_spec())
    assert backend.inventory() == before
