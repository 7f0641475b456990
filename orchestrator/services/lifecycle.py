"""Plugin lifecycle: the only code that changes a plugin's state (design rule 2).

Here: the transitions (``_transition`` checks each edge against ``domain/lifecycle.py`` and
stores it with its time, reason and event in one transaction) and the operations that move a
plugin along them: record an install, enable (start), disable (stop), reload, upgrade and
rollback (blue/green, undone on their own when the new version does not start), canary,
uninstall, config and limits, and the edges supervision takes (``crashed``, ``recover``). The
install pipeline is ``install.py``, running a container ``containers.py``, crash restarts,
health probes and reconcile ``supervision.py``.

A canary runs an installed version (the candidate) beside the current one of an ACTIVE plugin,
taking ``weight`` percent of its calls (``broker/canary.py``); its container row carries the
weight, so every replica routes the same share. ``promote`` makes the candidate current (an
``upgraded`` history entry and a ``reload`` edge, as an upgrade), ``abort`` retires it; either
switches routes first, waits for the calls in flight on the container leaving, then retires
it, so no call fails. A candidate that stops, or fails its health checks, is dropped and the
plugin stays ACTIVE on its current version. Reload, upgrade, rollback and disable end a running
canary first (``canary_aborted`` in the history), as an automatic quota restart or disable
must not be refused; an idle pause leaves a plugin with a canary alone.

Each operation also writes the plugin's installation history (``store/history.py``) in the
transaction of the change it records, naming who asked: ``actor`` is given by the API from
the caller's credential; what the orchestrator does on its own (crash restarts, reconcile,
quota actions) is ``system``.

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
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.broker import Broker
from orchestrator.broker.canary import CanaryStats, VersionStats
from orchestrator.catalog.solver import PluginVersion as Candidate
from orchestrator.catalog.solver import ResolutionError, resolve
from orchestrator.config import Settings
from orchestrator.domain.errors import Conflict, Duplicate, InvalidInput, NotFound, SummitError
from orchestrator.domain.lifecycle import (
    TRANSITIONAL,
    PluginState,
    allowed_actions,
    next_state,
)
from orchestrator.domain.manifest import Manifest
from orchestrator.domain.versions import Version, VersionError
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
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.history import (
    HistoryAction,
    add_history,
    has_history,
    list_history,
)
from orchestrator.store.models import Container, Plugin, PluginVersion, utcnow
from orchestrator.store.plugins import CanaryAction

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
H = HistoryAction
SYSTEM = "system"  # the actor of what the orchestrator does on its own

# History entries that made a version the current one; ``from_version`` is the one replaced.
_SWITCHES = frozenset({H.INSTALLED, H.UPGRADED, H.ROLLED_BACK, H.RELOADED})
# The event of every change to a canary (its payload's ``action`` says which); the replicas
# re-read the plugin's routes on it.
CANARY_EVENT = "plugin.canary"


class UpgradeRolledBack(Conflict):
    """The new version did not start; the old one kept serving and nothing changed. A 409,
    not a 5xx: the orchestrator and the plugin are as they were, and the same request fails
    the same way until the version is fixed (its start error is in ``details``)."""

    code = "upgrade_rolled_back"


class RollbackFailed(Conflict):
    """The previous version did not start; the current one kept serving."""

    code = "rollback_failed"


class CanaryFailed(Conflict):
    """The candidate version did not start (health, initialize, startup timeout): nothing was
    left behind and the current version serves every call, as before."""

    code = "canary_failed"


class CanaryVersion(BaseModel):
    version: str
    container: str | None = Field(description="The id of the container serving this version")
    calls: int = Field(description="Calls to this version through this replica since the start")
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class CanaryView(BaseModel):
    plugin: str
    state: str = Field(description="``running``: the candidate takes its share of the calls")
    weight: int = Field(description="Percent of the plugin's calls sent to the candidate")
    started_at: datetime
    current: CanaryVersion
    candidate: CanaryVersion


class HistoryEntry(BaseModel):
    id: int
    plugin_id: str
    action: str
    version: str
    from_version: str | None
    actor: str
    reason: str | None
    at: datetime


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next: int | None = Field(description="The ``before`` of the next (older) page; None: last")


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

    def _set_state(
        self,
        plugin_id: str,
        action: str,
        reason: str | None = None,
        *,
        record: HistoryAction | None = None,
        actor: str = SYSTEM,
    ) -> Plugin:
        """Take one edge; with ``record``, write that history entry in the same transaction."""
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self._transition(session, plugin, action, reason)
            if record is not None:
                self._record(session, plugin, record, actor=actor, reason=reason)
            return plugin

    @staticmethod
    def _record(
        session: Session,
        plugin: Plugin,
        action: HistoryAction,
        *,
        actor: str,
        reason: str | None = None,
        version: str | None = None,
        from_version: str | None = None,
    ) -> None:
        """One history entry about ``plugin`` (by default, about its current version)."""
        add_history(
            session,
            plugin_id=plugin.id,
            action=action,
            version=version or plugin.version,
            from_version=from_version,
            actor=actor,
            reason=reason,
        )

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
        actor: str = SYSTEM,
    ) -> PluginView:
        """Store a checked, built (or pulled) version: a new plugin is LOADED; a new version
        of an ACTIVE one waits for an upgrade (or reload), keeping the old version's grants
        until then; a new version of a plugin that is not running replaces its version now."""
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
                    self._record(session, plugin, H.INSTALLED, actor=actor)
                elif plugin.state == S.ACTIVE.value:
                    plugin.pending_version, plugin.updated_at = manifest.version, utcnow()
                    crud.save_plugin(session, plugin)
                    self._record(
                        session,
                        plugin,
                        H.INSTALLED,
                        actor=actor,
                        version=manifest.version,
                        reason=f"pending: {plugin.version} keeps serving until an upgrade",
                    )
                    return plugin_view(session, plugin)
                else:
                    replaced = plugin.version
                    self._record(
                        session,
                        plugin,
                        H.INSTALLED,
                        actor=actor,
                        version=manifest.version,
                        from_version=replaced,
                        reason=f"replaces {replaced} at once ({plugin.state}: not running)",
                    )
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

    def enable(
        self, plugin_id: str, *, reason: str = "enabled by operator", actor: str = SYSTEM
    ) -> Plugin:
        self.runtime.ping()  # Docker down: 503 before any state changes.
        return self._enable(plugin_id, reason=reason, actor=actor, stack=())

    def _enable(self, plugin_id: str, *, reason: str, actor: str, stack: tuple[str, ...]) -> Plugin:
        if plugin_id in stack:
            raise Conflict(
                "dependency cycle: " + " -> ".join((*stack, plugin_id)), code="dependency_cycle"
            )
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            deps = resolve_dependencies(session, manifest_of(session, plugin))
        for dep in deps:
            if dep.state != S.ACTIVE.value:
                self._enable(
                    dep.id,
                    reason=f"dependency of {plugin_id}",
                    actor=actor,
                    stack=(*stack, plugin_id),
                )
        with self.locked(plugin_id):
            self._set_state(plugin_id, "enable", reason)
            return self._start(plugin_id, reason=reason, actor=actor)

    def _start(self, plugin_id: str, *, reason: str, actor: str) -> Plugin:
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
            self._set_state(plugin_id, "fail", exc.message, record=H.FAILED, actor=actor)
            raise
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self.containers.record(session, plugin_id, plugin.version, status)
            self._transition(session, plugin, "initialized", "healthy and initialized")
            self._record(session, plugin, H.ENABLED, actor=actor, reason=reason)
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
        self,
        plugin_id: str,
        *,
        cascade: bool = False,
        reason: str = "disabled by operator",
        actor: str = SYSTEM,
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
            self.disable(user, cascade=True, reason=f"dependency {plugin_id} disabled", actor=actor)
        self.runtime.ping()
        with self.locked(plugin_id):
            self._end_canary(plugin_id, reason=f"the plugin is disabled: {reason}", actor=actor)
            self._set_state(plugin_id, "disable", reason)
            self.containers.stop_all(plugin_id, graceful=True)
            return self._set_state(plugin_id, "destroy", reason, record=H.DISABLED, actor=actor)

    # -- reload, upgrade, rollback -----------------------------------------------------------

    def reload(
        self, plugin_id: str, *, reason: str = "reloaded by operator", actor: str = SYSTEM
    ) -> Plugin:
        """Start the pending (or same) version beside the running one; switch traffic once it
        is healthy, then retire the old container after its calls have drained."""
        self.runtime.ping()
        with self.locked(plugin_id):
            return self._take_over(plugin_id, None, H.RELOADED, reason=reason, actor=actor)

    def upgrade(self, plugin_id: str, *, version: str | None = None, actor: str = SYSTEM) -> Plugin:
        """Move to ``version``, which must be installed already (default: the pending one).

        Refused (409 ``dependents_would_break``) when an installed plugin's range for this one
        does not admit it. An ACTIVE plugin takes the new version over blue/green: if it does
        not start (health, initialize, startup timeout), the old container never stopped
        serving, the pending version is cleared, the history says ``upgrade_failed`` and
        :class:`UpgradeRolledBack` is raised. A plugin that is not running just changes
        version and starts with it at its next enable."""
        return self._move(plugin_id, version, H.UPGRADED, actor=actor)

    def has_version(self, plugin_id: str, version: str | None) -> bool:
        """Whether an upgrade to ``version`` can be served from what is installed: that
        version is recorded, or (None) one is waiting to take over. Else it may come from
        the catalog."""
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                return False
            if version is None:
                return plugin.pending_version is not None
            return crud.get_version(session, plugin_id=plugin_id, version=version) is not None

    def rollback(self, plugin_id: str, *, actor: str = SYSTEM) -> Plugin:
        """Back to the version the current one replaced (by install, upgrade, reload or
        rollback, as the history records it; so a second rollback undoes the first), the
        same way as :meth:`upgrade`; 409 ``no_previous_version`` when there is none."""
        return self._move(plugin_id, None, H.ROLLED_BACK, actor=actor)

    def _move(
        self, plugin_id: str, version: str | None, action: HistoryAction, *, actor: str
    ) -> Plugin:
        upgrading = action == H.UPGRADED
        verb = "upgraded" if upgrading else "rolled back"
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                if S(plugin.state) in TRANSITIONAL:
                    raise Conflict(
                        f"cannot {'upgrade' if upgrading else 'roll back'} plugin {plugin_id} "
                        f"while it is {plugin.state}",
                        code="illegal_transition",
                        details={
                            "state": plugin.state,
                            "action": "upgrade" if upgrading else "rollback",
                            "allowed": allowed_actions(S(plugin.state)),
                        },
                    )
                row = (
                    self._upgrade_target(session, plugin, version)
                    if upgrading
                    else self._rollback_target(session, plugin)
                )
                manifest = Manifest.model_validate(row.manifest)
                validate_config(manifest, plugin.config)  # 422 before anything starts
                self._refuse_breaking(session, plugin, row, manifest)
                current = plugin.version
                if plugin.state != S.ACTIVE.value:
                    self._switch_stopped(session, plugin, row, manifest, action, actor=actor)
                    return plugin
            self.runtime.ping()
            try:
                return self._take_over(
                    plugin_id, row.version, action, reason=f"{verb} by {actor}", actor=actor
                )
            except SummitError as exc:
                failed = H.UPGRADE_FAILED if upgrading else H.ROLLBACK_FAILED
                self._gave_up(plugin_id, row.version, exc, failed, actor=actor)
                first = (exc.message.splitlines() or [exc.code])[0]
                error = UpgradeRolledBack if upgrading else RollbackFailed
                undone = "the upgrade was rolled back" if upgrading else "nothing changed"
                raise error(
                    f"{plugin_id} {row.version} did not start ({first}); {current} kept "
                    f"serving and {undone}",
                    details={
                        "version": row.version,
                        "serving": current,
                        "error": {"code": exc.code, "message": exc.message},
                    },
                ) from exc

    def _take_over(
        self,
        plugin_id: str,
        version: str | None,
        record: HistoryAction,
        *,
        reason: str,
        actor: str,
    ) -> Plugin:
        """Blue/green, under the plugin's lock: run ``version`` (default: the pending one,
        else the current one) beside the serving container, switch traffic once it is healthy
        and initialized, then retire the old container after its calls have drained. When the
        new container does not start, its error is raised and the old one serves on: nothing
        was switched or recorded. A running canary is ended first."""
        self._end_canary(plugin_id, reason=f"{record.value} by {actor}", actor=actor)
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self._refuse_unless(session, plugin, "reload")
            target = version or plugin.pending_version or plugin.version
            row = crud.get_version(session, plugin_id=plugin_id, version=target)
            assert row is not None
            manifest = Manifest.model_validate(row.manifest)
            if target != plugin.version:
                # Approved when that version was installed; granted as it starts serving.
                grants = sorted(p.value for p in manifest.permissions)
            else:
                grants = crud.list_grants(session, plugin_id=plugin_id)
            resources = resources_for(manifest, self.settings, plugin.resources)
            config = dict(plugin.config)
            validate_config(manifest, config)
            signed = is_signed(session, row)
            old = [
                (r.id, endpoint_of(r), r.call_token)
                for r in crud.list_containers(session, plugin_id=plugin_id)
            ]
        status, endpoint = self._run(row, resources, config, grants, signed=signed)
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
            self._record(
                session,
                plugin,
                record,
                actor=actor,
                reason=moved,
                from_version=previous if previous != target else None,
            )
        if old_route is not None:
            self.broker.wait_drained(old_route.endpoint, timeout_s=self.settings.shutdown_grace_s)
        for container_id, old_endpoint, old_token in old:
            self.containers.retire(container_id, old_endpoint, graceful=True, call_token=old_token)
        return plugin

    def _gave_up(
        self, plugin_id: str, target: str, exc: SummitError, failed: HistoryAction, *, actor: str
    ) -> None:
        """After a version failed to take over: it is no longer pending, and the history says
        why (the old version is current and serving, as it was)."""
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            if plugin.pending_version == target:
                plugin.pending_version, plugin.updated_at = None, utcnow()
                crud.save_plugin(session, plugin)
            self._record(
                session,
                plugin,
                failed,
                actor=actor,
                version=target,
                from_version=plugin.version,
                reason=exc.message,
            )
        log.warning("plugin %s: %s to %s undone: %s", plugin_id, failed.value, target, exc.message)

    def _switch_stopped(
        self,
        session: Session,
        plugin: Plugin,
        row: PluginVersion,
        manifest: Manifest,
        action: HistoryAction,
        *,
        actor: str,
    ) -> None:
        """Change the version of a plugin that is not running: no container to switch over;
        it starts with this version (and its permissions) at its next enable."""
        previous = plugin.version
        plugin.version, plugin.pending_version = row.version, None
        plugin.resources = resources_for(manifest, self.settings, plugin.resources)
        plugin.updated_at = utcnow()
        crud.save_plugin(session, plugin)
        crud.set_grants(
            session, plugin_id=plugin.id, permissions=[p.value for p in manifest.permissions]
        )
        self._record(
            session,
            plugin,
            action,
            actor=actor,
            from_version=previous,
            reason=f"{previous} -> {row.version} while {plugin.state}: runs from its next enable",
        )

    def _upgrade_target(
        self, session: Session, plugin: Plugin, version: str | None
    ) -> PluginVersion:
        if version is None:
            if plugin.pending_version is None:
                raise Conflict(
                    f"no version of {plugin.id} is waiting to take over from {plugin.version}: "
                    "install the new version first (POST /v1/plugins), or name an installed "
                    'one ({"version": "..."})',
                    code="no_upgrade",
                    details={
                        "version": plugin.version,
                        "installed_versions": _installed_versions(session, plugin.id),
                    },
                )
            version = plugin.pending_version
        row = _recorded_version(session, plugin.id, version)
        if row.version == plugin.version:
            raise Conflict(
                f"{plugin.id} is at {plugin.version} already",
                code="no_upgrade",
                details={
                    "version": plugin.version,
                    "installed_versions": _installed_versions(session, plugin.id),
                },
            )
        return row

    def _rollback_target(self, session: Session, plugin: Plugin) -> PluginVersion:
        previous = _previous_version(session, plugin)
        row = (
            crud.get_version(session, plugin_id=plugin.id, version=previous)
            if previous is not None
            else None
        )
        if row is None:
            gone = f" ({previous} is no longer installed)" if previous is not None else ""
            raise Conflict(
                f"{plugin.id} {plugin.version} has no previous version to roll back to{gone}",
                code="no_previous_version",
                details={"version": plugin.version, "previous": previous},
            )
        return row

    @staticmethod
    def _refuse_breaking(
        session: Session, plugin: Plugin, row: PluginVersion, manifest: Manifest
    ) -> None:
        """409 ``dependents_would_break`` listing every installed plugin whose range for this
        one does not admit ``row``'s version; the solver's 409 when the new version's own
        dependencies are not met by what is installed."""
        manifests = {p.id: manifest_of(session, p) for p in crud.list_plugins(session)}
        # Only the plugins that bear on this move go to the solver: the dependents, and what
        # they and the new version depend on, transitively. A mismatch elsewhere among the
        # installed plugins is not this upgrade's to refuse.
        todo = [
            pid
            for pid, other in manifests.items()
            if pid != plugin.id and any(d.id == plugin.id for d in other.dependencies)
        ]
        todo += [d.id for d in manifest.dependencies]
        near = {plugin.id}
        while todo:
            pid = todo.pop()
            if pid not in near and pid in manifests:
                near.add(pid)
                todo += [d.id for d in manifests[pid].dependencies]
        installed = {pid: Candidate.from_manifest(manifests[pid]) for pid in near}
        offered = [Candidate.from_manifest(manifest)]
        try:
            resolve(
                [(plugin.id, f"={row.version}")],
                source=lambda pid: offered if pid == plugin.id else [],
                installed=installed,
            )
        except ResolutionError as exc:
            items = exc.details if isinstance(exc.details, list) else []
            broken = [
                {
                    "id": want["plugin"],
                    "version": (want["versions"] or [None])[0],
                    "range": want["range"],
                }
                for item in items
                if item.get("problem") == "breaks_dependents"
                for want in item["dependents"]
            ]
            if not broken:
                raise
            raise Conflict(
                f"{plugin.id} {row.version} would break installed plugins that depend on it: "
                + ", ".join(f"{b['id']} wants {b['range']}" for b in broken),
                code="dependents_would_break",
                details={"version": row.version, "dependents": broken},
            ) from None

    # -- canary ------------------------------------------------------------------------------

    def start_canary(
        self, plugin_id: str, *, version: str, weight: int, actor: str = SYSTEM
    ) -> CanaryView:
        """Run the installed ``version`` beside the current one of the ACTIVE plugin and send
        it ``weight`` percent of the calls; again with the same version, change the weight
        (the candidate is not restarted, its statistics carry on).

        404 ``version_not_installed`` (with the installed versions) when ``version`` is not
        installed; 409 ``canary_running`` when another version is the candidate (promote or
        abort it first), ``same_version`` when it is the current one; 409 ``canary_failed``
        when it does not start: nothing is left behind."""
        if not 0 <= weight <= 100:
            raise InvalidInput(
                f"a canary's weight is a percentage (0-100), not {weight}",
                details={"weight": weight},
            )
        self.runtime.ping()
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self._refuse_unless_active(plugin, "canary")
                row = _recorded_version(session, plugin_id, version)
                running = plugin_store.canary_container(session, plugin_id=plugin_id)
                if running is not None and running.version != row.version:
                    raise Conflict(
                        f"{plugin_id} {running.version} is running as a canary: promote or "
                        "abort it first",
                        code="canary_running",
                        details={"version": running.version, "weight": running.canary_weight},
                    )
                if running is None and row.version == plugin.version:
                    raise Conflict(
                        f"{plugin_id} {row.version} is the current version already",
                        code="same_version",
                        details={
                            "version": plugin.version,
                            "installed_versions": _installed_versions(session, plugin_id),
                        },
                    )
                manifest = Manifest.model_validate(row.manifest)
                resources = resources_for(manifest, self.settings, plugin.resources)
                if running is not None:
                    self._reweigh(session, plugin, running, weight, actor=actor)
            if running is None:
                self._launch_canary(plugin_id, row, manifest, resources, weight, actor=actor)
            elif (endpoint := endpoint_of(running)) is not None:
                self.containers.serve_canary(
                    plugin_id,
                    endpoint,
                    manifest,
                    resources,
                    weight=weight,
                    call_token=running.call_token,
                )
            return self.canary(plugin_id)

    def _launch_canary(
        self,
        plugin_id: str,
        row: PluginVersion,
        manifest: Manifest,
        resources: dict[str, Any],
        weight: int,
        *,
        actor: str,
    ) -> None:
        """Start the candidate ``row``, record it, then route its share of the calls to it."""
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            validate_config(manifest, plugin.config)  # 422 before anything starts
            self._refuse_breaking(session, plugin, row, manifest)
            # Approved when that version was installed; its container runs with them.
            grants = sorted(p.value for p in manifest.permissions)
            config = dict(plugin.config)
            signed = is_signed(session, row)
        self._thaw(plugin_id)  # a plugin with a canary is never frozen (services/idle.py)
        try:
            status, endpoint = self._run(row, resources, config, grants, signed=signed)
        except SummitError as exc:
            self._canary_failed_to_start(plugin_id, row.version, exc, actor=actor)
            first = (exc.message.splitlines() or [exc.code])[0]
            raise CanaryFailed(
                f"{plugin_id} {row.version} did not start ({first}); the current version "
                "serves every call",
                details={
                    "version": row.version,
                    "error": {"code": exc.code, "message": exc.message},
                },
            ) from exc
        try:
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self.containers.record(
                    session, plugin_id, row.version, status, canary_weight=weight
                )
                reason = f"{weight}% of the calls beside {plugin.version}"
                self._record_canary(
                    session, plugin, CanaryAction.STARTED, row.version, weight, actor, reason
                )
        except BaseException:
            self.containers.retire(
                status.id, endpoint, graceful=False, call_token=status.call_token
            )
            raise
        self.containers.serve_canary(
            plugin_id, endpoint, manifest, resources, weight=weight, call_token=status.call_token
        )

    def promote_canary(self, plugin_id: str, *, actor: str = SYSTEM) -> Plugin:
        """Make the candidate the current version: every call goes to it from now on, the
        old container is retired once its calls in flight have finished. History
        ``upgraded`` (so a rollback returns to the version it replaced). 409 ``no_canary``
        without a canary, ``dependents_would_break`` as an upgrade."""
        self.runtime.ping()
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                self._refuse_unless(session, plugin, "reload")
                candidate = self._canary_row(session, plugin)
                row = _recorded_version(session, plugin_id, candidate.version)
                manifest = Manifest.model_validate(row.manifest)
                self._refuse_breaking(session, plugin, row, manifest)
                resources = resources_for(manifest, self.settings, plugin.resources)
                endpoint = endpoint_of(candidate)
                old = [
                    (r.id, endpoint_of(r), r.call_token)
                    for r in crud.list_containers(session, plugin_id=plugin_id)
                    if r.id != candidate.id
                ]
            assert endpoint is not None  # containers.start refuses a container without one
            if self.broker.canary(plugin_id) is None:
                # Not routed here yet (adopted a moment ago): route it, to switch it over.
                self.containers.serve_canary(
                    plugin_id,
                    endpoint,
                    manifest,
                    resources,
                    weight=candidate.canary_weight or 0,
                    call_token=candidate.call_token,
                )
            moved = self.broker.promote_canary(plugin_id)
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                for container_id, _, _ in old:
                    crud.delete_container(session, container_id=container_id)
                plugin_store.set_canary_weight(session, container_id=candidate.id, weight=None)
                previous, target = plugin.version, candidate.version
                crud.set_grants(
                    session,
                    plugin_id=plugin_id,
                    permissions=[p.value for p in manifest.permissions],
                )
                plugin.version = target
                if plugin.pending_version == target:
                    plugin.pending_version = None
                plugin.resources = resources
                self._transition(
                    session, plugin, "reload", f"canary promoted by {actor}: {previous} -> {target}"
                )
                reason = f"promoted from a canary at {candidate.canary_weight}%"
                self._record(
                    session, plugin, H.UPGRADED, actor=actor, reason=reason, from_version=previous
                )
                self._canary_event(
                    session, plugin, "promoted", target, candidate.canary_weight, reason
                )
            if moved is not None and moved[0] is not None:
                self.broker.wait_drained(
                    moved[0].endpoint, timeout_s=self.settings.shutdown_grace_s
                )
            for container_id, old_endpoint, old_token in old:
                self.containers.retire(
                    container_id, old_endpoint, graceful=True, call_token=old_token
                )
            return plugin

    def abort_canary(self, plugin_id: str, *, actor: str = SYSTEM) -> Plugin:
        """Send every call to the current version again and retire the candidate once its
        calls in flight have finished (history ``canary_aborted``). 409 ``no_canary``."""
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                self._canary_row(session, self._get(session, plugin_id))
            self._end_canary(plugin_id, reason=f"aborted by {actor}", actor=actor)
            with session_scope(self.engine) as session:
                return self._get(session, plugin_id)

    def canary(self, plugin_id: str) -> CanaryView:
        """The plugin's canary: its weight, and each version's calls, errors and latency
        through this replica since it started here. 404 ``no_canary`` without one."""
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            row = plugin_store.canary_container(session, plugin_id=plugin_id)
            if row is None:
                raise NotFound(f"{plugin_id} has no canary", code="no_canary")
            current = crud.current_container(session, plugin_id=plugin_id)
            version, weight, started_at = plugin.version, row.canary_weight or 0, row.created_at
        live = self.broker.canary(plugin_id)
        routed = live is not None and live.route.version == row.version
        stats = live.stats if live is not None and routed else CanaryStats()

        def side(version: str, container: Container | None, of: VersionStats) -> CanaryVersion:
            return CanaryVersion(
                version=version, container=container.id if container else None, **of.summary()
            )

        return CanaryView(
            plugin=plugin_id,
            state="running",
            weight=weight,
            started_at=started_at,
            current=side(version, current, stats.current),
            candidate=side(row.version, row, stats.candidate),
        )

    def canary_lost(self, plugin_id: str, container_id: str, why: str | None) -> bool:
        """The canary's candidate stopped on its own (``why`` None: ask the runtime why),
        failed its health checks, or outlived its plugin's ACTIVE state: every call goes to
        the current version, the container is removed and the history says why
        (``canary_failed``). The plugin's state is not touched. False when ``container_id``
        is not the candidate."""
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                row = plugin_store.canary_container(session, plugin_id=plugin_id)
            if row is None or row.id != container_id:
                return False
            why = why or why_stopped(self.runtime.status(container_id))
            tail = self.containers.log_tail(container_id)
            self.broker.drop_canary(plugin_id)
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                crud.delete_container(session, container_id=container_id)
                reason = why + (f"; last log lines:\n{tail}" if tail and why != "OOMKilled" else "")
                self._record_canary(
                    session,
                    plugin,
                    CanaryAction.FAILED,
                    row.version,
                    row.canary_weight,
                    SYSTEM,
                    reason,
                )
            self.runtime.remove(container_id)
            self.containers.close_host(container_id, endpoint_of(row))
            log.warning("plugin %s: canary %s dropped: %s", plugin_id, row.version, why)
            return True

    def _end_canary(self, plugin_id: str, *, reason: str, actor: str) -> bool:
        """Retire the plugin's canary, if it has one: no new call reaches the candidate, the
        calls in flight there finish, then it is shut down (history ``canary_aborted``)."""
        with session_scope(self.engine) as session:
            row = plugin_store.canary_container(session, plugin_id=plugin_id)
        if row is None:
            return False
        canary = self.broker.drop_canary(plugin_id)
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            crud.delete_container(session, container_id=row.id)
            self._record_canary(
                session,
                plugin,
                CanaryAction.ABORTED,
                row.version,
                row.canary_weight,
                actor,
                reason,
            )
        endpoint = endpoint_of(row)
        if canary is not None:
            self.broker.wait_drained(
                canary.route.endpoint, timeout_s=self.settings.shutdown_grace_s
            )
        self.containers.retire(row.id, endpoint, graceful=True, call_token=row.call_token)
        return True

    def _reweigh(
        self, session: Session, plugin: Plugin, row: Container, weight: int, *, actor: str
    ) -> None:
        """A new weight for the running candidate ``row`` (nothing when it is the same)."""
        if row.canary_weight == weight:
            return
        before = row.canary_weight
        plugin_store.set_canary_weight(session, container_id=row.id, weight=weight)
        self._record_canary(
            session,
            plugin,
            CanaryAction.WEIGHT,
            row.version,
            weight,
            actor,
            f"{before}% -> {weight}% of the calls",
        )

    def _canary_failed_to_start(
        self, plugin_id: str, version: str, exc: SummitError, *, actor: str
    ) -> None:
        with session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            self._record_canary(
                session, plugin, CanaryAction.FAILED, version, None, actor, exc.message
            )
        log.warning("plugin %s: canary %s did not start: %s", plugin_id, version, exc.message)

    def _record_canary(
        self,
        session: Session,
        plugin: Plugin,
        action: CanaryAction,
        version: str,
        weight: int | None,
        actor: str,
        reason: str | None,
    ) -> None:
        """A canary's history entry and its event (``action`` without ``canary_``), in one
        transaction."""
        plugin_store.add_canary_history(
            session,
            plugin_id=plugin.id,
            action=action,
            version=version,
            from_version=plugin.version,
            actor=actor,
            reason=reason,
        )
        event = action.value.removeprefix("canary_")
        self._canary_event(session, plugin, event, version, weight, reason)

    def _canary_event(
        self,
        session: Session,
        plugin: Plugin,
        action: str,
        version: str,
        weight: int | None,
        reason: str | None,
    ) -> None:
        if self.events is None:
            return
        self.events.record(
            session,
            CANARY_EVENT,
            source="orchestrator",
            subject=plugin.id,
            payload={
                "plugin": plugin.id,
                "action": action,
                "version": version,
                "current": plugin.version,
                "weight": weight,
                "reason": reason,
            },
        )

    @staticmethod
    def _canary_row(session: Session, plugin: Plugin) -> Container:
        row = plugin_store.canary_container(session, plugin_id=plugin.id)
        if row is None:
            raise Conflict(
                f"{plugin.id} has no canary: start one with POST /v1/plugins/{plugin.id}/canary",
                code="no_canary",
                details={"version": plugin.version},
            )
        return row

    @staticmethod
    def _refuse_unless_active(plugin: Plugin, action: str) -> None:
        if plugin.state != S.ACTIVE.value:
            raise Conflict(
                f"cannot start a {action} of plugin {plugin.id} while it is {plugin.state}",
                code="illegal_transition",
                details={
                    "state": plugin.state,
                    "action": action,
                    "allowed": allowed_actions(S(plugin.state)),
                },
            )

    def _thaw(self, plugin_id: str) -> None:
        gate = self.broker.pauses
        if plugin_id in gate.paused and gate.thaw_blocking is not None:
            gate.thaw_blocking(plugin_id)

    # -- history -----------------------------------------------------------------------------

    def history(
        self, plugin_id: str, *, limit: int = 100, before: int | None = None
    ) -> HistoryPage:
        """The plugin's history, newest first, ``limit`` entries older than ``before`` (an
        entry id); ``next`` is the cursor of the following page (None on the last). Kept
        after an uninstall; 404 only for a plugin never installed here."""
        with session_scope(self.engine) as session:
            rows = list_history(session, plugin_id=plugin_id, limit=limit + 1, before_id=before)
            known = bool(rows) or has_history(session, plugin_id=plugin_id)
            if not known and crud.get_plugin(session, plugin_id=plugin_id) is None:
                raise NotFound(
                    f"plugin {plugin_id!r} was never installed here", code="plugin_not_found"
                )
        items = [HistoryEntry.model_validate(r, from_attributes=True) for r in rows[:limit]]
        return HistoryPage(items=items, next=items[-1].id if len(rows) > limit else None)

    # -- uninstall ---------------------------------------------------------------------------

    def uninstall(self, plugin_id: str, *, actor: str = SYSTEM) -> None:
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
                # The history stays: it outlives the plugin's own rows.
                self._record(session, plugin, H.UNINSTALLED, actor=actor)
                crud.delete_plugin(session, plugin_id=plugin_id)
            self.images.forget(versions)

    # -- config ------------------------------------------------------------------------------

    def set_config(self, plugin_id: str, config: dict[str, Any]) -> Plugin:
        check_config(config, self.settings)
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = self._get(session, plugin_id)
                validate_config(manifest_of(session, plugin), config)
                candidate = plugin_store.canary_container(session, plugin_id=plugin_id)
                canary_grants = None
                if candidate is not None:
                    # The candidate takes calls with this config too.
                    other = manifest_of(session, plugin, candidate.version)
                    validate_config(other, config)
                    canary_grants = sorted(p.value for p in other.permissions)
                plugin.config, plugin.updated_at = config, utcnow()
                crud.save_plugin(session, plugin)
                grants = crud.list_grants(session, plugin_id=plugin_id)
            self.containers.reinitialize(
                plugin_id, config=config, grants=grants, canary_grants=canary_grants
            )
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
                canary = self.broker.canary(plugin_id)
                other = manifest_of(session, plugin, canary.route.version) if canary else None
            route = self.broker.route(plugin_id)
            if route is not None:
                self.containers.serve(
                    plugin_id, route.endpoint, manifest, resources, call_token=route.call_token
                )
            if canary is not None and other is not None:
                self.containers.serve_canary(
                    plugin_id,
                    canary.route.endpoint,
                    other,
                    resources_for(other, self.settings, resources),
                    weight=canary.weight,
                    call_token=canary.route.call_token,
                )
            return plugin

    # -- the edges supervision takes ---------------------------------------------------------

    def crashed(self, plugin_id: str, container_id: str, why: str | None) -> bool:
        """The plugin's current container stopped on its own (``why`` None: ask the runtime
        why) or failed its health checks: take it out and mark the plugin FAILED (ending its
        canary). False when ``container_id`` is not the current container of an ACTIVE plugin
        (one retired by a reload, say): nothing is done; or when it is the candidate of the
        plugin's canary: the canary is dropped and the plugin serves on (``canary_lost``)."""
        with self.locked(plugin_id):
            with session_scope(self.engine) as session:
                plugin = crud.get_plugin(session, plugin_id=plugin_id)
                current = crud.current_container(session, plugin_id=plugin_id)
                candidate = plugin_store.canary_container(session, plugin_id=plugin_id)
            if candidate is not None and candidate.id == container_id:
                self.canary_lost(plugin_id, container_id, why)
                return False
            if plugin is None or plugin.state != S.ACTIVE.value:
                return False
            if current is None or current.id != container_id:
                return False
            why = why or why_stopped(self.runtime.status(container_id))
            tail = self.containers.take_down(plugin_id, current)
            with session_scope(self.engine) as session:
                crud.delete_container(session, container_id=container_id)
                reason = why + (f"; last log lines:\n{tail}" if tail and why != "OOMKilled" else "")
                plugin = self._get(session, plugin_id)
                self._transition(session, plugin, "fail", reason)
                self._record(session, plugin, H.FAILED, actor=SYSTEM, reason=reason)
            self._end_canary(plugin_id, reason="the current version crashed", actor=SYSTEM)
            return True

    def recover(self, plugin_id: str, *, adopted: bool) -> str | None:
        """After an orchestrator start, settle what a killed one left half-done: an ACTIVE
        plugin whose container was not adopted, or one caught INITIALIZING, is FAILED and to
        be enabled again ("restart"); one caught UNLOADING is LOADED ("settled")."""
        with self.locked(plugin_id), session_scope(self.engine) as session:
            plugin = self._get(session, plugin_id)
            state = S(plugin.state)
            if state == S.ACTIVE and not adopted:
                why = "container gone at orchestrator start"
                self._transition(session, plugin, "fail", why)
                self._record(session, plugin, H.FAILED, actor=SYSTEM, reason=why)
                return "restart"
            if state == S.INITIALIZING:
                why = "orchestrator stopped during enable"
                self._transition(session, plugin, "fail", why)
                self._record(session, plugin, H.FAILED, actor=SYSTEM, reason=why)
                return "restart"
            if state == S.UNLOADING:
                why = "orchestrator stopped during disable"
                self._transition(session, plugin, "destroy", why)
                self._record(session, plugin, H.DISABLED, actor=SYSTEM, reason=why)
                return "settled"
            return None


