"""Plugin lifecycle: the only code that changes a plugin's state (design rule 2).

Here: the transitions (``_transition`` checks each edge against ``domain/lifecycle.py`` and
stores it with its time, reason and event in one transaction) and the operations that move a
plugin along them: record an install, enable (start), disable (stop), reload, uninstall,
config and limits, and the edges supervision takes (``crashed``, ``recover``). The install
pipeline is ``install.py``, running a container ``containers.py``, crash restarts, health
probes and reconcile ``supervision.py``.

Operations on one plugin are serialised by a per-plugin lock, across replicas on PostgreSQL
(``locks.py``). Crash safety: state is written *before* the side effect it announces
(INITIALIZING before a container is created, UNLOADING before one is stopped), and a container
is recorded only once it is healthy, so reconcile can finish or roll back whatever a killed
orchestrator left half-done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestrator.broker import Broker
from orchestrator.config import Settings
from orchestrator.domain.errors import Conflict, Duplicate, NotFound, SummitError
from orchestrator.domain.lifecycle import PluginState, allowed_actions, next_state
from orchestrator.domain.manifest import Manifest
from orchestrator.events.bus import EventBus
from orchestrator.runtime.base import ContainerRuntime, ContainerStatus
from orchestrator.runtime.endpoints import Endpoint
from orchestrator.services.containers import PluginContainers, endpoint_of, why_stopped
from orchestrator.services.install import (
    PluginImages,
    VersionImage,
    check_config,
    dependents_of,
    manifest_of,
    resolve_dependencies,
    resources_for,
    validate_config,
)
from orchestrator.services.locks import PluginLocks
from orchestrator.services.plugins import PluginView, plugin_view
from orchestrator.store import crud
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import Plugin, PluginVersion, utcnow

log = logging.getLogger(__name__)

# The event each lifecycle action emits (``plugin.failed`` carries the reason).
LIFECYCLE_EVENTS = {
    "install": "plugin.installed",
    "enable": "plugin.enabling",
    "initialized": "plugin.enabled",
    "reload": "plugin.reloaded",
    "fail": "plugin.failed",
    "disable": "plugin.disabling",
    "destroy": "plugin.disabled",
    "uninstall": "plugin.uninstalled",
}
S = PluginState


class LifecycleService:
    def __init__(
        self,
        *,
        engine: Engine,
        runtime: ContainerRuntime,
        broker: Broker,
        containers: PluginContainers,
        images: PluginImages,
        settings: Settings,
        events: EventBus | None = None,
        locks: PluginLocks | None = None,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.broker = broker
        self.containers = containers
        self.images = images
        self.settings = settings
        self.events = events
        self.locks = locks or PluginLocks()

    # -- transitions -------------------------------------------------------------------------

    @contextmanager
    def locked(self, plugin_id: str) -> Iterator[None]:
        """Hold the plugin's lock: one operation on a plugin at a time, across replicas on
        PostgreSQL (``locks.py``)."""
        with self.locks.hold(plugin_id):
            yield

    def _get(self, session: Session, plugin_id: str) -> Plugin:
        plugin = crud.get_plugin(session, plugin_id=plugin_id)
        if plugin is None:
            raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
        return plugin

    def _transition(
        self, session: Session, plugin: Plugin, action: str, reason: str | None = None
    ) -> None:
        current = S(plugin.state)
        target = next_state(current, action)
        if target is None:
            raise Conflict(
                f"cannot {action} plugin {plugin.id} while it is {current.value}",
                code="illegal_transition",
                details={
                    "state": current.value,
                    "action": action,
                    "allowed": allowed_actions(current),
                },
            )
        now = utcnow()
        crud.add_transition(
            session,
            plugin_id=plugin.id,
            from_state=current.value,
            to_state=target.value,
            action=action,
            reason=reason,
            at=now,
        )
        plugin.state, plugin.state_reason, plugin.updated_at = target.value, reason, now
        crud.save_plugin(session, plugin)
        log.info("plugin %s: %s -> %s (%s)", plugin.id, current.value, target.value, reason)
        if self.events is not None:
            # In the same transaction as the state change: both commit, or neither.
            self.events.record(
                session,
                LIFECYCLE_EVENTS[action],
                source="orchestrator",
                subject=plugin.id,
                payload={
                    "plugin": plugin.id,
                    "version": plugin.version,
                    "from": current.value,
                    "to": target.value,
                    "reason": reason,
                },
            )

    def _set_state(self, plugin_id: str, action: str, reason: str | None = None) -> Plugin:
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self._transition(session, plugin, action, reason)
            return plugin

    def _refuse_unless(self, session: Session, plugin: Plugin, action: str) -> None:
        """Raise the 409 of ``action`` now, before any side effect, if it is not allowed."""
        if next_state(S(plugin.state), action) is None:
            self._transition(session, plugin, action)

    # -- install -----------------------------------------------------------------------------

    def record_install(
        self,
        manifest: Manifest,
        *,
        config: dict[str, Any],
        image: VersionImage,
        scan: dict[str, Any],
    ) -> PluginView:
        """Store a checked, built (or pulled) version: a new plugin is LOADED; an upgrade of
        an ACTIVE one waits for reload, keeping the old version's grants until then."""
        try:
            with self.locked(manifest.id), session_scope(self.engine) as session:
                resolve_dependencies(session, manifest)
                plugin = crud.get_plugin(session, plugin_id=manifest.id)
                crud.add_version(
                    session,
                    plugin_id=manifest.id,
                    version=manifest.version,
                    manifest=manifest.to_json(),
                    image=image.image,
                    image_id=image.image_id,
                    source=image.source,
                    source_digest=image.source_digest,
                )
                crud.add_scan_report(
                    session, plugin_id=manifest.id, version=manifest.version, report=scan
                )
                if plugin is None:
                    plugin = crud.add_plugin(
                        session,
                        plugin_id=manifest.id,
                        version=manifest.version,
                        state=S.UNLOADED.value,
                        config=config,
                        resources=resources_for(manifest, self.settings),
                    )
                    self._transition(session, plugin, "install", f"installed {manifest.version}")
                elif plugin.state == S.ACTIVE.value:
                    plugin.pending_version, plugin.updated_at = manifest.version, utcnow()
                    crud.save_plugin(session, plugin)
                    return plugin_view(session, plugin)
                else:
                    plugin.version, plugin.pending_version = manifest.version, None
                    plugin.config = config
                    plugin.resources = resources_for(manifest, self.settings, plugin.resources)
                    plugin.updated_at = utcnow()
                    crud.save_plugin(session, plugin)
                crud.set_grants(
                    session,
                    plugin_id=manifest.id,
                    permissions=[p.value for p in manifest.permissions],
                )
                return plugin_view(session, plugin)
        except Duplicate:
            # Another install (here, or on another replica) recorded this version first.
            raise Conflict(
                f"{manifest.id} {manifest.version} is already installed", code="already_installed"
            ) from None

    # -- enable ------------------------------------------------------------------------------

    def enable(self, plugin_id: str, *, reason: str = "enabled by operator") -> Plugin:
        self.runtime.ping()  # Docker down: 503 before any state changes.
        return self._enable(plugin_id, reason=reason, stack=())

    def _enable(self, plugin_id: str, *, reason: str, stack: tuple[str, ...]) -> Plugin:
        if plugin_id in stack:
            raise Conflict(
                "dependency cycle: " + " -> ".join((*stack, plugin_id)), code="dependency_cycle"
            )
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            deps = resolve_dependencies(session, manifest_of(session, plugin))
        for dep in deps:
            if dep.state != S.ACTIVE.value:
                self._enable(dep.id, reason=f"dependency of {plugin_id}", stack=(*stack, plugin_id))
        with self.locked(plugin_id):
            self._set_state(plugin_id, "enable", reason)
            return self._start(plugin_id)

    def _start(self, plugin_id: str) -> Plugin:
        """Run the plugin's container until it is initialized (INITIALIZING -> ACTIVE/FAILED)."""
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            manifest = manifest_of(session, plugin)
            version = crud.get_version(session, plugin_id=plugin_id, version=plugin.version)
            assert version is not None
            grants = crud.list_grants(session, plugin_id=plugin_id)
            config, resources = dict(plugin.config), dict(plugin.resources)
            signed = is_signed(session, version)
        try:
            status, endpoint = self._run(version, resources, config, grants, signed=signed)
        except SummitError as exc:
            self._set_state(plugin_id, "fail", exc.message)
            raise
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self.containers.record(session, plugin_id, plugin.version, status)
            self._transition(session, plugin, "initialized", "healthy and initialized")
        self.containers.serve(
            plugin_id, endpoint, manifest, resources, call_token=status.call_token
        )
        return plugin

    def _run(
        self,
        version: PluginVersion,
        resources: dict[str, Any],
        config: dict[str, Any],
        grants: list[str],
        *,
        signed: bool,
    ) -> tuple[ContainerStatus, Endpoint]:
        """A healthy, initialized container of ``version`` and its endpoint, its image made
        again first if it is gone from the host (``docker image prune -a``)."""
        status = self.containers.start(
            version.plugin_id,
            version=version.version,
            image=self.images.ensure(version),
            resources=resources,
            config=config,
            grants=grants,
            signed=signed,
        )
        assert status.endpoint is not None  # containers.start refuses one without
        return status, status.endpoint

    # -- disable -----------------------------------------------------------------------------

    def disable(
        self, plugin_id: str, *, cascade: bool = False, reason: str = "disabled by operator"
    ) -> Plugin:
        with session_scope(self.engine) as session:
            self._refuse_unless(session, self._get(session, plugin_id), "disable")
            users = dependents_of(session, plugin_id, active_only=True)
        if users and not cascade:
            raise Conflict(
                f"ACTIVE plugins depend on {plugin_id}: {', '.join(users)}",
                code="has_dependents",
                details={"dependents": users, "hint": "disable them first or pass cascade=true"},
            )
        for user in users:
            self.disable(user, cascade=True, reason=f"dependency {plugin_id} disabled")
        self.runtime.ping()
        with self.locked(plugin_id):
            self._set_state(plugin_id, "disable", reason)
            self.containers.stop_all(plugin_id, graceful=True)
            return self._set_state(plugin_id, "destroy", reason)

    # -- reload ------------------------------------------------------------------------------

    def reload(self, plugin_id: str, *, reason: str = "reloaded by operator") -> Plugin:
        """Start the pending (or same) version beside the running one; switch traffic once it
        is healthy, then retire the old container after its calls have drained."""
        self.runtime.ping()
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self._refuse_unless(session, plugin, "reload")
                target = plugin.pending_version or plugin.version
                version = crud.get_version(session, plugin_id=plugin_id, version=target)
                assert version is not None
                manifest = Manifest.model_validate(version.manifest)
                if target != plugin.version:
                    # Approved when the upgrade was installed; granted as it starts serving.
                    grants = sorted(p.value for p in manifest.permissions)
                else:
                    grants = crud.list_grants(session, plugin_id=plugin_id)
                resources = resources_for(manifest, self.settings, plugin.resources)
                config = dict(plugin.config)
                validate_config(manifest, config)
                signed = is_signed(session, version)
                old = [
                    (r.id, endpoint_of(r), r.call_token)
                    for r in crud.list_containers(session, plugin_id=plugin_id)
                ]
            status, endpoint = self._run(version, resources, config, grants, signed=signed)
            # The new container is healthy: switch traffic, then record it.
            old_route = self.containers.serve(
                plugin_id, endpoint, manifest, resources, call_token=status.call_token
            )
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                for container_id, _, _ in old:
                    crud.delete_container(session, container_id=container_id)
                self.containers.record(session, plugin_id, target, status)
                previous = plugin.version
                if previous != target:
                    crud.set_grants(session, plugin_id=plugin_id, permissions=grants)
                plugin.version, plugin.pending_version = target, None
                plugin.resources = resources
                moved = reason if previous == target else f"{reason}: {previous} -> {target}"
                self._transition(session, plugin, "reload", moved)
            if old_route is not None:
                self.broker.wait_drained(
                    old_route.endpoint, timeout_s=self.settings.shutdown_grace_s
                )
            for container_id, old_endpoint, old_token in old:
                self.containers.retire(
                    container_id, old_endpoint, graceful=True, call_token=old_token
                )
            return plugin

    # -- uninstall ---------------------------------------------------------------------------

    def uninstall(self, plugin_id: str) -> None:
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self._refuse_unless(session, plugin, "uninstall")
                users = dependents_of(session, plugin_id, active_only=False)
                if users:
                    raise Conflict(
                        f"installed plugins depend on {plugin_id}: {', '.join(users)}",
                        code="has_dependents",
                        details={"dependents": users},
                    )
                versions = list(crud.list_versions(session, plugin_id=plugin_id))
            self.runtime.ping()
            self.containers.stop_all(plugin_id, graceful=False)
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self._transition(session, plugin, "uninstall", "uninstalled")
                crud.delete_plugin(session, plugin_id=plugin_id)
            self.images.forget(versions)

    # -- config ------------------------------------------------------------------------------

    def set_config(self, plugin_id: str, config: dict[str, Any]) -> Plugin:
        check_config(config, self.settings)
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                validate_config(manifest_of(session, plugin), config)
                plugin.config, plugin.updated_at = config, utcnow()
                crud.save_plugin(session, plugin)
                grants = crud.list_grants(session, plugin_id=plugin_id)
            self.containers.reinitialize(plugin_id, config=config, grants=grants)
            return plugin

    def set_limits(self, plugin_id: str, limits: dict[str, Any]) -> Plugin:
        """Operator overrides of the broker's limits for one plugin (None: the default)."""
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                resources = {**plugin.resources, **limits}
                for key in [k for k, v in limits.items() if v is None]:
                    del resources[key]  # back to the broker's default
                plugin.resources, plugin.updated_at = resources, utcnow()
                crud.save_plugin(session, plugin)
                manifest = manifest_of(session, plugin)
            route = self.broker.route(plugin_id)
            if route is not None:
                self.containers.serve(
                    plugin_id, route.endpoint, manifest, resources, call_token=route.call_token
                )
            return plugin

    # -- the edges supervision takes ---------------------------------------------------------

    def crashed(self, plugin_id: str, container_id: str, why: str | None) -> bool:
        """The plugin's current container stopped on its own (``why`` None: ask the runtime
        why) or failed its health checks: take it out and mark the plugin FAILED. False when
        ``container_id`` is not the current container of an ACTIVE plugin (one retired by a
        reload, say): nothing is done."""
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = crud.get_plugin(session, plugin_id=plugin_id)
                current = crud.current_container(session, plugin_id=plugin_id)
            if plugin is None or plugin.state != S.ACTIVE.value:
                return False
            if current is None or current.id != container_id:
                return False
            why = why or why_stopped(self.runtime.status(container_id))
            tail = self.containers.take_down(plugin_id, current)
            with session_scope(self.engine) as session:
                crud.delete_container(session, container_id=container_id)
                reason = why + (f"; last log lines:\n{tail}" if tail and why != "OOMKilled" else "")
                self._transition(session, self._get(session, plugin_id), "fail", reason)
            return True

    def recover(self, plugin_id: str, *, adopted: bool) -> str | None:
        """After an orchestrator start, settle what a killed one left half-done: an ACTIVE
        plugin whose container was not adopted, or one caught INITIALIZING, is FAILED and to
        be enabled again ("restart"); one caught UNLOADING is LOADED ("settled")."""
        with self.locked(plugin_id), session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            state = S(plugin.state)
            if state == S.ACTIVE and not adopted:
                self._transition(session, plugin, "fail", "container gone at orchestrator start")
                return "restart"
            if state == S.INITIALIZING:
                self._transition(session, plugin, "fail", "orchestrator stopped during enable")
                return "restart"
            if state == S.UNLOADING:
                self._transition(session, plugin, "destroy", "orchestrator stopped during disable")
                return "settled"
            return None


def is_signed(session: Session, version: PluginVersion) -> bool:
    """Whether the version was installed with a signature verified against the trust store."""
    scan = crud.get_scan_report(session, plugin_id=version.plugin_id, version=version.version)
    return bool(scan is not None and scan.report.get("signature"))
