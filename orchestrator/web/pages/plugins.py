"""Installed plugins: the list with their lifecycle buttons, and one plugin's page (state
history, recent events, log tail, usage, call profile, scan report, a call form).

Every button is a form posting to ``/ui/plugins/{id}/{action}``; the action is refused
unless the session's token may make the REST request it stands for, and it runs the same
service call the REST route runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from orchestrator.api.deps import extensions_of
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import InvalidInput, NotFound, SummitError
from orchestrator.web.guard import UiContext, UiDep, UiRoute

router = APIRouter(route_class=UiRoute)

ACTIONS = ("enable", "disable", "reload", "upgrade", "rollback", "uninstall")
LOG_TAIL = 200
RECENT_EVENTS = 30


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


@router.get("/plugins", name="ui_plugins")
async def plugin_list(ui: UiDep, state: str | None = None) -> Response:
    await ui.require("GET", "/v1/plugins")
    queries = _state(ui.request, "queries")
    plugins = await run_in_threadpool(queries.list_plugins, state=state or None)
    return ui.render(
        "plugins.html",
        plugins=plugins,
        actions={p.id: allowed_actions(ui, p) for p in plugins},
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

    def upgrade() -> str:
        installer = _state(ui.request, "catalog_installer")
        version = str(form.get("version") or "") or None
        if not lifecycle.has_version(plugin_id, version) and installer.knows(plugin_id):
            installer.upgrade(
                plugin_id,
                version=version,
                approved_permissions=None,  # those granted now: a new one is refused
                principal=ui.principal,
                actor=actor,
                switch=lambda pid, target: lifecycle.upgrade(pid, version=target, actor=actor),
            )
        else:
            lifecycle.upgrade(plugin_id, version=version, actor=actor)
        return f"{plugin_id} upgraded."

    return {
        "enable": enable,
        "disable": disable,
        "reload": reload,
        "rollback": rollback,
        "uninstall": uninstall,
        "upgrade": upgrade,
    }[action]


def _read(call: Callable[[], Any]) -> tuple[Any, str]:
    """A read that may fail for a reason worth showing in its place (no container, no
    report): its value, or None and the reason."""
    try:
        return call(), ""
    except SummitError as exc:
        return None, exc.message


def _plugin_page_data(ui: UiContext, plugin_id: str) -> dict[str, Any]:
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
    return {
        "plugin": plugin,
        "history": lifecycle.history(plugin_id, limit=20).items,
        "transitions": queries.transitions(plugin_id, limit=20),
        "events": list(reversed(recent[-RECENT_EVENTS:])),
        "logs": logs,
        "logs_note": logs_note,
        "usage": usage,
        "usage_note": usage_note,
        "profile": app.broker.profile.summary(plugin_id),
        "scan": scan,
        "scan_note": scan_note,
    }


def _call_points(plugin: Any) -> list[str]:
    """The extension points the plugin provides (a call names the point and the plugin)."""
    points = {
        str(e.get("point")) for e in plugin.manifest.get("extensions", []) if isinstance(e, dict)
    }
    return sorted(points)


async def _plugin_page(
    ui: UiContext, plugin_id: str, *, status_code: int = 200, **extra: Any
) -> Response:
    await ui.require("GET", f"/v1/plugins/{plugin_id}")
    data = await run_in_threadpool(_plugin_page_data, ui, plugin_id)
    plugin = data["plugin"]
    points = _call_points(plugin)
    values: dict[str, Any] = {
        "actions": allowed_actions(ui, plugin),
        "call_points": points,
        "can_call": any(ui.can("POST", f"/v1/extension-points/{p}/execute") for p in points),
        "call": None,
        **data,
    }
    values.update(extra)
    return ui.render("plugin.html", status_code, **values)


@router.get("/plugins/{plugin_id}", name="ui_plugin")
async def plugin_page(plugin_id: str, ui: UiDep) -> Response:
    return await _plugin_page(ui, plugin_id)


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