def is_signed(session: Session, version: PluginVersion) -> bool:
    """Whether the version was installed with a signature verified against the trust store."""
    scan = crud.get_scan_report(session, plugin_id=version.plugin_id, version=version.version)
    return bool(scan is not None and scan.report.get("signature"))


def _installed_versions(session: Session, plugin_id: str) -> list[str]:
    """The plugin's recorded versions, oldest first (by semantic version)."""
    return sorted(
        (row.version for row in crud.list_versions(session, plugin_id=plugin_id)),
        key=_version_order,
    )


def _version_order(text: str) -> tuple[int, Version | None, str]:
    try:
        return (1, Version.parse(text), text)
    except VersionError:
        return (0, None, text)


def _recorded_version(session: Session, plugin_id: str, version: str) -> PluginVersion:
    """The installed version ``version``: 422 if it is no version at all, 404 if it is not
    installed (with the versions that are)."""
    row = crud.get_version(session, plugin_id=plugin_id, version=version)
    if row is not None:
        return row
    try:
        Version.parse(version)
    except VersionError as exc:
        raise InvalidInput(str(exc), code="invalid_version", details={"version": version}) from None
    raise NotFound(
        f"{plugin_id} {version} is not installed: install it first (POST /v1/plugins)",
        code="version_not_installed",
        details={"version": version, "installed_versions": _installed_versions(session, plugin_id)},
    )


def _previous_version(session: Session, plugin: Plugin) -> str | None:
    """The version the current one replaced: ``from_version`` of the newest history entry
    that made a version current, if it made this one current (the history of an earlier
    installation, before an uninstall, does not count)."""
    before: int | None = None
    while True:
        page = list_history(session, plugin_id=plugin.id, limit=100, before_id=before)
        for entry in page:
            if entry.action == H.UNINSTALLED:
                return None
            if entry.action in _SWITCHES and entry.from_version is not None:
                return entry.from_version if entry.version == plugin.version else None
        if len(page) < 100:
            return None
        before = page[-1].id
