"""Installed plugins: the list with their lifecycle buttons and running canaries, one plugin's
page (its canary, state history, recent events, log tail, usage, call profile, scan report, a
call form), and the upgrade dialog.

Every button is a form posting to ``/ui/plugins/{id}/...``; the action is refused unless the
session's token may make the REST request it stands for, and it runs the same service call
the REST route runs:

- ``/ui/plugins/{id}/{enable|disable|reload|rollback|uninstall}``: the lifecycle buttons.
- ``/ui/plugins/{id}/canary`` (start one, or change its weight), ``.../canary/promote``,
  ``.../canary/abort``: ``POST /v1/plugins/{id}/canary[/promote|/abort]``.
- ``GET /ui/plugins/{id}/upgrade?version=...``: what an upgrade changes (the version, the
  plugins installed with it, every permission it adds, each with a box to tick); its form
  posts to ``/ui/plugins/{id}/upgrade``, which is ``POST /v1/plugins/{id}/upgrade`` with the
  permissions granted now and the ticked ones as ``approved_permissions``, so a new
  permission left unticked is refused by the installer, as the REST request would be.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from orchestrator.api.deps import batches_of, extensions_of
from orchestrator.catalog.installer import Plan
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.services.lifecycle import CanaryView
from orchestrator.services.plugins import PluginView
from orchestrator.web.guard import UiContext, UiDep, UiRoute, safe_next
from orchestrator.web.pages.analytics import plugin_charts, range_of

router = APIRouter(route_class=UiRoute)

# The lifecycle buttons posted to /ui/plugins/{id}/{action}; an upgrade goes through its
# dialog (GET and POST /ui/plugins/{id}/upgrade) and a canary through its own forms.
ACTIONS = ("enable", "disable", "reload", "rollback", "uninstall")
CANARY_STEPS = ("promote", "abort")
LOG_TAIL = 200
RECENT_EVENTS = 30
VERSION_MAX = 64  # as the REST bodies' ``version``
DEFAULT_CANARY_WEIGHT = 10


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


def rest_rule(plugin_id: str, action: str) -> tuple[str, str]:
    """The REST request a UI action stands for: its method and path decide who may."""
    if action == "uninstall":
        return "DELETE", f"/v1/plugins/{plugin_id}"
    return "POST", f"/v1/plugins/{plugin_id}/{action}"


def allowed_actions(ui: UiContext, plugin: Any) -> list[str]:
    """The buttons this role may use on ``plugin`` in its state (the server checks again)."""
    state = plugin.state
    wanted = []
    if state in ("LOADED", "FAILED"):
        wanted.append("enable")
    if state in ("ACTIVE", "INITIALIZING", "FAILED"):
        wanted.append("disable")
    if state == "ACTIVE":
        wanted.append("reload")
    if plugin.update_available is not None or plugin.pending_version:
        wanted.append("upgrade")
    if state in ("ACTIVE", "LOADED"):
        wanted.append("rollback")
    if state in ("LOADED", "FAILED"):
        wanted.append("uninstall")
    return [a for a in wanted if ui.can(*rest_rule(plugin.id, a))]


def upgrade_offer(plugin: Any) -> str | None:
    """The version the Upgrade button offers: the catalog's newer one, else the installed
    one waiting to take over."""
    if plugin.update_available is not None:
        return str(plugin.update_available.version)
    return plugin.pending_version or None


def canary_rule(plugin_id: str, step: str = "") -> tuple[str, str]:
    """The REST request a canary form stands for: start it or change its weight (no
    ``step``), ``promote`` or ``abort`` it."""
    return "POST", f"/v1/plugins/{plugin_id}/canary" + (f"/{step}" if step else "")


def canary_moves(ui: UiContext, plugin_id: str) -> dict[str, bool]:
    """Which canary forms this role may use (the server checks again)."""
    return {
        "start": ui.can(*canary_rule(plugin_id)),
        **{step: ui.can(*canary_rule(plugin_id, step)) for step in CANARY_STEPS},
    }


def _canary_of(ui: UiContext, plugin: PluginView) -> CanaryView | None:
    """The plugin's running canary, as ``GET /v1/plugins/{id}/canary`` shows it. A plugin
    that is not running (LOADED) has no container, so no canary: no read for it."""
    if plugin.state == "LOADED":
        return None
    try:
        view: CanaryView = _state(ui.request, "lifecycle").canary(plugin.id)
    except NotFound:
        return None
    return view


def _other_versions(ui: UiContext, plugins: Sequence[PluginView]) -> dict[str, list[str]]:
    """For each plugin, its installed versions other than the current one, newest installed
    first: the versions a canary can run (in one read for them all)."""
    if not plugins:
        return {}
    stored = batches_of(ui.request.app.state).versions([p.id for p in plugins])
    current = {p.id: p.version for p in plugins}
    return {
        pid: [v.version for v in reversed(versions) if v.version != current[pid]]
        for pid, versions in stored.items()
    }


def _list_data(ui: UiContext, state: str | None) -> dict[str, Any]:
    plugins: list[PluginView] = _state(ui.request, "queries").list_plugins(state=state)
    canaries = {p.id: c for p in plugins if (c := _canary_of(ui, p)) is not None}
    # A plugin without a canary offers one when it is ACTIVE and has another version.
    idle = [p for p in plugins if p.state == "ACTIVE" and p.id not in canaries]
    others = _other_versions(ui, idle)
    return {
        "plugins": plugins,
        "canaries": canaries,
        "canary_ready": {pid for pid, versions in others.items() if versions},
    }


@router.get("/plugins", name="ui_plugins")
async def plugin_list(ui: UiDep, state: str | None = None) -> Response:
    await ui.require("GET", "/v1/plugins")
    data = await run_in_threadpool(_list_data, ui, state or None)
    plugins = data["plugins"]
    return ui.render(
        "plugins.html",
        **data,
        actions={p.id: allowed_actions(ui, p) for p in plugins},
        upgrade_to={p.id: upgrade_offer(p) for p in plugins},
        moves={p.id: canary_moves(ui, p.id) for p in plugins},
        state_filter=state or "",
        can_install=ui.can("POST", "/v1/plugins"),
    )


def _run_action(ui: UiContext, plugin_id: str, action: str, form: Any) -> Callable[[], str]:
    """The service call of ``action`` (what the REST route calls), returning what to say."""
    lifecycle = _state(ui.request, "lifecycle")
    actor = ui.actor

    def enable() -> str:
        lifecycle.enable(plugin_id, actor=actor)
        return f"{plugin_id} enabled."

    def disable() -> str:
        lifecycle.disable(plugin_id, cascade=form.get("cascade") == "1", actor=actor)
        return f"{plugin_id} disabled."

    def reload() -> str:
        lifecycle.reload(plugin_id, actor=actor)
        return f"{plugin_id} reloaded."

    def rollback() -> str:
        lifecycle.rollback(plugin_id, actor=actor)
        return f"{plugin_id} rolled back."

    def uninstall() -> str:
        if form.get("confirm") != plugin_id:
            raise InvalidInput(f"type the plugin's id ({plugin_id}) to uninstall it")
        lifecycle.uninstall(plugin_id, actor=actor)
        return f"{plugin_id} uninstalled."

    return {
        "enable": enable,
        "disable": disable,
        "reload": reload,
        "rollback": rollback,
        "uninstall": uninstall,
    }[action]


def _read(call: Callable[[], Any]) -> tuple[Any, str]:
    """A read that may fail for a reason worth showing in its place (no container, no
    report): its value, or None and the reason."""
    try:
        return call(), ""
    except SummitError as exc:
        return None, exc.message


def _plugin_page_data(ui: UiContext, plugin_id: str, window: str) -> dict[str, Any]:
    app = ui.request.app.state
    queries, lifecycle = app.queries, app.lifecycle
    plugin = queries.get(plugin_id)  # 404 page for a plugin not installed
    since = datetime.now(UTC) - timedelta(hours=1)
    recent = app.events.page(subject=plugin_id, since=since, limit=500)["events"]
    logs, logs_note = (
        _read(lambda: queries.logs(plugin_id, tail=LOG_TAIL))
        if plugin.container
        else (None, "no container is running")
    )
    usage, usage_note = _read(lambda: app.usage.plugin_usage(plugin_id))
    scan, scan_note = _read(lambda: queries.scan_report(plugin_id, version=None))
    canary = _canary_of(ui, plugin)
    return {
        "plugin": plugin,
        "canary": canary,
        "canary_versions": (
            _other_versions(ui, [plugin]).get(plugin_id, [])
            if plugin.state == "ACTIVE" and canary is None
            else []
        ),
        "history": lifecycle.history(plugin_id, limit=20).items,
        "transitions": queries.transitions(plugin_id, limit=20),
        "events": list(reversed(recent[-RECENT_EVENTS:])),
        "events_since": since.isoformat(),
        "logs": logs,
        "logs_note": logs_note,
        "usage": usage,
        "usage_note": usage_note,
        "profile": app.broker.profile.summary(plugin_id),
        "scan": scan,
        "scan_note": scan_note,
        **plugin_charts(ui, plugin_id, window),
    }


def _call_points(plugin: Any) -> list[str]:
    """The extension points the plugin provides (a call names the point and the plugin)."""
    points = {
        str(e.get("point")) for e in plugin.manifest.get("extensions", []) if isinstance(e, dict)
    }
    return sorted(points)


async def _plugin_page(
    ui: UiContext, plugin_id: str, *, status_code: int = 200, window: str = "1h", **extra: Any
) -> Response:
    await ui.require("GET", f"/v1/plugins/{plugin_id}")
    data = await run_in_threadpool(_plugin_page_data, ui, plugin_id, window)
    plugin = data["plugin"]
    points = _call_points(plugin)
    values: dict[str, Any] = {
        "actions": allowed_actions(ui, plugin),
        "upgrade_to": upgrade_offer(plugin),
        "moves": canary_moves(ui, plugin_id),
        "canary_weight": DEFAULT_CANARY_WEIGHT,
        "call_points": points,
        "can_call": any(ui.can("POST", f"/v1/extension-points/{p}/execute") for p in points),
        "call": None,
        **data,
    }
    values.update(extra)
    return ui.render("plugin.html", status_code, **values)


@router.get("/plugins/{plugin_id}", name="ui_plugin")
async def plugin_page(
    plugin_id: str, ui: UiDep, range: str = Query("1h", max_length=8)
) -> Response:
    return await _plugin_page(ui, plugin_id, window=range_of(range))


@router.get("/plugins/{plugin_id}/logs", name="ui_plugin_logs")
async def plugin_logs(plugin_id: str, ui: UiDep) -> Response:
    """The log tail alone (what the plugin page refreshes every few seconds)."""
    await ui.require("GET", f"/v1/plugins/{plugin_id}/logs")
    queries = _state(ui.request, "queries")
    plugin = await run_in_threadpool(queries.get, plugin_id)
    logs, note = (
        await run_in_threadpool(_read, lambda: queries.logs(plugin_id, tail=LOG_TAIL))
        if plugin.container
        else (None, "no container is running")
    )
    return ui.render("plugin_logs.html", plugin=plugin, logs=logs, logs_note=note)


@router.post("/plugins/{plugin_id}/call")
async def plugin_call(plugin_id: str, ui: UiDep) -> Response:
    """Call one of the plugin's extensions with a JSON input, as
    ``POST /v1/extension-points/{point}/execute {"plugins": [id]}`` would."""
    form = await ui.form()
    point = str(form.get("point") or "")
    raw_input = str(form.get("input") or "")
    await ui.require("POST", f"/v1/extension-points/{point}/execute")
    settings = ui.request.app.state.settings
    call: dict[str, Any] = {"point": point, "input": raw_input}
    try:
        plugin = await run_in_threadpool(ui.request.app.state.queries.get, plugin_id)
        if point not in _call_points(plugin):
            raise InvalidInput(f"{plugin_id} provides no {point!r} extension")
        payload = (
            jsonlimits.loads(raw_input, what="the input", max_bytes=settings.max_request_bytes)
            if raw_input.strip()
            else None
        )
        result = await extensions_of(ui.request.app.state).execute(
            point, payload, mode="first", plugins=[plugin_id]
        )
        call["result"] = result
        status = 200
    except SummitError as exc:
        call["error"] = {"code": exc.code, "message": exc.message, "details": exc.details}
        status = exc.status_code
    return await _plugin_page(ui, plugin_id, status_code=status, call=call)


# -- forms ---------------------------------------------------------------------------------------

_WHOLE_NUMBER = re.compile(r"[+-]?\d{1,9}")


def _form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _form_version(form: FormData) -> str | None:
    version = _form_text(form, "version")
    if len(version) > VERSION_MAX:
        raise InvalidInput(f"a version has at most {VERSION_MAX} characters")
    return version or None


def _form_weight(form: FormData) -> int:
    """The weight as the REST body carries it, a whole number; its range (0-100) is the
    service's to judge, with the REST answer's message."""
    raw = _form_text(form, "weight")
    if not _WHOLE_NUMBER.fullmatch(raw):
        said = f"not {raw[:20]!r}" if raw else "it was left empty"
        raise InvalidInput(
            f"a canary's weight is a whole percentage (0-100); {said}", details={"weight": raw}
        )
    return int(raw)


# -- canary --------------------------------------------------------------------------------------


@router.post("/plugins/{plugin_id}/canary")
async def canary_start(plugin_id: str, ui: UiDep) -> Response:
    """Start a canary of an installed version, or (the same version again) change its weight:
    ``POST /v1/plugins/{id}/canary {"version", "weight"}``."""
    form = await ui.form()
    await ui.require(*canary_rule(plugin_id))
    lifecycle = _state(ui.request, "lifecycle")
    try:
        version = _form_version(form)
        if version is None:
            raise InvalidInput("choose the installed version to run as the canary")
        weight = _form_weight(form)
        view: CanaryView = await run_in_threadpool(
            lambda: lifecycle.start_canary(
                plugin_id, version=version, weight=weight, actor=ui.actor
            )
        )
        ui.flash(
            "ok",
            f"{plugin_id} {view.candidate.version} takes {view.weight}% of the calls beside "
            f"{view.current.version}.",
        )
    except SummitError as exc:
        ui.flash("error", f"canary of {plugin_id}: {exc.message}")
    return ui.back(f"/ui/plugins/{plugin_id}", form)


@router.post("/plugins/{plugin_id}/canary/{step}")
async def canary_step(plugin_id: str, step: str, ui: UiDep) -> Response:
    """Promote or abort the running canary: ``POST /v1/plugins/{id}/canary/{step}``."""
    if step not in CANARY_STEPS:
        raise NotFound(f"no canary action {step!r}")
    form = await ui.form()
    await ui.require(*canary_rule(plugin_id, step))
    app = ui.request.app.state

    def run() -> str:
        if step == "promote":
            app.lifecycle.promote_canary(plugin_id, actor=ui.actor)
            now = app.queries.get(plugin_id)
            return f"Canary promoted: {plugin_id} {now.version} serves every call."
        app.lifecycle.abort_canary(plugin_id, actor=ui.actor)
        now = app.queries.get(plugin_id)
        return f"Canary aborted: {plugin_id} {now.version} serves every call again."

    try:
        ui.flash("ok", await run_in_threadpool(run))
    except SummitError as exc:
        ui.flash("error", f"{step} the canary of {plugin_id}: {exc.message}")
    return ui.back(f"/ui/plugins/{plugin_id}", form)


# -- upgrade -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asker:
    """A plugin of the upgrade that asks for a permission (for the words: its manifest, when
    this orchestrator holds it)."""

    id: str
    version: str
    manifest: dict[str, Any] | None


@dataclass(frozen=True)
class UpgradePreview:
    """What the upgrade dialog shows: what the upgrade would do, nothing changed yet."""

    plugin: PluginView
    target: str
    from_catalog: bool  # else a version installed here already (approved when installed)
    manifest: dict[str, Any] | None  # the target version's
    dependencies: list[tuple[str, str]]  # (id, version) installed with it from the catalog
    new_permissions: list[tuple[str, list[Asker]]]  # not granted now, and who asks
    kept: list[str]  # granted now and asked again
    dropped: list[str]  # granted now, asked no more: no longer granted after it
    warnings: list[str] = field(default_factory=list)
    ends_canary: str | None = None  # the version of the canary the upgrade ends first

    @property
    def needs_approval(self) -> bool:
        """Whether the form must carry approvals: a catalog upgrade's new permissions (an
        installed version's were approved when it was installed)."""
        return self.from_catalog and bool(self.new_permissions)


