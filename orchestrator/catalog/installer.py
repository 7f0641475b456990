"""Installing from the catalog: ``POST /v1/plugins {"catalog": {"id": ..., "version": "^1.2"}}``.

1. The solver (``solver.py``) picks the newest compatible version of the plugin and of every
   dependency it needs, with the installed plugins held to their versions and their ranges
   (an installed dependency that is too old is a conflict that names who wants what: upgrade
   it first, ``POST /v1/plugins/{id}/upgrade``).
2. Every permission of every plugin that will be installed must be approved in the one
   request (409 ``permissions_not_approved`` listing them per plugin), before anything is read.
3. The plugins are installed in dependency order through the install pipeline as installs by
   image reference (pulled by digest, scanned, signature verified), each its own catalog
   entry's image and signature.
4. All or nothing: when one fails, the plugins this request installed are uninstalled again,
   newest first, and the first failure is the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from orchestrator import __version__
from orchestrator.catalog.search import compatible_with
from orchestrator.catalog.solver import PluginVersion, Resolution, ResolutionError, resolve
from orchestrator.domain.errors import Conflict, NotFound, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.services.install import InstallRequest, InstallService, manifest_of
from orchestrator.services.plugins import PluginView
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store.catalog_models import CatalogVersion
from orchestrator.store.db import Engine, session_scope

__all__ = ["CatalogInstall", "CatalogInstaller", "CatalogRef", "Plan"]

log = logging.getLogger(__name__)


class CatalogRef(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    version: str = Field("*", max_length=128, description="A version or an npm-style range")


class CatalogInstall(BaseModel):
    """The JSON body of a catalog install."""

    catalog: CatalogRef
    approved_permissions: list[str] = Field(
        default_factory=list, description="Every permission of the whole set"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="The requested plugin's")
    allow_findings: bool = False
    override_reason: str | None = Field(None, max_length=500)


@dataclass(frozen=True)
class Step:
    plugin_id: str
    version: str
    action: str  # install, upgrade, downgrade
    entry: CatalogVersion
    permissions: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    requested: str
    steps: tuple[Step, ...]
    kept: tuple[tuple[str, str], ...]  # installed plugins of the set that stay as they are
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "install": [
                {
                    "id": s.plugin_id,
                    "version": s.version,
                    "action": s.action,
                    "image": s.entry.image,
                    "permissions": list(s.permissions),
                }
                for s in self.steps
            ],
            "kept": [{"id": p, "version": v} for p, v in self.kept],
            "warnings": list(self.warnings),
        }


class CatalogInstaller:
    def __init__(
        self,
        *,
        engine: Engine,
        installs: InstallService,
        uninstall: Callable[[str], None],
        summit_version: str = __version__,
    ) -> None:
        self.engine = engine
        self.installs = installs
        self.uninstall = uninstall
        self.compatible = compatible_with(summit_version)

    def knows(self, plugin_id: str) -> bool:
        """Whether ``plugin_id`` is in the catalog."""
        with session_scope(self.engine) as session:
            return catalog_store.get_plugin(session, plugin_id=plugin_id) is not None

    # -- planning -------------------------------------------------------------------------------

    def plan(self, ref: CatalogRef) -> Plan:
        """What installing ``ref`` would do; nothing is changed."""
        with session_scope(self.engine) as session:
            if catalog_store.get_plugin(session, plugin_id=ref.id) is None:
                raise NotFound(f"{ref.id} is not in the catalog", code="not_in_catalog")
            if crud.get_plugin(session, plugin_id=ref.id) is not None:
                raise Conflict(
                    f"{ref.id} is installed already; upgrade it instead",
                    code="already_installed",
                    details={"hint": f"POST /v1/plugins/{ref.id}/upgrade"},
                )
            entries: dict[tuple[str, str], CatalogVersion] = {}
            source = self._source(session, entries)
            installed = {
                plugin.id: PluginVersion.from_manifest(manifest_of(session, plugin))
                for plugin in crud.list_plugins(session)
            }
            resolution = resolve([(ref.id, ref.version)], source=source, installed=installed)
            for row in entries.values():
                session.expunge(row)
        return self._plan_of(ref.id, resolution, entries)

    @staticmethod
    def _plan_of(
        requested: str, resolution: Resolution, entries: dict[tuple[str, str], CatalogVersion]
    ) -> Plan:
        steps = []
        for change in resolution.changes:
            entry = entries[(change.plugin_id, str(change.version))]
            permissions = tuple(sorted(entry.manifest.get("permissions", [])))
            steps.append(
                Step(change.plugin_id, str(change.version), change.action, entry, permissions)
            )
        kept = tuple(
            (p.plugin_id, str(p.version)) for p in resolution.plugins.values() if p.action == "keep"
        )
        return Plan(requested, tuple(steps), kept, tuple(resolution.warnings))

    def upgrade_plan(self, plugin_id: str, version: str | None) -> Plan:
        """What upgrading ``plugin_id`` from the catalog would do: to ``version`` (a version
        or a range), by default the newest compatible one above the installed version. The
        installed plugins that depend on it keep their ranges (a conflict names them)."""
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise NotFound(f"plugin {plugin_id} is not installed", code="plugin_not_found")
            if catalog_store.get_plugin(session, plugin_id=plugin_id) is None:
                raise NotFound(f"{plugin_id} is not in the catalog", code="not_in_catalog")
            wanted = version or f">{plugin.version}"
            entries: dict[tuple[str, str], CatalogVersion] = {}
            installed = {
                p.id: PluginVersion.from_manifest(manifest_of(session, p))
                for p in crud.list_plugins(session)
            }
            try:
                resolution = resolve(
                    [(plugin_id, wanted)],
                    source=self._source(session, entries),
                    installed=installed,
                )
            except ResolutionError as exc:
                if version is None and exc.code == "dependency_missing":
                    raise Conflict(
                        f"{plugin_id} {plugin.version} is the newest compatible version",
                        code="no_upgrade",
                    ) from None
                raise
            for row in entries.values():
                session.expunge(row)
        plan = self._plan_of(plugin_id, resolution, entries)
        if not any(s.plugin_id == plugin_id for s in plan.steps):
            raise Conflict(f"{plugin_id} is at {plugin.version} already", code="no_upgrade")
        return plan

    def _source(
        self, session: Any, entries: dict[tuple[str, str], CatalogVersion]
    ) -> Callable[[str], list[PluginVersion]]:
        def source(plugin_id: str) -> list[PluginVersion]:
            out = []
            for row in catalog_store.list_versions(session, plugin_id=plugin_id):
                entries[(plugin_id, row.version)] = row
                out.append(
                    PluginVersion.from_manifest(
                        Manifest.model_validate(row.manifest),
                        yanked=row.yanked,
                        compatible=self.compatible(row.summit_range),
                    )
                )
            return out

        return source

    # -- installing -----------------------------------------------------------------------------

    def install(self, req: CatalogInstall, *, principal: str, actor: str) -> dict[str, Any]:
        plan = self.plan(req.catalog)
        self._approve(plan, req.approved_permissions)
        upgrades = [s for s in plan.steps if s.action != "install"]
        if upgrades:
            # The solver holds installed plugins to their versions (allow_upgrade is off), so
            # this is a guard, not a path.
            raise Conflict(
                "installing this would change installed plugins; upgrade them first",
                code="upgrade_needed",
                details=[{"id": s.plugin_id, "to": s.version} for s in upgrades],
            )
        done: list[PluginView] = []
        try:
            for step in plan.steps:
                config = req.config if step.plugin_id == plan.requested else {}
                request = self._request(step, config, principal, actor).model_copy(
                    update={
                        "allow_findings": req.allow_findings,
                        "override_reason": req.override_reason,
                    }
                )
                done.append(self.installs.install(request))
        except BaseException as exc:
            self._undo(done, exc)
            raise
        return {
            "plan": plan.to_json(),
            "installed": [view.model_dump(mode="json") for view in done],
        }

    def upgrade(
        self,
        plugin_id: str,
        *,
        version: str | None,
        approved_permissions: list[str] | None,
        principal: str,
        actor: str,
        switch: Callable[[str, str], object],
    ) -> dict[str, Any]:
        """Upgrade from the catalog: install what the new version needs that is missing, then
        the new version's image, then ``switch`` (the lifecycle's blue/green upgrade, which
        rolls back by itself when the new version does not start). Permissions default to
        the ones granted now: a new one must be approved."""
        plan = self.upgrade_plan(plugin_id, version)
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            assert plugin is not None
            granted = crud.list_grants(session, plugin_id=plugin_id)
            config, active = dict(plugin.config), plugin.state == "ACTIVE"
        self._approve(plan, approved_permissions if approved_permissions is not None else granted)
        target = next(s for s in plan.steps if s.plugin_id == plugin_id)
        others = [s for s in plan.steps if s.plugin_id != plugin_id]
        if any(s.action != "install" for s in others):
            raise Conflict(
                "this upgrade would change other installed plugins; upgrade them first",
                code="upgrade_needed",
                details=[{"id": s.plugin_id, "to": s.version} for s in others],
            )
        done: list[PluginView] = []
        try:
            for step in others:
                done.append(self.installs.install(self._request(step, {}, principal, actor)))
            self.installs.install(self._request(target, config, principal, actor))
        except BaseException as exc:
            self._undo(done, exc)
            raise
        if active:
            switch(plugin_id, target.version)
        return {"plan": plan.to_json(), "installed": [v.model_dump(mode="json") for v in done]}

    @staticmethod
    def _request(step: Step, config: dict[str, Any], principal: str, actor: str) -> InstallRequest:
        return InstallRequest(
            image=step.entry.image,
            signature=_signature_envelope(step.entry.signature),
            approved_permissions=list(step.permissions),
            config=config,
            principal=principal,
            actor=actor,
        )

    @staticmethod
    def _approve(plan: Plan, approved: list[str]) -> None:
        missing = {
            s.plugin_id: sorted(set(s.permissions) - set(approved))
            for s in plan.steps
            if set(s.permissions) - set(approved)
        }
        if missing:
            wanted = sorted({p for s in plan.steps for p in s.permissions})
            raise Conflict(
                "the set to install requests permissions that were not approved: "
                + "; ".join(f"{pid}: {', '.join(perms)}" for pid, perms in missing.items()),
                code="permissions_not_approved",
                details={
                    "missing": sorted({p for perms in missing.values() for p in perms}),
                    "by_plugin": missing,
                    "requested": wanted,
                    "plan": plan.to_json(),
                },
            )

    def _undo(self, done: list[PluginView], cause: BaseException) -> None:
        for view in reversed(done):
            try:
                self.uninstall(view.id)
            except SummitError as exc:
                log.error(
                    "catalog install failed (%s) and %s could not be uninstalled again: %s",
                    cause,
                    view.id,
                    exc.message,
                )


def _signature_envelope(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The envelope as it was signed (the catalog keeps the key id beside it)."""
    if stored is None:
        return None
    envelope = stored.get("envelope")
    return envelope if isinstance(envelope, dict) else None
