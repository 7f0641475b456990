"""Routes shared by replicas: every replica's broker routes each plugin as the database says.

The database is the truth (a plugin's state, its current container, and its canary's
candidate container with the share of calls it takes). A replica learns of a change another
replica made from the lifecycle event it logged (``plugin.enabled``, ``plugin.disabling``,
``plugin.failed``, ``plugin.canary``, ...), which reaches every replica through the event
stream, and re-reads that one plugin. Under that, every ``ROUTE_RESYNC_S`` it re-reads them all
(the safety net: an event lost while Redis was away, a limits change, which logs no event).
A call that finds its container gone asks too (``Broker.refresh``).

A replica never re-reads a plugin while one of its own operations holds that plugin's lock:
the operation sets the route itself, and a read in between could see the database a moment
before the operation commits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from orchestrator.broker import Broker, Route
from orchestrator.domain.lifecycle import PluginState
from orchestrator.events.bus import Event
from orchestrator.services.containers import PluginContainers, endpoint_of
from orchestrator.services.install import manifest_of, resources_for
from orchestrator.services.locks import PluginLocks
from orchestrator.store import crud
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import Container

__all__ = ["ROUTE_EVENTS", "RouteSync"]

log = logging.getLogger(__name__)

# The events after which a plugin's route may have changed.
ROUTE_EVENTS = (
    "plugin.enabled",
    "plugin.reloaded",
    "plugin.failed",
    "plugin.disabling",
    "plugin.disabled",
    "plugin.uninstalled",
    "plugin.canary",
)


class RouteSync:
    def __init__(
        self,
        *,
        engine: Engine,
        broker: Broker,
        containers: PluginContainers,
        locks: PluginLocks,
        interval_s: float,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.containers = containers
        self.locks = locks
        self.interval_s = interval_s
        self.synced = threading.Event()  # the first full re-read is done
        # What each plugin's route was last made from here (its version, container, token
        # and limits): a re-read that finds the same skips the manifest.
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one plugin, all plugins (threads) -----------------------------------------------------

    def resync(self, plugin_id: str) -> Route | None:
        """Route ``plugin_id`` as the database says; its route now (None: not ACTIVE here)."""
        with self.locks.attempt_local(plugin_id) as free:
            if free:
                self._apply(plugin_id)
        return self.broker.route(plugin_id)

    def _apply(self, plugin_id: str) -> None:
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            active = plugin is not None and plugin.state == PluginState.ACTIVE.value
            row = crud.current_container(session, plugin_id=plugin_id) if active else None
            endpoint = endpoint_of(row) if row is not None else None
            if plugin is None or row is None or endpoint is None:
                self._applied.pop(plugin_id, None)
                if self.broker.drop_route(plugin_id) is not None:
                    log.info("route of %s dropped: not ACTIVE in the database", plugin_id)
                return
            candidate = plugin_store.canary_container(session, plugin_id=plugin_id)
            key = _route_key(plugin.version, row, plugin.resources, candidate)
            if row.paused_at is not None:
                self.broker.pauses.paused.add(plugin_id)  # see services/idle.py
            if self._applied.get(plugin_id) == key and self.broker.route(plugin_id) is not None:
                return  # as routed: no manifest to parse
            manifest = manifest_of(session, plugin)
            resources, token = dict(plugin.resources), row.call_token
            canary = None
            if candidate is not None and (at := endpoint_of(candidate)) is not None:
                other = manifest_of(session, plugin, candidate.version)
                canary = (at, other, candidate.canary_weight or 0, candidate.call_token)
        self.containers.serve(plugin_id, endpoint, manifest, resources, call_token=token)
        if canary is None:
            self.broker.drop_canary(plugin_id)
        else:
            at, other, weight, canary_token = canary
            self.containers.serve_canary(
                plugin_id,
                at,
                other,
                resources_for(other, self.containers.settings, resources),
                weight=weight,
                call_token=canary_token,
            )
        self._applied[plugin_id] = key

    def resync_all(self) -> None:
        """Re-read every plugin in one read; re-route only those whose route would change
        (a plugin's version, container, token or limits), and drop routes of plugins the
        database no longer has ACTIVE. Cheap when nothing changed: one query for the plugins,
        one for the containers, no manifest parsed."""
        wanted: dict[str, tuple[Any, ...]] = {}
        with session_scope(self.engine) as session:
            current: dict[str, Container] = {}
            candidates: dict[str, Container] = {}
            for row in crud.list_containers(session):
                rows = current if row.canary_weight is None else candidates
                held = rows.get(row.plugin_id)
                if held is None or row.created_at > held.created_at:
                    rows[row.plugin_id] = row
            for plugin in crud.list_plugins(session, state=PluginState.ACTIVE.value):
                newest = current.get(plugin.id)
                if newest is not None:
                    wanted[plugin.id] = _route_key(
                        plugin.version, newest, plugin.resources, candidates.get(plugin.id)
                    )
                    if newest.paused_at is not None:
                        # Only ever marked here, never cleared: a stale mark costs one
                        # needless thaw, a missing one a call to a frozen process.
                        self.broker.pauses.paused.add(plugin.id)
        stale = [r.plugin_id for r in self.broker.routes() if r.plugin_id not in wanted]
        changed = [p for p, key in wanted.items() if self._applied.get(p) != key]
        changed += [p for p in wanted if p not in changed and self.broker.route(p) is None]
        for plugin_id in stale + changed:
            try:
                self.resync(plugin_id)
            except Exception:
                log.exception("re-reading the route of %s failed", plugin_id)

    # -- the event stream (event loop) -------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if event.subject and self.synced.is_set():
            await asyncio.to_thread(self.resync, event.subject)

    async def refresh(self, plugin_id: str) -> Route | None:
        """The broker's question after a call found no container: the route as it is now."""
        return await asyncio.to_thread(self.resync, plugin_id)

    # -- the safety net ----------------------------------------------------------------------

    def start(self, *, after: Callable[[threading.Event], bool]) -> None:
        """Re-read all routes every ``interval_s``, the first time once ``after(stop)`` says
        this replica may (on the elected supervisor: once reconcile has adopted what runs)."""

        def run() -> None:
            if not after(self._stop):
                return
            while not self._stop.is_set():
                try:
                    self.resync_all()
                    self.synced.set()
                except Exception as exc:
                    log.warning("re-reading routes failed: %s", exc)
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=run, name="summit-routes", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def _route_key(
    version: str, row: Container, resources: dict[str, Any], candidate: Container | None
) -> tuple[Any, ...]:
    """What a plugin's routes are made from, besides its versions' manifests: its current
    container, its limits, and its canary's candidate container and weight."""
    canary = None
    if candidate is not None:
        canary = (candidate.id, candidate.endpoint, candidate.call_token, candidate.canary_weight)
    resources_key = json.dumps(resources, sort_keys=True)
    return (version, row.id, row.endpoint, row.call_token, resources_key, canary)
