"""The routing table: the current container of every ACTIVE plugin, and who provides a point;
beside it, each plugin's canary (a candidate version taking a share of its calls, ``canary.py``).

The lifecycle writes the table from its threads (enable, reload, disable, reconcile, canary);
calls read it on the event loop. A route is replaced whole, so a reload switches every new call
to the new container at once; a promotion makes the candidate the route and ends the canary in
one step under the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import Endpoint

if TYPE_CHECKING:
    from orchestrator.broker.canary import Canary

__all__ = ["POINTS", "Provider", "Route", "RoutingTable"]

POINTS = frozenset(p.value for p in ExtensionPoint)


@dataclass(frozen=True)
class Route:
    plugin_id: str
    version: str
    endpoint: Endpoint
    extensions: tuple[Extension, ...]
    timeout_ms: int = 30000
    rate_limit_requests: int | None = None  # None: the broker's default
    rate_limit_window_s: float | None = None
    concurrency: int | None = None
    # Event types the plugin receives (its events.subscribe, when granted events:subscribe).
    subscribe: tuple[str, ...] = ()
    # The container's SUMMIT_PLUGIN_TOKEN, sent as a bearer token where the endpoint is a
    # network address anyone on the network could call (TCP); kept out of repr and logs.
    call_token: str | None = field(default=None, repr=False)


Provider = tuple[Route, Extension]


class RoutingTable:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        # point -> its providers, highest priority first; built on first use, dropped on every
        # route change (both under _lock, so a build never outlives the routes it read).
        self._providers: dict[str, tuple[Provider, ...]] = {}
        # plugin id -> its canary. Read without the lock on every call (one lookup, none when
        # the dict is empty); written under it, a canary replaced whole.
        self.canaries: dict[str, Canary] = {}
        self._lock = threading.Lock()

    def set(self, route: Route) -> Route | None:
        """Make ``route`` the plugin's; return the one it replaces."""
        with self._lock:
            old = self._routes.get(route.plugin_id)
            self._routes[route.plugin_id] = route
            self._providers.clear()
        return old

    def drop(self, plugin_id: str) -> Route | None:
        """Take the plugin out, its canary with it; return its route."""
        with self._lock:
            route = self._routes.pop(plugin_id, None)
            self.canaries.pop(plugin_id, None)
            self._providers.clear()
        return route

    def set_canary(self, canary: Canary) -> Canary | None:
        """Make ``canary`` the plugin's; return the one it replaces."""
        with self._lock:
            old = self.canaries.get(canary.plugin_id)
            self.canaries[canary.plugin_id] = canary
        return old

    def drop_canary(self, plugin_id: str) -> Canary | None:
        with self._lock:
            return self.canaries.pop(plugin_id, None)

    def promote(self, plugin_id: str) -> tuple[Route | None, Canary] | None:
        """Make the plugin's candidate its route and end the canary, in one step; the route
        replaced and the canary (None: there was no canary)."""
        with self._lock:
            canary = self.canaries.get(plugin_id)
            if canary is None:
                return None
            # Route first: a call reading in between sees the candidate both ways.
            old = self._routes.get(plugin_id)
            self._routes[plugin_id] = canary.route
            self._providers.clear()
            del self.canaries[plugin_id]
        return old, canary

    def get(self, plugin_id: str) -> Route | None:
        return self._routes.get(plugin_id)

    def all(self) -> list[Route]:
        with self._lock:
            return list(self._routes.values())

    def providers(self, point: str) -> list[Provider]:
        """(route, extension) pairs for ``point``, highest priority first (ties by plugin id
        and extension name, so the order is the same on every replica)."""
        found = self._providers.get(point)
        if found is None:
            with self._lock:
                pairs = [
                    (route, ext)
                    for route in self._routes.values()
                    for ext in route.extensions
                    if ext.point.value == point
                ]
                pairs.sort(key=lambda pair: (-pair[1].priority, pair[0].plugin_id, pair[1].name))
                found = tuple(pairs)
                if point in POINTS:  # only the known points: the table stays bounded
                    self._providers[point] = found
        # A copy: a caller that changes its list cannot change the table.
        return list(found)
