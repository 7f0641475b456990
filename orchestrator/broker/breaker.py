"""A circuit breaker per plugin: fail fast while a plugin keeps failing.

closed --N consecutive failures--> open --cool-down--> half_open --probe ok--> closed
                                                       half_open --probe fails--> open
Only one probe call is let through while half-open; the others are refused like when open.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from orchestrator.domain.errors import ServiceUnavailable


class CircuitOpen(ServiceUnavailable):
    code = "circuit_open"

    def __init__(self, plugin_id: str, retry_in_s: float) -> None:
        super().__init__(
            f"plugin {plugin_id} keeps failing; calls are paused for {retry_in_s:.1f}s",
            details={"plugin": plugin_id, "retry_in_s": round(retry_in_s, 3)},
        )
        self.headers = {"Retry-After": str(max(1, round(retry_in_s + 0.5)))}


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class Breakers:
    def __init__(self, *, failures: int, cooldown_s: float) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def state(self, plugin_id: str) -> str:
        with self._lock:
            return self._name(self._states.get(plugin_id) or _State(), time.monotonic())

    def describe(self, plugin_id: str) -> dict[str, object]:
        with self._lock:
            st = self._states.get(plugin_id) or _State()
            now = time.monotonic()
            retry = (
                max(0.0, st.opened_at + self.cooldown_s - now) if st.opened_at is not None else 0.0
            )
            return {"state": self._name(st, now), "failures": st.failures, "retry_in_s": retry}

    def _name(self, st: _State, now: float) -> str:
        if st.opened_at is None:
            return "closed"
        return "open" if now - st.opened_at < self.cooldown_s or st.probing else "half_open"

    def before_call(self, plugin_id: str) -> None:
        """Raise CircuitOpen, or let the call through (as the half-open probe if it is time)."""
        if self.threshold <= 0:
            return
        with self._lock:
            st = self._states.setdefault(plugin_id, _State())
            if st.opened_at is None:
                return
            now = time.monotonic()
            waited = now - st.opened_at
            if waited >= self.cooldown_s and not st.probing:
                st.probing = True
                return
            raise CircuitOpen(plugin_id, max(0.0, self.cooldown_s - waited))

    def release_probe(self, plugin_id: str) -> None:
        """The half-open probe never reached the plugin (refused by a limit, cancelled, or
        failed for a reason not the plugin's): the next call may probe instead. Without this
        the breaker stayed open for good."""
        with self._lock:
            st = self._states.get(plugin_id)
            if st is not None:
                st.probing = False

    def record(self, plugin_id: str, *, ok: bool) -> str:
        """Record an outcome; return the breaker's state afterwards."""
        with self._lock:
            st = self._states.setdefault(plugin_id, _State())
            if ok:
                st.failures, st.opened_at, st.probing = 0, None, False
            else:
                st.failures += 1
                if st.probing or (self.threshold > 0 and st.failures >= self.threshold):
                    st.opened_at, st.probing = time.monotonic(), False
            return self._name(st, time.monotonic())

    def forget(self, plugin_id: str) -> None:
        with self._lock:
            self._states.pop(plugin_id, None)