def _preview(
    plugin: PluginView,
    steps: Sequence[tuple[Asker, Sequence[str]]],
    *,
    from_catalog: bool,
    warnings: Sequence[str] = (),
) -> UpgradePreview:
    """``steps``: the target version first, then the plugins installed with it."""
    granted = set(plugin.granted_permissions)
    new: dict[str, list[Asker]] = {}
    for asker, permissions in steps:
        for permission in permissions:
            if permission not in granted:
                new.setdefault(permission, []).append(asker)
    target, own = steps[0][0], set(steps[0][1])
    return UpgradePreview(
        plugin=plugin,
        target=target.version,
        from_catalog=from_catalog,
        manifest=target.manifest,
        dependencies=[(a.id, a.version) for a, _ in steps[1:]],
        new_permissions=sorted(new.items()),
        kept=sorted(granted & own),
        dropped=sorted(granted - own),
        warnings=list(warnings),
    )


def _catalog_manifest(ui: UiContext, plugin_id: str, version: str) -> dict[str, Any] | None:
    """The manifest as this orchestrator's catalog holds it (a remote catalog's are not
    here: its permissions are then described without their hosts)."""
    try:
        return dict(_state(ui.request, "catalog").version(plugin_id, version).manifest)
    except NotFound:
        return None


def _installed_preview(ui: UiContext, plugin: PluginView, version: str | None) -> UpgradePreview:
    target = version or plugin.pending_version
    if target is None:
        raise Conflict(
            f"no version of {plugin.id} is waiting to take over from {plugin.version}, and it "
            "is not in the catalog: install the new version first",
            code="no_upgrade",
        )
    stored = {
        v.version: v
        for v in batches_of(ui.request.app.state).versions([plugin.id]).get(plugin.id, [])
    }
    row = stored.get(target)
    if row is None:
        raise NotFound(
            f"{plugin.id} {target} is not installed here, and {plugin.id} is not in the catalog",
            code="version_not_installed",
            details={"installed_versions": list(stored)},
        )
    if target == plugin.version:
        raise Conflict(f"{plugin.id} is at {target} already", code="no_upgrade")
    permissions = [str(p) for p in row.manifest.get("permissions") or []]
    return _preview(
        plugin, [(Asker(plugin.id, target, row.manifest), permissions)], from_catalog=False
    )


