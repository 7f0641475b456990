"""The routing table: the current container of every ACTIVE plugin, and who provides a point.

The lifecycle writes the table from its threads (enable, reload, disable, reconcile); calls
read it on the event loop. A route is replaced whole, so a reload switches every new call to
the new container at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import Endpoint

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
        self._lock = threading.Lock()

    def set(self, route: Route) -> Route | None:
        """Make ``route`` the plugin's; return the one it replaces."""
        with self._lock:
            old = self._routes.get(route.plugin_id)
            self._routes[route.plugin_id] = route
            self._providers.clear()
        return old

    def drop(self, plugin_id: str) -> Route | None:
        with self._lock:
            route = self._routes.pop(plugin_id, None)
            self._providers.clear()
        return route

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
