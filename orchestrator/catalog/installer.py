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

A *collection* (``POST /v1/plugins {"collection": {"id", "version"}}``) is installed the same
way, as one operation: the solver resolves every member's range at once (with their
dependencies), every permission of the whole set is approved in the one request, and the set
goes in dependency order, all or nothing. A member installed already stays as it is when its
version is in the collection's range (409 ``upgrade_needed`` otherwise).

The catalog is read through a :class:`CatalogSource` (``sources.py``): this orchestrator's
own, or a remote one (``SUMMIT_CATALOG_URL``). The images of a remote catalog's entries are
read before anything is installed, and each must hold the plugin version its entry names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from orchestrator import __version__
from orchestrator.catalog.search import compatible_with
from orchestrator.catalog.solver import PluginVersion, Resolution, ResolutionError, resolve
from orchestrator.catalog.sources import (
    CatalogEntry,
    CatalogSource,
    CatalogUnreachable,
    CollectionEntry,
    LocalCatalog,
)
from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.versions import Version, VersionError, VersionRange
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.services.install import InstallRequest, InstallService, manifest_of
from orchestrator.services.plugins import PluginView
from orchestrator.store import crud
from orchestrator.store.db import Engine, session_scope

__all__ = [
    "CatalogInstall",
    "CatalogInstaller",
    "CatalogRef",
    "CollectionInstall",
    "CollectionRef",
    "Plan",
]

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


class CollectionRef(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    version: str = Field("*", max_length=128, description="A version or an npm-style range")


class CollectionInstall(BaseModel):
    """The JSON body of a collection install."""

    collection: CollectionRef
    approved_permissions: list[str] = Field(
        default_factory=list, description="Every permission of the whole set"
    )
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Configs of members, by plugin id"
    )
    allow_findings: bool = False
    override_reason: str | None = Field(None, max_length=500)