def _upgrade_preview(ui: UiContext, plugin_id: str, version: str | None) -> UpgradePreview:
    app = ui.request.app.state
    plugin: PluginView = app.queries.get(plugin_id)
    canary = _canary_of(ui, plugin)
    ends_canary = canary.candidate.version if canary is not None else None
    # The REST route's choice: the catalog unless the version is installed here already.
    if app.lifecycle.has_version(plugin_id, version) or not app.catalog_installer.knows(plugin_id):
        return replace(_installed_preview(ui, plugin, version), ends_canary=ends_canary)
    plan: Plan = app.catalog_installer.upgrade_plan(plugin_id, version)
    ordered = sorted(plan.steps, key=lambda s: s.plugin_id != plugin_id)  # the target first
    steps = [
        (
            Asker(s.plugin_id, s.version, _catalog_manifest(ui, s.plugin_id, s.version)),
            s.permissions,
        )
        for s in ordered
    ]
    return replace(
        _preview(plugin, steps, from_catalog=True, warnings=plan.warnings),
        ends_canary=ends_canary,
    )


def _upgrade_dialog(
    ui: UiContext,
    preview: UpgradePreview,
    back: str,
    *,
    approved: set[str] | None = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    return ui.render(
        "upgrade.html",
        status_code,
        preview=preview,
        plugin=preview.plugin,
        back=back,
        approved=approved or set(),
        error=error,
    )


@router.get("/plugins/{plugin_id}/upgrade", name="ui_upgrade")
async def upgrade_dialog(
    plugin_id: str,
    ui: UiDep,
    version: str = Query("", max_length=VERSION_MAX),
    next_: str = Query("", alias="next", max_length=2000),
) -> Response:
    """What upgrading to ``version`` (default: as the REST request without one) changes,
    with a box for each new permission."""
    await ui.require(*rest_rule(plugin_id, "upgrade"))
    preview = await run_in_threadpool(_upgrade_preview, ui, plugin_id, version.strip() or None)
    return _upgrade_dialog(ui, preview, safe_next(next_, f"/ui/plugins/{plugin_id}"))


def _upgrade(ui: UiContext, plugin_id: str, version: str | None, ticked: list[str]) -> str:
    """``POST /v1/plugins/{id}/upgrade``'s service calls, with ``approved_permissions`` the
    permissions granted now (what the REST request approves by default) and the new ones
    the operator ticked: a new permission left unticked is refused by the installer."""
    app = ui.request.app.state
    lifecycle, installer, actor = app.lifecycle, app.catalog_installer, ui.actor
    before: PluginView = app.queries.get(plugin_id)
    if not lifecycle.has_version(plugin_id, version) and installer.knows(plugin_id):
        installer.upgrade(
            plugin_id,
            version=version,
            approved_permissions=sorted(set(before.granted_permissions) | set(ticked)),
            principal=ui.principal,
            actor=actor,
            switch=lambda pid, target: lifecycle.upgrade(pid, version=target, actor=actor),
        )
    else:
        lifecycle.upgrade(plugin_id, version=version, actor=actor)
    after: PluginView = app.queries.get(plugin_id)
    return f"{plugin_id} upgraded from {before.version} to {after.version}."


@router.post("/plugins/{plugin_id}/upgrade")
async def upgrade(plugin_id: str, ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require(*rest_rule(plugin_id, "upgrade"))
    ticked = sorted({v for v in form.getlist("permission") if isinstance(v, str)})
    back = f"/ui/plugins/{plugin_id}"
    try:
        # The exact version the dialog showed: one published since is not installed by a
        # click that approved another one's permissions.
        version = _form_version(form)
        said = await run_in_threadpool(_upgrade, ui, plugin_id, version, ticked)
    except SummitError as exc:
        if exc.code != "permissions_not_approved":
            ui.flash("error", f"upgrade {plugin_id}: {exc.message}")
            return ui.back(back, form)
        preview = await run_in_threadpool(_upgrade_preview, ui, plugin_id, version)
        return _upgrade_dialog(
            ui,
            preview,
            safe_next(_form_text(form, "next"), back),
            approved=set(ticked),
            error=f"Not upgraded: {exc.message}. {plugin_id} stays on {preview.plugin.version}.",
            status_code=exc.status_code,
        )
    ui.flash("ok", said)
    return ui.back(back, form)


# Last: its path would also match /plugins/{id}/call and /plugins/{id}/logs.
@router.post("/plugins/{plugin_id}/{action}")
async def plugin_action(plugin_id: str, action: str, ui: UiDep) -> Response:
    if action not in ACTIONS:
        raise NotFound(f"no plugin action {action!r}")
    form = await ui.form()
    await ui.require(*rest_rule(plugin_id, action))
    try:
        said = await run_in_threadpool(_run_action(ui, plugin_id, action, form))
        ui.flash("ok", said)
    except SummitError as exc:
        ui.flash("error", f"{action} {plugin_id}: {exc.message}")
    fallback = "/ui/plugins" if action == "uninstall" else f"/ui/plugins/{plugin_id}"
    if action == "uninstall":
        return ui.back(fallback)
    return ui.back(fallback, form)
