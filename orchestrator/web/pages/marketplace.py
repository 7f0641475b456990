"""The marketplace: catalog search with facets, a catalog plugin's page, and the install
dialog (the whole set the solver would install, every permission of it to approve, a config
form made from the plugin's ``config_schema``).

Every page reads the catalog this orchestrator installs from (``app.state.catalog_source``,
the installer's): its own (through the :class:`CatalogService` its REST routes use) or a
remote one (``SUMMIT_CATALOG_URL``, through that catalog's REST API). The search takes the
query the REST route builds; the dialog shows :meth:`CatalogInstaller.plan`, and the install
is :meth:`CatalogInstaller.install`, which checks the approvals and the config again whatever
the form sent. A remote catalog that cannot be read is a 503 (or 502) page saying so.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from orchestrator.api.routes.catalog import catalog_client, count_catalog_request
from orchestrator.catalog.installer import CatalogInstall, CatalogRef, Plan
from orchestrator.catalog.search import CatalogQuery
from orchestrator.catalog.sources import CatalogSource, LocalCatalog
from orchestrator.domain.errors import InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import ExtensionPoint, Manifest, Permission
from orchestrator.store import catalog as catalog_store
from orchestrator.web.config_form import ConfigForm
from orchestrator.web.guard import UiContext, UiDep, UiRoute

router = APIRouter(route_class=UiRoute)


async def _count(ui: UiContext) -> None:
    """A marketplace read counts against the catalog's rate limit as the REST request with
    the session's token would (one budget per token, through both doors)."""
    client = catalog_client(f"Bearer {ui.session.token}", None)
    await count_catalog_request(ui.request.app.state, client)


PAGE_SIZE = 24
SORTS = ("relevance", "name", "newest", "popular")


def _flag(value: str | None) -> bool | None:
    return {"true": True, "false": False}.get((value or "").lower())


def _catalog(ui: UiContext) -> CatalogSource:
    """The catalog the installer reads. A local one reads through the app's CatalogService
    (its cache and its rules, as the REST routes do); an app built without one gets it here."""
    state = ui.request.app.state
    source: CatalogSource | None = getattr(state, "catalog_source", None)
    if source is None or (isinstance(source, LocalCatalog) and source.service is None):
        return LocalCatalog(state.catalog.engine, service=state.catalog)
    return source


def _where(source: CatalogSource) -> dict[str, Any]:
    """What the pages say of the catalog they show."""
    return {"remote": source.remote, "catalog_url": source.location if source.remote else ""}


