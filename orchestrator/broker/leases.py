"""One transport per endpoint for the life of its route, and the calls in flight on each.

A call leases its endpoint's transport and gives it back when it has its answer. When a route
is replaced (reload) or dropped (disable), the lifecycle retires the old endpoint: new calls no
longer reach it, and :meth:`TransportLeases.retire` blocks until the calls already on it have
finished, so the old container is stopped only once drained.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from orchestrator.broker.routes import Route
from orchestrator.broker.transport import PluginTransport, TransportFactory
from orchestrator.runtime.endpoints import Endpoint

__all__ = ["Lease", "TransportLeases"]


@dataclass
class Lease:
    transport: PluginTransport
    # The loop the transport's connections belong to: a retirement (from a lifecycle thread)
    # closes them there.
    loop: asyncio.AbstractEventLoop
    inflight: int = 0
    retired: bool = False
    idle: threading.Event = field(default_factory=threading.Event)


class TransportLeases:
    def __init__(self, factory: TransportFactory, *, max_connections: int) -> None:
        self._factory = factory
        self._max_connections = max_connections
        self._leases: dict[Endpoint, Lease] = {}
        self._lock = threading.Lock()

    def acquire(self, route: Route) -> Lease:
        """The transport to ``route``'s endpoint with one more call in flight (event loop)."""
        endpoint = route.endpoint
        with self._lock:
            lease = self._leases.get(endpoint)
            if lease is None or lease.retired:
                transport = self._factory(
                    endpoint,
                    max_connections=route.concurrency or self._max_connections,
                    call_token=route.call_token,
                )
                lease = Lease(transport, asyncio.get_running_loop())
                if endpoint not in self._leases:
                    self._leases[endpoint] = lease
            lease.inflight += 1
            lease.idle.clear()
            return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            lease.inflight -= 1
            if lease.inflight == 0 and lease.retired:
                lease.idle.set()

    def in_flight(self, endpoint: Endpoint) -> int:
        with self._lock:
            lease = self._leases.get(endpoint)
            return lease.inflight if lease is not None else 0

    def retire(self, endpoint: Endpoint, *, timeout_s: float) -> bool:
        """Block until no call is in flight on ``endpoint``, then close its transport; False
        if calls were still in flight after ``timeout_s`` (it is closed anyway)."""
        with self._lock:
            lease = self._leases.get(endpoint)
            if lease is None:
                return True
            lease.retired = True
            if lease.inflight == 0:
                lease.idle.set()
        drained = lease.idle.wait(timeout_s)
        with self._lock:
            self._leases.pop(endpoint, None)
        if lease.loop.is_running():
            asyncio.run_coroutine_threadsafe(lease.transport.aclose(), lease.loop)
        return drained

    async def aclose(self) -> None:
        with self._lock:
            leases = list(self._leases.values())
            self._leases.clear()
        for lease in leases:
            await lease.transport.aclose()
