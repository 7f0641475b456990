"""Plugin lifecycle: the only code that changes a plugin's state (design rule 2).

Here: the transitions (``_transition`` checks each edge against ``domain/lifecycle.py`` and
stores it with its time, reason and event in one transaction) and the operations that move a
plugin along them: record an install, enable (start), disable (stop), reload, upgrade and
rollback (blue/green, undone on their own when the new version does not start), uninstall,
config and limits, and the edges supervision takes (``crashed``, ``recover``). The install
pipeline is ``install.py``, running a container ``containers.py``, crash restarts, health
probes and reconcile ``supervision.py``.

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
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.history import (
    HistoryAction,
    add_history,
    has_history,
    list_history,
)
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
H = HistoryAction
SYSTEM = "system"  # the actor of what the orchestrator does on its own

# History entries that made a version the current one; ``from_version`` is the one replaced.
_SWITCHES = frozenset({H.INSTALLED, H.UPGRADED, H.ROLLED_BACK, H.RELOADED})


class UpgradeRolledBack(Conflict):
    """The new version did not start; the old one kept serving and nothing changed. A 409,
    not a 5xx: the orchestrator and the plugin are as they were, and the same request fails
    the same way until the version is fixed (its start error is in ``details``)."""

    code = "upgrade_rolled_back"


class RollbackFailed(Conflict):
    """The previous version did not start; the current one kept serving."""

    code = "rollback_failed"


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
        was switched or recorded."""
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
                plugin = self._get(session, plugin_id)
                self._transition(session, plugin, "fail", reason)
                self._record(session, plugin, H.FAILED, actor=SYSTEM, reason=reason)
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
