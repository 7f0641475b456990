"""Routes for a broker that lives outside the orchestrator (a ``summit worker`` process).

The orchestrator's own broker is kept current by the lifecycle service. A worker process has
none, so it reads the routing table from the database: every ACTIVE plugin, its newest
container and the manifest of its current version. It is cheap enough to do before each job.
"""

from __future__ import annotations

from orchestrator.broker import Broker, Route
from orchestrator.domain.lifecycle import PluginState
from orchestrator.domain.manifest import Manifest
from orchestrator.runtime.endpoints import parse_endpoint
from orchestrator.services.containers import route_for
from orchestrator.store import plugins as store
from orchestrator.store.db import Engine, session_scope

DEFAULT_TIMEOUT_MS = 30000


def load_routes(
    engine: Engine, broker: Broker, *, default_timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> list[Route]:
    """Make ``broker``'s routes those of the ACTIVE plugins in the database; return them."""
    wanted: dict[str, Route] = {}
    with session_scope(engine) as session:
        for plugin in store.list_plugins(session, state=PluginState.ACTIVE.value):
            container = store.current_container(session, plugin_id=plugin.id)
            version = store.get_version(session, plugin_id=plugin.id, version=plugin.version)
            if container is None or version is None or not container.endpoint:
                continue
            manifest = Manifest.model_validate(version.manifest)
            wanted[plugin.id] = route_for(
                plugin.id,
                parse_endpoint(container.endpoint),
                manifest,
                plugin.resources,
                default_timeout_ms=default_timeout_ms,
                call_token=container.call_token,
            )
    for route in broker.routes():
        if route.plugin_id not in wanted:
            broker.drop_route(route.plugin_id)
    for plugin_id, route in wanted.items():
        if broker.route(plugin_id) != route:
            broker.set_route(route)
    return list(wanted.values())