@dataclass(frozen=True)
class Step:
    plugin_id: str
    version: str
    action: str  # install, upgrade, downgrade
    entry: CatalogEntry
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
        source: CatalogSource | None = None,
    ) -> None:
        self.engine = engine
        self.installs = installs
        self.uninstall = uninstall
        self.compatible = compatible_with(summit_version)
        self.source: CatalogSource = source or LocalCatalog(engine, summit_version=summit_version)

    def knows(self, plugin_id: str) -> bool:
        """Whether ``plugin_id`` is in the catalog."""
        return self.source.has_plugin(plugin_id)

    # -- planning -------------------------------------------------------------------------------

    def _not_in_catalog(self, plugin_id: str) -> NotFound:
        where = (
            "the catalog" if not self.source.remote else f"the catalog at {self.source.location}"
        )
        return NotFound(
            f"{plugin_id} is not in {where}",
            code="not_in_catalog",
            details={"catalog": self.source.location},
        )

    def _installed(self) -> dict[str, PluginVersion]:
        with session_scope(self.engine) as session:
            return {
                plugin.id: PluginVersion.from_manifest(manifest_of(session, plugin))
                for plugin in crud.list_plugins(session)
            }

    def plan(self, ref: CatalogRef) -> Plan:
        """What installing ``ref`` would do; nothing is changed."""
        if not self.source.has_plugin(ref.id):
            raise self._not_in_catalog(ref.id)
        installed = self._installed()
        if ref.id in installed:
            raise Conflict(
                f"{ref.id} is installed already; upgrade it instead",
                code="already_installed",
                details={"hint": f"POST /v1/plugins/{ref.id}/upgrade"},
            )
        entries: dict[tuple[str, str], CatalogEntry] = {}
        resolution = resolve(
            [(ref.id, ref.version)], source=self._source(entries), installed=installed
        )
        return self._plan_of(ref.id, resolution, entries)

    @staticmethod
    def _plan_of(
        requested: str, resolution: Resolution, entries: dict[tuple[str, str], CatalogEntry]
    ) -> Plan:
        steps = []
        for change in resolution.changes:
            entry = entries[(change.plugin_id, str(change.version))]
            steps.append(
                Step(change.plugin_id, str(change.version), change.action, entry, entry.permissions)
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
            current = plugin.version
        if not self.source.has_plugin(plugin_id):
            raise self._not_in_catalog(plugin_id)
        wanted = version or f">{current}"
        entries: dict[tuple[str, str], CatalogEntry] = {}
        try:
            resolution = resolve(
                [(plugin_id, wanted)],
                source=self._source(entries),
                installed=self._installed(),
            )
        except ResolutionError as exc:
            if version is None and exc.code == "dependency_missing":
                raise Conflict(
                    f"{plugin_id} {current} is the newest compatible version",
                    code="no_upgrade",
                ) from None
            raise
        plan = self._plan_of(plugin_id, resolution, entries)
        if not any(s.plugin_id == plugin_id for s in plan.steps):
            raise Conflict(f"{plugin_id} is at {current} already", code="no_upgrade")
        return plan

    def _source(
        self, entries: dict[tuple[str, str], CatalogEntry]
    ) -> Callable[[str], list[PluginVersion]]:
        def source(plugin_id: str) -> list[PluginVersion]:
            out = []
            for entry in self.source.versions(plugin_id):
                entries[(plugin_id, entry.version)] = entry
                out.append(entry.for_solver(self.compatible))
            return out

        return source

    def collection_plan(self, ref: CollectionRef) -> tuple[CollectionEntry, Plan]:
        """What installing a collection would do (the version ``ref`` picks, and the plan);
        nothing is changed. Members installed already are kept when the collection's range
        admits their version."""
        chosen = self._collection_version(ref)
        installed = self._installed()
        outside = [
            {"id": pid, "installed": str(installed[pid].version), "wanted": text}
            for pid, text in sorted(chosen.plugins.items())
            if pid in installed and not VersionRange.parse(text).admits(installed[pid].version)
        ]
        if outside:
            raise Conflict(
                f"collection {chosen.collection_id} {chosen.version} wants other versions of "
                "installed plugins: "
                + "; ".join(f"{o['id']} {o['installed']} (wants {o['wanted']})" for o in outside)
                + "; upgrade them first",
                code="upgrade_needed",
                details=outside,
            )
        requests = [
            (pid, text) for pid, text in sorted(chosen.plugins.items()) if pid not in installed
        ]
        label = f"{chosen.collection_id}@{chosen.version}"
        entries: dict[tuple[str, str], CatalogEntry] = {}
        if not requests:
            kept = tuple((pid, str(installed[pid].version)) for pid in sorted(chosen.plugins))
            return chosen, Plan(label, (), kept, ())
        resolution = resolve(requests, source=self._source(entries), installed=installed)
        return chosen, self._plan_of(label, resolution, entries)

    def _collection_version(self, ref: CollectionRef) -> CollectionEntry:
        try:
            wanted = VersionRange.parse(ref.version)
        except VersionError as exc:
            raise InvalidInput(
                f"cannot read the range {ref.version!r} requested for {ref.id}: {exc}",
                code="invalid_version_range",
            ) from None
        versions = self.source.collection_versions(ref.id)
        for entry in versions:  # newest first
            try:
                if wanted.admits(Version.parse(entry.version)):
                    return entry
            except VersionError:
                continue
        raise NotFound(
            f"collection {ref.id} has no version in {ref.version}",
            code="version_not_found",
            details={"versions": [v.version for v in versions]},
        )

    # -- installing -----------------------------------------------------------------------------

    def install(self, req: CatalogInstall, *, principal: str, actor: str) -> dict[str, Any]:
        plan = self.plan(req.catalog)
        self._approve(plan, req.approved_permissions)
        done = self._install_new(
            plan,
            configs={plan.requested: req.config},
            allow_findings=req.allow_findings,
            override_reason=req.override_reason,
            principal=principal,
            actor=actor,
        )
        return {
            "plan": plan.to_json(),
            "installed": [view.model_dump(mode="json") for view in done],
        }

    def install_collection(
        self, req: CollectionInstall, *, principal: str, actor: str
    ) -> dict[str, Any]:
        """Install every member of a collection that is not installed yet, with the
        dependencies they need, as one operation: all or nothing."""
        chosen, plan = self.collection_plan(req.collection)
        strangers = sorted(set(req.config) - set(chosen.plugins))
        if strangers:
            raise InvalidInput(
                "config names plugins that are not in the collection: " + ", ".join(strangers),
                code="invalid_request",
                details={"not_members": strangers, "members": sorted(chosen.plugins)},
            )
        self._approve(plan, req.approved_permissions)
        done = self._install_new(
            plan,
            configs=req.config,
            allow_findings=req.allow_findings,
            override_reason=req.override_reason,
            principal=principal,
            actor=actor,
        )
        return {
            "collection": {"id": chosen.collection_id, "version": chosen.version},
            "plan": plan.to_json(),
            "installed": [view.model_dump(mode="json") for view in done],
        }

    def _install_new(
        self,
        plan: Plan,
        *,
        configs: dict[str, dict[str, Any]],
        allow_findings: bool,
        override_reason: str | None,
        principal: str,
        actor: str,
    ) -> list[PluginView]:
        """Install the plan's steps in order (new plugins only); undone when one fails."""
        upgrades = [s for s in plan.steps if s.action != "install"]
        if upgrades:
            # The solver holds installed plugins to their versions (allow_upgrade is off), so
            # this is a guard, not a path.
            raise Conflict(
                "installing this would change installed plugins; upgrade them first",
                code="upgrade_needed",
                details=[{"id": s.plugin_id, "to": s.version} for s in upgrades],
            )
        self._check_images(plan.steps)
        done: list[PluginView] = []
        try:
            for step in plan.steps:
                request = self._request(
                    step, configs.get(step.plugin_id, {}), principal, actor
                ).model_copy(
                    update={"allow_findings": allow_findings, "override_reason": override_reason}
                )
                done.append(self.installs.install(request))
        except BaseException as exc:
            self._undo(done, exc)
            raise
        return done

    def _check_images(self, steps: tuple[Step, ...] | list[Step]) -> None:
        """For a remote catalog: each image (pulled by its digest) must hold the plugin
        version its entry names, before anything is installed. (This orchestrator's own
        catalog checked that when the version was published.)"""
        if not self.source.remote:
            return
        for step in steps:
            info = self.installs.images.pull(step.entry.image, _quiet)
            raw = info.labels.get(LABEL_MANIFEST) or "{}"
            try:
                held = json.loads(raw)
            except ValueError:
                held = {}
            found = (held.get("id"), held.get("version")) if isinstance(held, dict) else None
            if found != (step.plugin_id, step.version):
                raise CatalogUnreachable(
                    f"the catalog at {self.source.location} lists {step.plugin_id} "
                    f"{step.version} with an image that holds another plugin; nothing was "
                    "installed",
                    status_code=502,
                    details={
                        "url": self.source.location,
                        "image": step.entry.image,
                        "listed": {"id": step.plugin_id, "version": step.version},
                        "found": found,
                    },
                )

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
        self._check_images(plan.steps)
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


def _quiet(line: str) -> None:
    """Progress nobody reads."""


def _signature_envelope(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The envelope as it was signed (the catalog keeps the key id beside it)."""
    if stored is None:
        return None
    envelope = stored.get("envelope")
    return envelope if isinstance(envelope, dict) else None
