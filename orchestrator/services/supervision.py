"""Supervision: what keeps installed plugins running once the operator has enabled them.

- runtime events: a container of ours that stops on its own (exit, OOM kill) is a crash;
- health probes: a plugin that fails ``HEALTH_FAILURES`` probes in a row has crashed too;
- crash restarts: a crashed plugin is enabled again after a backoff that doubles with every
  crash within ``CRASH_WINDOW_S`` (``RESTART_BACKOFF_S``, at most ``RESTART_BACKOFF_CAP_S``);
  the ``CRASH_LIMIT``-th crash within the window leaves it FAILED for an operator to look at;
- reconcile, at start and every ``RECONCILE_INTERVAL_S``: the container engine and the
  database are made to agree (healthy containers adopted, orphans removed, plugins whose
  container is gone FAILED and restarted, host API listeners nobody serves any more opened).

A canary's candidate container is supervised too, but its failure is not the plugin's: a
candidate that stops, fails its health checks, or is gone at a start is dropped
(``LifecycleService.canary_lost``) and the plugin serves on with its current version. Reconcile
adopts a running candidate as the canary its row describes, never as an orphan.

With several replicas, supervision runs on the elected one only (``leadership.py`` starts and
stops it). Reconcile takes each plugin's lock without waiting and leaves alone a plugin that
another replica (or another thread here) is busy with: a container it is starting is not an
orphan. Every state change is the lifecycle's (``crashed``, ``recover``, ``enable``). Each loop
survives the container engine going away and coming back: it waits, then retries.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from orchestrator.broker import Broker, Route
from orchestrator.config import Settings
from orchestrator.domain.errors import SummitError
from orchestrator.domain.lifecycle import PluginState
from orchestrator.runtime.base import ContainerRuntime, ContainerStatus, RuntimeEvent
from orchestrator.runtime.endpoints import Endpoint
from orchestrator.services.containers import PluginContainers, endpoint_of
from orchestrator.services.install import manifest_of, resources_for
from orchestrator.services.lifecycle import LifecycleService
from orchestrator.store import crud
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import Container, utcnow

__all__ = ["Supervision", "thread_timer"]

log = logging.getLogger(__name__)

RECONCILE_RETRY_S = 2.0
RECONCILE_INTERVAL_S = 30.0
EVENTS_RETRY_S = 1.0
HEALTH_TIMEOUT_S = 2.0
OOM_REMEMBERED = 256  # containers with an ``oom`` event and no ``die`` yet, at most


class Timer(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Timer]
"""Runs a function after a delay (in seconds) unless cancelled: ``threading.Timer`` by
default, a recorder in tests."""


def thread_timer(delay_s: float, fn: Callable[[], None]) -> Timer:
    timer = threading.Timer(delay_s, fn)
    timer.daemon = True
    timer.start()
    return timer


class Supervision:
    def __init__(
        self,
        *,
        engine: Engine,
        lifecycle: LifecycleService,
        runtime: ContainerRuntime,
        containers: PluginContainers,
        broker: Broker,
        settings: Settings,
        schedule: Schedule = thread_timer,
    ) -> None:
        self.engine = engine
        self.lifecycle = lifecycle
        self.runtime = runtime
        self.containers = containers
        self.broker = broker
        self.settings = settings
        self.schedule = schedule
        self.reconciled = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._restarts: dict[str, Timer] = {}
        # Keyed by container endpoint too: a new container starts with a clean count.
        self._health_failures: dict[tuple[str, Endpoint], int] = {}
        # Containers the runtime said ran out of memory, until their ``die`` comes (bounded).
        self._oom_seen: OrderedDict[str, None] = OrderedDict()

    # -- threads -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loops (again, after a ``stop``: a replica elected a second time)."""
        self._stop = threading.Event()
        self._threads = []
        for name, target in (
            ("summit-reconcile", self._reconcile_loop),
            ("summit-events", self._events_loop),
            ("summit-health", self._health_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._guard:
            timers, self._restarts = list(self._restarts.values()), {}
        for timer in timers:
            timer.cancel()
        for thread in self._threads:
            thread.join(timeout_s)

    def _reconcile_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                report = self.reconcile()
                if not self.reconciled.is_set() or _changed(report):
                    log.info("reconciled: %s", report)
                self.reconciled.set()
                stop.wait(RECONCILE_INTERVAL_S)
                continue
            except SummitError as exc:
                log.warning("reconcile postponed: %s", exc.message)
            except Exception:
                log.exception("reconcile failed")
            stop.wait(RECONCILE_RETRY_S)

    def _events_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                for event in self.runtime.events(stop):
                    try:
                        self.on_runtime_event(event)
                    except Exception:
                        log.exception("handling %s of %s failed", event.kind, event.container_id)
            except SummitError as exc:
                log.warning("event watch interrupted: %s", exc.message)
            except Exception:
                log.exception("event watch failed")
            stop.wait(EVENTS_RETRY_S)

    def _health_loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.settings.health_interval_s):
            if not self.reconciled.is_set():
                continue
            try:
                self.probe_health()
            except Exception:
                log.exception("health probe round failed")

    # -- crashes -----------------------------------------------------------------------------

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        if event.kind == "oom":
            # The engine's own OOMKilled flag is set by a race with the exit, which gVisor
            # loses now and then (seen in CI: "exited with code 137" after an "oom" event):
            # the event is what says it, so the ``die`` that follows it is an OOM kill.
            self._oom_seen[event.container_id] = None
            while len(self._oom_seen) > OOM_REMEMBERED:
                self._oom_seen.popitem(last=False)
            return
        if event.kind == "die" and event.plugin_id:
            oom = event.container_id in self._oom_seen
            self._oom_seen.pop(event.container_id, None)
            self.crashed(event.plugin_id, event.container_id, "OOMKilled" if oom else None)

    def crashed(self, plugin_id: str, container_id: str, why: str | None) -> None:
        """Mark the plugin FAILED (if ``container_id`` is its current one) and restart it
        after a backoff, unless it has crashed ``CRASH_LIMIT`` times within the window."""
        if not self.lifecycle.crashed(plugin_id, container_id, why):
            return
        since = utcnow() - timedelta(seconds=self.settings.crash_window_s)
        with session_scope(self.engine) as session:
            crashes = crud.count_transitions_since(
                session, plugin_id=plugin_id, action="fail", since=since
            )
            [failed] = crud.list_transitions(session, plugin_id=plugin_id, limit=1)
        if crashes >= self.settings.crash_limit:
            log.warning("plugin %s crashed %d times; it stays FAILED", plugin_id, crashes)
            return
        self._schedule_restart(plugin_id, self.backoff_s(crashes), after=failed.id)

    def backoff_s(self, crashes: int) -> float:
        """The wait before restarting after the ``crashes``-th crash within the window."""
        first, cap = self.settings.restart_backoff_s, self.settings.restart_backoff_cap_s
        return float(min(first * 2 ** (crashes - 1), cap))

    def _schedule_restart(self, plugin_id: str, delay_s: float, *, after: int | None) -> None:
        if self._stop.is_set():
            return
        timer = self.schedule(delay_s, lambda: self._restart(plugin_id, after))
        with self._guard:
            old = self._restarts.pop(plugin_id, None)
            self._restarts[plugin_id] = timer
        if old is not None:
            old.cancel()

    def _restart(self, plugin_id: str, after: int | None) -> None:
        """Enable the plugin again, unless anything moved it since the crash (``after`` is the
        id of the crash's transition): an operator's enable, disable or uninstall wins."""
        if self._stop.is_set():
            return
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            last = crud.list_transitions(session, plugin_id=plugin_id, limit=1)
        if plugin is None or plugin.state != PluginState.FAILED.value:
            return
        if after is not None and (not last or last[0].id != after):
            return
        try:
            self.lifecycle.enable(plugin_id, reason="restarted after a crash")
        except SummitError as exc:
            log.warning("restart of %s failed: %s", plugin_id, exc.message)

    # -- health ------------------------------------------------------------------------------

    def probe_health(self) -> None:
        """One round of health probes; a plugin failing ``HEALTH_FAILURES`` in a row crashed
        (a canary's candidate that does is dropped)."""
        routes = self.broker.routes()
        candidates = {c.route.endpoint for c in self.broker.canaries()}
        routes += [c.route for c in self.broker.canaries()]
        serving = {(r.plugin_id, r.endpoint) for r in routes}
        for gone in set(self._health_failures) - serving:
            del self._health_failures[gone]  # a retired container's count
        for route in routes:
            key = (route.plugin_id, route.endpoint)
            if route.plugin_id in self.broker.pauses.paused:
                self._health_failures.pop(key, None)
                continue  # frozen on purpose: it cannot answer, nor has it crashed
            try:
                client = self.containers.clients(route.endpoint, call_token=route.call_token)
                try:
                    client.health(timeout_s=HEALTH_TIMEOUT_S)
                finally:
                    client.close()
                self._health_failures.pop(key, None)
            except Exception:
                n = self._health_failures.get(key, 0) + 1
                self._health_failures[key] = n
                if n < self.settings.health_failures:
                    continue
                self._health_failures.pop(key, None)
                self._unhealthy(route, candidate=route.endpoint in candidates, failures=n)

    def _unhealthy(self, route: Route, *, candidate: bool, failures: int) -> None:
        why = f"failed {failures} health checks"
        with session_scope(self.engine) as session:
            if candidate:
                row = plugin_store.canary_container(session, plugin_id=route.plugin_id)
            else:
                row = crud.current_container(session, plugin_id=route.plugin_id)
        if row is not None and endpoint_of(row) == route.endpoint:
            self.crashed(route.plugin_id, row.id, why)

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> dict[str, list[str]]:
        """Make the container engine and the database agree (after a start, a crash of the
        orchestrator, or another replica's): adopt what runs, remove what no row claims,
        settle the rest. Plugins whose lock is held elsewhere are left alone ("busy")."""
        report: dict[str, list[str]] = {
            "adopted": [],
            "removed": [],
            "restarted": [],
            "settled": [],
            "busy": [],
        }
        owned: dict[str | None, list[ContainerStatus]] = {}
        for status in self.runtime.list_owned():
            owned.setdefault(status.plugin_id, []).append(status)
        with session_scope(self.engine) as session:
            installed = [p.id for p in crud.list_plugins(session)]
        keep: set[Endpoint] = set()
        for pid in sorted(set(installed) | {p for p in owned if p is not None}):
            with self.lifecycle.locks.attempt(pid) as mine:
                if not mine:
                    report["busy"].append(pid)
                    keep.update(c.endpoint for c in owned.get(pid, ()) if c.endpoint)
                    continue
                self._reconcile_plugin(pid, owned.get(pid, []), keep, report)
        for status in owned.get(None, []):  # ours, but naming no plugin
            self.runtime.remove(status.id)
            report["removed"].append(status.name)
        self.runtime.sweep_endpoints(keep)
        for pid in report["restarted"]:
            try:
                self.lifecycle.enable(pid, reason="restarted by reconcile")
            except SummitError as exc:
                log.warning("reconcile could not restart %s: %s", pid, exc.message)
        return report

    def _adopt_pause(self, row: Container, status: ContainerStatus) -> None:
        """Make the row and the broker say what the runtime says of a serving container: a
        frozen one (an idle pause before a restart) stays frozen until its next call."""
        if status.paused:
            self.broker.pauses.paused.add(row.plugin_id)
        if status.paused == (row.paused_at is not None):
            return
        with session_scope(self.engine) as session:
            plugin_store.set_container_paused(
                session, container_id=row.id, paused_at=utcnow() if status.paused else None
            )
        if not status.paused:
            self.broker.pauses.paused.discard(row.plugin_id)

    def _reconcile_plugin(
        self,
        plugin_id: str,
        containers: list[ContainerStatus],
        keep: set[Endpoint],
        report: dict[str, list[str]],
    ) -> None:
        """Reconcile one plugin, holding its lock."""
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            rows = list(crud.list_containers(session, plugin_id=plugin_id))
        candidates = [r for r in rows if r.canary_weight is not None]
        rows = [r for r in rows if r.canary_weight is None]
        running = {c.id: c for c in containers}
        if self.reconciled.is_set() and plugin is not None and rows:
            # A later round: a serving container that stopped is a crash, with its backoff
            # and crash limit (the event watch may not have told us yet).
            current = max(rows, key=lambda r: r.created_at)
            status = running.get(current.id)
            if plugin.state == PluginState.ACTIVE.value and not (status and status.running):
                self.crashed(plugin_id, current.id, None if status else "container vanished")
                return
        adopted = False
        for row in rows:
            status, endpoint = running.get(row.id), endpoint_of(row)
            active = plugin is not None and plugin.state == PluginState.ACTIVE.value
            if active and not adopted and status and status.running and endpoint:
                assert plugin is not None
                routed = self.broker.route(plugin_id)
                if routed is None or (routed.endpoint, routed.version) != (
                    endpoint,
                    plugin.version,
                ):
                    with session_scope(self.engine) as session:
                        manifest = manifest_of(session, plugin)
                    self.containers.serve(
                        plugin_id,
                        endpoint,
                        manifest,
                        dict(plugin.resources),
                        call_token=row.call_token,
                    )
                keep.add(endpoint)
                adopted = True
                report["adopted"].append(plugin_id)
                self._adopt_pause(row, status)
                if self.containers.host is not None:
                    self.containers.host.reattach(plugin_id, endpoint)
                continue
            with session_scope(self.engine) as session:
                crud.delete_container(session, container_id=row.id)
            if status is None:
                self.containers.close_host(row.id, endpoint)
        for row in candidates:
            self._reconcile_candidate(plugin_id, row, running, keep, adopted=adopted)
        for cid, status in running.items():
            if status.endpoint is None or status.endpoint not in keep:
                self.runtime.remove(cid)
                self.containers.close_host(cid, status.endpoint)
                report["removed"].append(status.name)
        if plugin is None:
            return
        state = PluginState(plugin.state)
        if state not in (PluginState.INITIALIZING, PluginState.UNLOADING) and not (
            state == PluginState.ACTIVE and not adopted
        ):
            return  # nothing half-done to settle
        outcome = self.lifecycle.recover(plugin_id, adopted=adopted)
        if outcome == "restart":
            report["restarted"].append(plugin_id)
        elif outcome == "settled":
            report["settled"].append(plugin_id)

    def _reconcile_candidate(
        self,
        plugin_id: str,
        row: Container,
        running: dict[str, ContainerStatus],
        keep: set[Endpoint],
        *,
        adopted: bool,
    ) -> None:
        """Adopt the candidate of the plugin's canary while it runs beside an adopted current
        container of an ACTIVE plugin; else drop the canary (history ``canary_failed``)."""
        status, endpoint = running.get(row.id), endpoint_of(row)
        if adopted and status is not None and status.running and endpoint is not None:
            canary = self.broker.canary(plugin_id)
            if canary is None or canary.route.endpoint != endpoint:
                with session_scope(self.engine) as session:
                    plugin = crud.get_plugin(session, plugin_id=plugin_id)
                    assert plugin is not None  # adopted: it is ACTIVE
                    manifest = manifest_of(session, plugin, row.version)
                self.containers.serve_canary(
                    plugin_id,
                    endpoint,
                    manifest,
                    resources_for(manifest, self.settings, plugin.resources),
                    weight=row.canary_weight or 0,
                    call_token=row.call_token,
                )
            keep.add(endpoint)
            if self.containers.host is not None:
                self.containers.host.reattach(plugin_id, endpoint)
            return
        if not adopted:
            why = "its plugin is not serving"
        elif status is None:
            why = "container vanished"
        else:
            why = None  # stopped: the runtime says why
        self.lifecycle.canary_lost(plugin_id, row.id, why)
        running.pop(row.id, None)  # removed with the canary


def _changed(report: dict[str, list[str]]) -> bool:
    """Whether a reconcile did more than find everything as it was."""
    return any(v for k, v in report.items() if k not in ("adopted", "busy"))