@router.get("/marketplace", name="ui_marketplace")
async def marketplace(
    ui: UiDep,
    q: str = Query("", max_length=200),
    point: str = "",
    category: str = Query("", max_length=64),
    permission: str = "",
    signed: str = "",
    compatible: str = "",
    sort: str = "",
    cursor: str = Query("", max_length=2000),
    searched: str = "",
) -> Response:
    await ui.require("GET", "/v1/catalog/plugins")
    await _count(ui)
    # A first visit shows what runs here; the form says when the box was unticked. (The
    # catalog names each card's version that runs here only under this filter.)
    compatible = compatible if searched else "1"
    filters = {
        "q": q.strip(),
        "point": point,
        "category": category,
        "permission": permission,
        "signed": signed,
        "compatible": compatible,
        "sort": sort,
        "searched": "1",  # links keep the filters as they are, the compatible box included
    }
    query = CatalogQuery(
        q=filters["q"] or None,
        point=point or None,
        category=category or None,
        permission=permission or None,
        signed=_flag(signed),
        compatible=compatible == "1",
        sort=(sort if sort in catalog_store.SORTS else None),
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    app = ui.request.app.state
    source = _catalog(ui)
    found = await run_in_threadpool(source.search, query)
    installed = {p.id for p in await run_in_threadpool(app.queries.list_plugins)}
    return ui.render(
        "marketplace.html",
        **_where(source),
        found=found,
        filters=filters,
        installed=installed,
        points=[p.value for p in ExtensionPoint],
        permissions=[p.value for p in Permission],
        sorts=[s for s in SORTS if s in catalog_store.SORTS],
        can_install=ui.can("POST", "/v1/plugins"),
    )


@router.get("/marketplace/{plugin_id}", name="ui_catalog_plugin")
async def catalog_plugin(plugin_id: str, ui: UiDep) -> Response:
    await ui.require("GET", f"/v1/catalog/plugins/{plugin_id}")
    await _count(ui)
    app = ui.request.app.state
    source = _catalog(ui)
    entry = await run_in_threadpool(source.plugin_page, plugin_id)
    versions = await run_in_threadpool(source.version_list, plugin_id)
    try:
        installed = await run_in_threadpool(app.queries.get, plugin_id)
    except NotFound:
        installed = None
    latest = entry.get("latest_compatible")
    return ui.render(
        "catalog_plugin.html",
        **_where(source),
        entry=entry,
        latest=latest,
        readme=(latest or {}).get("readme") or entry.get("readme") or "",
        versions=versions,
        installed=installed,
        can_install=ui.can("POST", "/v1/plugins") and installed is None and latest is not None,
    )


def _plan(ui: UiContext, plugin_id: str, version: str) -> Plan:
    installer = ui.request.app.state.catalog_installer
    plan: Plan = installer.plan(CatalogRef(id=plugin_id, version=version or "*"))
    return plan


def _manifests(ui: UiContext, plan: Plan) -> dict[str, dict[str, Any]]:
    """The manifest of each plugin of the set, as the catalog publishes it (one the catalog
    does not give has its config as one JSON field, and its permissions are described
    without their hosts)."""
    source = _catalog(ui)
    found: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        manifest = source.manifest(step.plugin_id, step.version)
        if manifest is not None:
            found[step.plugin_id] = manifest
    return found


def _config_form(plan: Plan, manifests: dict[str, dict[str, Any]]) -> ConfigForm:
    manifest = manifests.get(plan.requested)
    if manifest is None:
        return ConfigForm(None)
    return ConfigForm(Manifest.model_validate(manifest))


def _permissions(plan: Plan, manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each permission of the set once, with the plugins that ask for it."""
    asked: dict[str, list[dict[str, Any]]] = {}
    for step in plan.steps:
        for permission in step.permissions:
            asked.setdefault(permission, []).append(
                {"id": step.plugin_id, "manifest": manifests.get(step.plugin_id)}
            )
    return [{"name": name, "by": by} for name, by in sorted(asked.items())]


def _dialog(
    ui: UiContext,
    plan: Plan,
    manifests: dict[str, dict[str, Any]],
    form: ConfigForm,
    *,
    approved: set[str] | None = None,
    enable: bool = True,
    error: str = "",
    status_code: int = 200,
) -> Response:
    requested = next(s for s in plan.steps if s.plugin_id == plan.requested)
    return ui.render(
        "install.html",
        status_code,
        plan=plan,
        requested=requested,
        permissions=_permissions(plan, manifests),
        approved=approved if approved is not None else set(),
        config_form=form,
        enable=enable,
        error=error,
        can_enable=ui.can("POST", f"/v1/plugins/{plan.requested}/enable"),
        **_where(_catalog(ui)),
    )


@router.get("/marketplace/{plugin_id}/install", name="ui_install")
async def install_dialog(plugin_id: str, ui: UiDep, version: str = "") -> Response:
    await ui.require("POST", "/v1/plugins")
    plan = await run_in_threadpool(_plan, ui, plugin_id, version)
    manifests = await run_in_threadpool(_manifests, ui, plan)
    return _dialog(ui, plan, manifests, _config_form(plan, manifests))


def _approved(form: FormData) -> list[str]:
    return [str(v) for v in form.getlist("permission") if isinstance(v, str)]


@router.post("/marketplace/{plugin_id}/install")
async def install(plugin_id: str, ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("POST", "/v1/plugins")
    app = ui.request.app.state
    # The exact version the dialog showed: a version published since is not installed by a
    # click that approved another one's permissions.
    plan = await run_in_threadpool(_plan, ui, plugin_id, str(form.get("version") or ""))
    manifests = await run_in_threadpool(_manifests, ui, plan)
    config_form = _config_form(plan, manifests)
    config = config_form.read(form)
    approved = _approved(form)
    enable = form.get("enable") == "1"
    if config_form.has_errors:
        return _dialog(
            ui,
            plan,
            manifests,
            config_form,
            approved=set(approved),
            enable=enable,
            error="The configuration is not valid; see the fields below.",
            status_code=422,
        )
    wanted = CatalogInstall(
        catalog=CatalogRef(id=plugin_id, version=str(form.get("version") or "*")),
        approved_permissions=approved,
        config=config,
    )
    try:
        result = await run_in_threadpool(
            app.catalog_installer.install, wanted, principal=ui.principal, actor=ui.actor
        )
    except SummitError as exc:
        if isinstance(exc, InvalidInput) and isinstance(exc.details, list):
            config_form.place(exc.details)
        return _dialog(
            ui,
            plan,
            manifests,
            config_form,
            approved=set(approved),
            enable=enable,
            error=exc.message,
            status_code=exc.status_code,
        )
    installed = [p["id"] for p in result["installed"]]
    others = [p for p in installed if p != plugin_id]
    said = f"Installed {plugin_id}" + (f" with {', '.join(others)}" if others else "") + "."
    if enable:
        try:
            await ui.require("POST", f"/v1/plugins/{plugin_id}/enable")
            await run_in_threadpool(app.lifecycle.enable, plugin_id, actor=ui.actor)
            said += " It is enabled."
        except SummitError as exc:
            ui.flash("error", f"enable {plugin_id}: {exc.message}")
    ui.flash("ok", said)
    return ui.back(f"/ui/plugins/{plugin_id}")
