"""The orchestrator's own health: readiness (database, container runtime, first reconcile)
and its Prometheus metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from orchestrator.domain.errors import SummitError
from orchestrator.store.db import Engine, ping

__all__ = ["METRICS_CONTENT_TYPE", "SystemService"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Pingable(Protocol):
    def ping(self) -> None:
        """Raise RuntimeUnavailable when the backend cannot be reached."""


class SystemService:
    def __init__(
        self,
        *,
        engine: Engine,
        runtime: _Pingable,
        reconciled: threading.Event,
        registry: CollectorRegistry,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.reconciled = reconciled
        self.registry = registry
        self.is_leader = is_leader

    def role(self) -> str:
        """``supervisor`` on the elected replica (crash restarts, probes, reconcile run
        there), ``replica`` on the others."""
        return "supervisor" if self.is_leader() else "replica"

    def readiness(self) -> dict[str, str]:
        """Each check's outcome: ``ok``, ``pending`` or ``error: ...``; ready when all are ok."""
        checks: dict[str, str] = {}
        try:
            ping(self.engine)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            self.runtime.ping()
            checks["runtime"] = "ok"
        except SummitError as exc:
            checks["runtime"] = f"error: {exc.message}"
        checks["reconcile"] = "ok" if self.reconciled.is_set() else "pending"
        return checks

    def metrics(self) -> bytes:
        """Calls, errors, latency, breakers, refusals and queue depth, in the text format."""
        return generate_latest(self.registry)
