"""Background work of a running orchestrator: reconcile, crash watching and health probes.

Each loop survives the container engine going away and coming back: it waits, then retries.
"""

from __future__ import annotations

import logging
import threading

from orchestrator.domain.errors import SummitError
from orchestrator.runtime.base import ContainerRuntime
from orchestrator.services.lifecycle import LifecycleService

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        *,
        lifecycle: LifecycleService,
        runtime: ContainerRuntime,
        health_interval_s: float,
    ) -> None:
        self.lifecycle = lifecycle
        self.runtime = runtime
        self.health_interval_s = health_interval_s
        self.reconciled = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
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
        self.lifecycle.stop()
        for thread in self._threads:
            thread.join(timeout_s)

    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.lifecycle.reconcile()
                log.info("reconciled: %s", report)
                self.reconciled.set()
                return
            except SummitError as exc:
                log.warning("reconcile postponed: %s", exc.message)
            except Exception:
                log.exception("reconcile failed")
            self._stop.wait(2.0)

    def _events_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.runtime.events(self._stop):
                    try:
                        self.lifecycle.on_runtime_event(event)
                    except Exception:
                        log.exception("handling %s of %s failed", event.kind, event.container_id)
            except SummitError as exc:
                log.warning("event watch interrupted: %s", exc.message)
            except Exception:
                log.exception("event watch failed")
            self._stop.wait(1.0)

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_interval_s):
            if not self.reconciled.is_set():
                continue
            try:
                self.lifecycle.probe_health()
            except Exception:
                log.exception("health probe round failed")
