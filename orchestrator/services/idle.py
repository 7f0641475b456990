"""Idle pause: an ACTIVE plugin that has had no call and no event delivery for
``SUMMIT_IDLE_PAUSE_S`` is frozen in place (Docker pause, the cgroup freezer), and the next call
or delivery thaws it before it goes out (``broker/pause.py`` holds it at the door).

Who knows what, with several replicas:
- Each replica's broker knows when it last called each plugin; every replica writes that to a
  Redis hash every few seconds, and the elected supervisor, which alone decides to pause, reads
  the hash. Without Redis there is one replica, and its own memory is the whole truth. When
  Redis cannot be read the supervisor pauses nothing: it cannot know the others are idle.
- Pausing takes the plugin's lock (no lifecycle operation on it meanwhile), marks it frozen in
  the broker, checks that nothing is in flight, freezes the container, writes ``paused_at`` on
  its row and logs ``plugin.paused``. Every replica hears that event and marks the plugin
  frozen; one that has a call to it in flight (begun before it heard) thaws it at once.
- Any replica thaws: unpause (a no-op when another replica was quicker), then, off the call's
  path, the row is cleared and ``plugin.resumed`` logged, which clears the mark elsewhere. The
  periodic route re-read marks plugins the database has frozen (it never clears a mark: a stale
  mark costs one needless unpause, a missing one a call that waits for nothing).
- Reconcile adopts frozen containers as frozen; health probes leave them alone; lifecycle
  operations thaw a container before they ask it to shut down.
- A plugin with a canary (a candidate version beside its current one) is never paused: its
  calls are split between two containers, and the comparison is what the operator watches.
  Starting a canary thaws the plugin; an operator's pause of it is refused (409
  ``canary_running``).

``plugin.paused`` and ``plugin.resumed`` are not delivered to plugins: a delivery would thaw the
subscriber, which would pause later and thaw the next, and the host would never rest.

On Kubernetes a pod cannot be frozen (``can_pause`` is False): nothing is paused there; pods of
idle plugins keep running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from orchestrator.broker import Broker
from orchestrator.broker.errors import PluginUnreachable
from orchestrator.broker.routes import Route
from orchestrator.domain.errors import Conflict, NotFound, SummitError
from orchestrator.events.bus import Event, EventBus
from orchestrator.events.fanout import NOT_FOR_PLUGINS
from orchestrator.runtime.base import ContainerRuntime
from orchestrator.services.containers import endpoint_of
from orchestrator.services.locks import PluginLocks
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import utcnow

__all__ = ["PAUSE_EVENTS", "IdlePause"]

log = logging.getLogger(__name__)

PAUSE_EVENTS = tuple(sorted(NOT_FOR_PLUGINS))
# How often the supervisor looks for idle plugins and every replica shares its last calls:
# a tenth of the idle time, within these bounds.
MIN_TICK_S, MAX_TICK_S = 0.25, 10.0


class IdlePause:
    def __init__(
        self,
        *,
        engine: Engine,
        runtime: ContainerRuntime,
        broker: Broker,
        locks: PluginLocks,
        idle_s: float,
        events: EventBus | None = None,
        redis_url: str | None = None,
        instance: str = "summit",
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.broker = broker
        self.gate = broker.pauses
        self.locks = locks
        self.idle_s = idle_s
        self.events = events
        self.leader = leader
        self.enabled = idle_s > 0 and runtime.can_pause
        self.tick_s = min(MAX_TICK_S, max(MIN_TICK_S, idle_s / 10))
        self._redis = redis.Redis.from_url(redis_url) if redis_url and self.enabled else None
        self._key = f"{instance}:idle:last-call"
        self._shared: dict[str, float] = {}  # what this replica last wrote to Redis
        # When the supervisor first saw each container: one never called is idle from then.
        self._seen: dict[tuple[str, str], float] = {}
        self._guard = threading.Lock()
        self._plugin_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._background: set[asyncio.Task[Any]] = set()
        if runtime.can_pause:
            # Even with pausing off: a container frozen before (another replica, or before a
            # restart with other settings) must still be thawed by the next call.
            self.gate.thaw = self.thaw
            self.gate.thaw_blocking = self.resume_now

    # -- the loop (every replica) -------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="summit-idle", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._redis is not None:
            self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.share_last_calls()
                if self.leader():
                    self.pause_idle()
            except Exception:
                log.exception("idle pause round failed")

    # -- activity shared between replicas -----------------------------------------------------

    def share_last_calls(self) -> None:
        """Write to Redis the plugins called here since the last write."""
        if self._redis is None:
            return
        fresh = {p: t for p, t in list(self.gate.last_call.items()) if t > self._shared.get(p, 0)}
        if fresh:
            self._redis.hset(self._key, mapping={p: repr(t) for p, t in fresh.items()})
            self._shared.update(fresh)

    def _last_calls_everywhere(self) -> dict[str, float] | None:
        """Each plugin's last call on any replica; None when that cannot be known."""
        mine = dict(self.gate.last_call)
        if self._redis is None:
            return mine
        try:
            raw = self._redis.hgetall(self._key)
        except redis.RedisError as exc:
            log.warning("idle pause skipped: the other replicas' calls cannot be read (%s)", exc)
            return None
        for name, value in raw.items():
            plugin_id = name.decode() if isinstance(name, bytes) else str(name)
            at = float(value)
            mine[plugin_id] = max(at, mine.get(plugin_id, 0.0))
        return mine

    # -- pausing (the elected supervisor) -----------------------------------------------------

    def pause_idle(self) -> list[str]:
        """Freeze every routed plugin idle for ``idle_s``; the ones frozen now."""
        if not self.enabled:
            return []
        last_calls = self._last_calls_everywhere()
        if last_calls is None:
            return []
        now = self.gate.clock()
        routes = self.broker.routes()
        current = {(r.plugin_id, str(r.endpoint)) for r in routes}
        for gone in set(self._seen) - current:
            del self._seen[gone]
        paused = []
        for route in routes:
            plugin_id = route.plugin_id
            seen = self._seen.setdefault((plugin_id, str(route.endpoint)), now)
            if plugin_id in self.gate.paused or self.broker.canary(plugin_id) is not None:
                continue
            if now - max(seen, last_calls.get(plugin_id, 0.0)) < self.idle_s:
                continue
            try:
                if self.pause(route):
                    paused.append(plugin_id)
            except SummitError as exc:
                log.warning("could not pause %s: %s", plugin_id, exc.message)
        return paused

    def pause_now(self, plugin_id: str) -> None:
        """An operator's pause: freeze the plugin now, however recently it was called (not
        while a call is in flight: 409 ``plugin_busy``)."""
        if not self.runtime.can_pause:
            raise Conflict(
                "this container runtime cannot freeze a plugin (a pod keeps running)",
                code="pause_unsupported",
            )
        route = self.broker.route(plugin_id)
        if route is None:
            raise Conflict(
                f"plugin {plugin_id} is not ACTIVE",
                code="not_active",
                details={"plugins": [plugin_id]},
            )
        if self.broker.canary(plugin_id) is not None:
            raise Conflict(
                f"plugin {plugin_id} has a canary running: a plugin with a canary is not paused",
                code="canary_running",
            )
        if plugin_id in self.gate.paused:
            return
        if not self.pause(route, idle_s=0):
            raise Conflict(
                f"plugin {plugin_id} is busy (a call in flight or an operation under way)",
                code="plugin_busy",
            )

    def resume_by_operator(self, plugin_id: str) -> None:
        """Thaw the plugin now if it is frozen (by the database's word or this replica's)."""
        with session_scope(self.engine) as session:
            row = plugin_store.current_container(session, plugin_id=plugin_id)
            frozen = row is not None and row.paused_at is not None
        if frozen and self.runtime.can_pause:
            self.gate.paused.add(plugin_id)
        if plugin_id in self.gate.paused:
            self.resume_now(plugin_id)

    def pause(self, route: Route, *, idle_s: float | None = None) -> bool:
        """Freeze ``route``'s container unless anything is busy with the plugin (or it was
        called within ``idle_s``, the set idle time by default)."""
        plugin_id = route.plugin_id
        with self.locks.attempt(plugin_id) as mine:
            if not mine:
                return False  # a lifecycle operation (here or on another replica)
            with self._lock_of(plugin_id):
                self.gate.paused.add(plugin_id)  # calls from now on wait for a thaw
                try:
                    container_id = self._freeze(route, self.idle_s if idle_s is None else idle_s)
                except BaseException:
                    self.gate.paused.discard(plugin_id)
                    raise
                if container_id is None:
                    self.gate.paused.discard(plugin_id)
                    return False
        log.info("paused %s after %gs without calls", plugin_id, self.idle_s)
        self._emit("plugin.paused", plugin_id, {"container": container_id, "idle_s": self.idle_s})
        return True

    def _freeze(self, route: Route, idle_s: float) -> str | None:
        plugin_id = route.plugin_id
        last = self.gate.last_call.get(plugin_id, 0.0)
        if self.broker.in_flight(route.endpoint) or self.gate.clock() - last < idle_s:
            return None  # a call came in meanwhile
        if self.broker.route(plugin_id) != route:
            return None  # moved meanwhile
        with session_scope(self.engine) as session:
            row = plugin_store.current_container(session, plugin_id=plugin_id)
            if row is None or endpoint_of(row) != route.endpoint:
                return None
            if plugin_store.canary_container(session, plugin_id=plugin_id) is not None:
                return None  # a canary started (perhaps on another replica): not paused
            container_id = row.id
        self.runtime.pause(container_id)
        try:
            with session_scope(self.engine) as session:
                plugin_store.set_container_paused(
                    session, container_id=container_id, paused_at=utcnow()
                )
        except BaseException:
            self.runtime.unpause(container_id)
            raise
        return container_id

    # -- thawing (any replica) ----------------------------------------------------------------

    async def thaw(self, plugin_id: str) -> None:
        """The broker's wait before a call to a frozen plugin (event loop)."""
        try:
            container_id = await asyncio.to_thread(self.resume, plugin_id)
        except SummitError as exc:
            raise PluginUnreachable(
                f"plugin {plugin_id} could not be resumed: {exc.message}",
                details={"plugin": plugin_id},
            ) from exc
        if container_id is not None:
            # The row and the event are not the call's business: written after it goes out.
            task = asyncio.create_task(asyncio.to_thread(self._record_resumed, container_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def resume(self, plugin_id: str) -> str | None:
        """Thaw the plugin's container (a thread); its id, or None if there was none to thaw.
        The caller records the resume (``_record_resumed``)."""
        with self._lock_of(plugin_id):
            if plugin_id not in self.gate.paused:
                return None  # thawed while this caller waited
            with session_scope(self.engine) as session:
                row = plugin_store.current_container(session, plugin_id=plugin_id)
                container_id = row.id if row is not None else None
            if container_id is not None:
                try:
                    self.runtime.unpause(container_id)
                except NotFound:
                    container_id = None  # removed meanwhile: the call finds out what is there
            self.gate.paused.discard(plugin_id)
            self.gate.touch(plugin_id)
            return container_id

    def resume_now(self, plugin_id: str) -> None:
        """Thaw and record, for a thread that must talk to the plugin (a new config)."""
        container_id = self.resume(plugin_id)
        if container_id is not None:
            self._record_resumed(container_id, plugin_id)

    def _record_resumed(self, container_id: str, plugin_id: str | None = None) -> None:
        try:
            with session_scope(self.engine) as session:
                row = plugin_store.get_container(session, container_id=container_id)
                if row is None or row.paused_at is None:
                    return  # recorded by another replica, or gone
                plugin_id = row.plugin_id
                plugin_store.set_container_paused(
                    session, container_id=container_id, paused_at=None
                )
        except Exception:
            log.exception("recording the resume of %s failed", container_id[:12])
            return
        self._emit("plugin.resumed", plugin_id, {"container": container_id})

    # -- what other replicas did (event loop) ----------------------------------------------

    async def on_event(self, event: Event) -> None:
        plugin_id = event.subject
        if not plugin_id or not self.runtime.can_pause:
            return
        if event.type == "plugin.resumed":
            self.gate.paused.discard(plugin_id)
            return
        self.gate.paused.add(plugin_id)
        route = self.broker.route(plugin_id)
        if route is not None and self.broker.in_flight(route.endpoint):
            # A call went out here before the news came: it waits on a frozen process.
            await self.gate.thaw_now(plugin_id)

    # -- helpers -------------------------------------------------------------------------------

    def _lock_of(self, plugin_id: str) -> threading.Lock:
        with self._guard:
            return self._plugin_locks.setdefault(plugin_id, threading.Lock())

    def _emit(self, event_type: str, plugin_id: str | None, payload: dict[str, Any]) -> None:
        if self.events is None or plugin_id is None:
            return
        try:
            self.events.emit_sync(
                event_type, source="orchestrator", subject=plugin_id, payload=payload
            )
        except Exception:
            log.exception("logging %s of %s failed", event_type, plugin_id)

    async def aclose(self) -> None:
        for task in list(self._background):
            await asyncio.gather(task, return_exceptions=True)
