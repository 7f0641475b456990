"""The elected supervisor: of several replicas on one database, one runs supervision (runtime
events, crash restarts, health probes, reconcile) and the housekeeping that must not run
twice (event retention).

Election is a lease in the database (``store/leases.py``): the holder renews it every
``LEADER_RENEW_S``; when it stops renewing (its process died, its node went away), another
replica takes it once ``LEADER_LEASE_S`` has passed. A replica that stops cleanly gives the
lease up, so a rolling restart hands over at once. The database works the same under Docker
and Kubernetes, so no Kubernetes Lease (and no RBAC for one) is needed.

A leader that cannot renew its lease for ``LEADER_LEASE_S`` (the database is away) steps down
before anyone else can have taken over. The new leader's reconcile adopts what it finds:
healthy plugins keep running, and host API listeners nobody serves any more are opened again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orchestrator.domain.errors import Duplicate
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.leases import release_lease, take_lease
from orchestrator.store.models import utcnow

__all__ = ["Leadership"]

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"


class Leadership:
    def __init__(
        self,
        engine: Engine,
        *,
        holder: str,
        lease_s: float,
        renew_s: float,
        on_elected: Callable[[], None],
        on_deposed: Callable[[], None],
        name: str = SUPERVISOR,
    ) -> None:
        if renew_s >= lease_s:
            raise ValueError("the lease must outlast several renewals (RENEW_S < LEASE_S)")
        self.engine = engine
        self.holder = holder
        self.name = name
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.decided = threading.Event()  # set once this replica knows whether it leads
        self._leader = False
        self._renewed = 0.0  # monotonic time of the last successful renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leader(self) -> bool:
        return self._leader

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="summit-leadership", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop campaigning; a leader steps down and gives the lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._leader:
            self._step_down("stopping")
            try:
                with session_scope(self.engine) as session:
                    release_lease(session, name=self.name, holder=self.holder)
            except Exception as exc:  # it expires by itself
                log.warning("could not give the %s lease up: %s", self.name, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.renew_s)

    def tick(self) -> None:
        """One round: renew or try to take the lease, and act on the outcome."""
        started = time.monotonic()
        try:
            with session_scope(self.engine) as session:
                held = take_lease(
                    session,
                    name=self.name,
                    holder=self.holder,
                    ttl_s=self.lease_s,
                    now=utcnow(),
                )
        except Duplicate:
            held = False  # another replica inserted the first lease at the same moment
        except Exception as exc:
            log.warning("the %s lease could not be read: %s", self.name, exc)
            # Not known either way. A leader that has not renewed for a whole lease may
            # already have been replaced: it stops acting as one.
            if self._leader and started - self._renewed >= self.lease_s:
                self._step_down("could not renew its lease")
            return
        if held:
            self._renewed = started
            if not self._leader:
                self._leader = True
                log.info("this replica (%s) is now the %s", self.holder, self.name)
                self._safely(self.on_elected, "taking over")
        elif self._leader:
            self._step_down("another replica holds the lease")
        self.decided.set()

    def _step_down(self, why: str) -> None:
        self._leader = False
        log.warning("this replica (%s) is no longer the %s: %s", self.holder, self.name, why)
        self._safely(self.on_deposed, "stepping down")

    def _safely(self, fn: Callable[[], None], what: str) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s as %s failed", what, self.name)
