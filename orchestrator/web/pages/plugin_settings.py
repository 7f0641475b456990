"""An installed plugin's settings: its configuration and its broker limits, each edited in a
form that stands for a REST request and runs that request's service call.

- ``GET /ui/plugins/{id}/config``: a form made from the plugin's ``config_schema``
  (:class:`ConfigForm`), filled with the stored config. Its POST is
  ``PUT /v1/plugins/{id}/config``: :meth:`LifecycleService.set_config`, which checks the
  config against the schema (each problem shown beside its field, 422, nothing stored) and
  initializes a serving plugin again with it.
- ``GET /ui/plugins/{id}/limits``: the fields of the REST body (``LimitsBody``: rate limit,
  its window, concurrency, isolation tier, quota policy), filled with the stored overrides.
  Its POST is ``PUT /v1/plugins/{id}/limits``: the body model's own checks and the quota
  policy's, then :meth:`LifecycleService.set_limits`, which gives a serving plugin's route
  its new limits. As the REST body, the form is the whole: a field left empty goes back to
  the orchestrator's default.

Both are refused (403) unless the session's token may make the PUT; the pages' Edit links
are drawn by the same rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import Response

from orchestrator.api.routes.plugins import LimitsBody
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.monitor.quotas import QuotaPolicy
from orchestrator.services.plugins import PluginView
from orchestrator.web.config_form import ConfigForm
from orchestrator.web.guard import UiContext, UiDep, UiRoute

router = APIRouter(route_class=UiRoute)

NOT_SAVED = "Not saved: see the fields below. Nothing was changed."


def settings_rule(plugin_id: str, what: str) -> tuple[str, str]:
    """The REST request a settings form stands for (``what``: ``config`` or ``limits``)."""
    return "PUT", f"/v1/plugins/{plugin_id}/{what}"


def _plugin(ui: UiContext, plugin_id: str) -> PluginView:
    view: PluginView = ui.request.app.state.queries.get(plugin_id)  # 404 page when not here
    return view


def _serving(ui: UiContext, plugin_id: str) -> bool:
    """Whether the plugin has a route in the broker: what the services push changes to."""
    return ui.request.app.state.broker.route(plugin_id) is not None


# -- configuration -------------------------------------------------------------------------------


def _manifest(plugin: PluginView) -> Manifest | None:
    """The installed version's manifest; one stored by an older orchestrator that no longer
    reads gets the one-JSON-field form (the service checks the config all the same)."""
    try:
        return Manifest.model_validate(plugin.manifest)
    except ValidationError:
        return None


def _config_form(plugin: PluginView) -> ConfigForm:
    return ConfigForm(_manifest(plugin), plugin.config, stored=True)


def _config_page(
    ui: UiContext,
    plugin: PluginView,
    form: ConfigForm,
    *,
    error: str = "",
    status_code: int = 200,
) -> Response:
    return ui.render(
        "plugin_config.html",
        status_code,
        plugin=plugin,
        config_form=form,
        serving=_serving(ui, plugin.id),
        error=error,
    )


@router.get("/plugins/{plugin_id}/config", name="ui_plugin_config")
async def config_page(plugin_id: str, ui: UiDep) -> Response:
    await ui.require(*settings_rule(plugin_id, "config"))
    plugin = await run_in_threadpool(_plugin, ui, plugin_id)
    return _config_page(ui, plugin, _config_form(plugin))


def _config_saved(ui: UiContext, plugin: PluginView) -> str:
    if _serving(ui, plugin.id):
        return (
            f"Configuration of {plugin.id} saved and pushed to the running plugin "
            "(it was initialized again with it)."
        )
    return (
        f"Configuration of {plugin.id} saved. {plugin.id} is {plugin.state}, not running: "
        "it gets the new configuration when it is next enabled."
    )


@router.post("/plugins/{plugin_id}/config")
async def save_config(plugin_id: str, ui: UiDep) -> Response:
    """``PUT /v1/plugins/{id}/config`` with the config the form holds."""
    form = await ui.form()
    await ui.require(*settings_rule(plugin_id, "config"))
    app = ui.request.app.state
    before = await run_in_threadpool(_plugin, ui, plugin_id)
    config_form = _config_form(before)
    config = await run_in_threadpool(config_form.read, form)
    if config_form.has_errors:
        return _config_page(ui, before, config_form, error=NOT_SAVED, status_code=422)
    try:
        await run_in_threadpool(app.lifecycle.set_config, plugin_id, config)
    except Exception as exc:
        after = await run_in_threadpool(_plugin, ui, plugin_id)
        if after.updated_at != before.updated_at and after.config == config:
            # Stored, then pushing it failed (the plugin refused it, or did not answer):
            # the REST request fails too, with the config stored. Say both halves.
            why = exc.message if isinstance(exc, SummitError) else f"{type(exc).__name__}: {exc}"
            ui.flash(
                "error",
                f"Configuration of {plugin_id} saved, but pushing it to the running plugin "
                f"failed ({why}). Reload {plugin_id} to start it with the new configuration.",
            )
            return ui.back(f"/ui/plugins/{plugin_id}")
        if not isinstance(exc, SummitError):
            raise
        if isinstance(exc, InvalidInput) and isinstance(exc.details, list):
            config_form.place(exc.details)
        return _config_page(
            ui,
            after,
            config_form,
            error=f"Not saved: {exc.message}. Nothing was changed.",
            status_code=exc.status_code,
        )
    after = await run_in_threadpool(_plugin, ui, plugin_id)
    ui.flash("ok", _config_saved(ui, after))
    return ui.back(f"/ui/plugins/{plugin_id}")


# -- limits --------------------------------------------------------------------------------------


@dataclass
class LimitField:
    """One field of the REST limits body, as the form shows it."""

    name: str  # the body's key, and the input's name
    label: str
    kind: str  # integer, number, select, json
    help: str
    default: str  # what applies when it is left empty
    bounds: str = ""  # the body model's range, in words
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, label)
    value: str = ""
    error: str = ""


def _bounds(name: str) -> str:
    """The range the REST body model allows for ``name``, in words (from the model itself,
    so the form says what the check enforces)."""
    words = []
    for rule in LimitsBody.model_fields[name].metadata:
        if isinstance(rule, Ge):
            words.append(f"at least {rule.ge}")
        elif isinstance(rule, Gt):
            words.append(f"more than {rule.gt}")
        elif isinstance(rule, Le):
            words.append(f"at most {rule.le}")
        elif isinstance(rule, Lt):
            words.append(f"less than {rule.lt}")
    return ", ".join(words)


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def _limit_fields(ui: UiContext, plugin: PluginView) -> list[LimitField]:
    settings = ui.request.app.state.settings
    isolation_default = str(settings.isolation)
    if settings.isolation_unsigned is not None:
        isolation_default += f" ({settings.isolation_unsigned} for an unsigned plugin)"
    fields = [
        LimitField(
            name="rate_limit_requests",
            label="Rate limit (calls per window)",
            kind="integer",
            help="Calls into the plugin allowed in the sliding window; 0 = unlimited.",
            default=str(settings.rate_limit_requests),
        ),
        LimitField(
            name="rate_limit_window_s",
            label="Rate-limit window (seconds)",
            kind="number",
            help="The sliding window the rate limit counts over.",
            default=f"{settings.rate_limit_window_s:g}",
        ),
        LimitField(
            name="concurrency",
            label="Concurrency (calls in flight)",
            kind="integer",
            help="Calls in flight at once before the next is refused (429).",
            default=str(settings.plugin_concurrency),
        ),
        LimitField(
            name="isolation",
            label="Isolation tier",
            kind="select",
            help="The runtime its containers run under; takes effect at its next start or reload.",
            default=isolation_default,
            options=[
                ("runc", "runc (namespaces, seccomp)"),
                ("gvisor", "gvisor (user-space kernel)"),
            ],
        ),
        LimitField(
            name="quota_policy",
            label="Quota policy (JSON object)",
            kind="json",
            help="Rule by rule over the default policy: memory, cpu_throttled, storage, egress, "
            "each with an action (warn, throttle, restart, disable) or null to switch it off; "
            'e.g. {"memory": {"action": "restart"}}.',
            default="the orchestrator's policy (SUMMIT_QUOTA_POLICY)",
        ),
    ]
    for f in fields:
        f.bounds = _bounds(f.name)
        current = plugin.resources.get(f.name)
        f.value = (
            "" if current is None else (_json_text(current) if f.kind == "json" else str(current))
        )
    return fields


def _limits_page(
    ui: UiContext,
    plugin: PluginView,
    fields: list[LimitField],
    *,
    error: str = "",
    status_code: int = 200,
) -> Response:
    return ui.render(
        "plugin_limits.html",
        status_code,
        plugin=plugin,
        fields=fields,
        resources={k: v for k, v in plugin.resources.items() if k not in LimitsBody.model_fields},
        serving=_serving(ui, plugin.id),
        error=error,
    )


@router.get("/plugins/{plugin_id}/limits", name="ui_plugin_limits")
async def limits_page(plugin_id: str, ui: UiDep) -> Response:
    await ui.require(*settings_rule(plugin_id, "limits"))
    plugin = await run_in_threadpool(_plugin, ui, plugin_id)
    return _limits_page(ui, plugin, _limit_fields(ui, plugin))


def _read_limits(ui: UiContext, form: FormData, fields: list[LimitField]) -> LimitsBody | None:
    """The REST body the form holds, checked as the REST route checks it (the body model,
    then the quota policy); None when a field is refused, its message on the field."""
    by_name = {f.name: f for f in fields}
    body: dict[str, Any] = {}
    for f in fields:
        raw = form.get(f.name)
        f.value, f.error = (raw if isinstance(raw, str) else ""), ""
        text = f.value.strip()
        if text == "":
            body[f.name] = None  # the default, as null in the REST body
        elif f.kind == "json":
            try:
                body[f.name] = jsonlimits.loads(
                    text, what=f.label, max_bytes=ui.request.app.state.settings.max_request_bytes
                )
            except SummitError as exc:
                f.error = exc.message
        else:
            # The text itself: the body model parses it as it would a JSON string, with the
            # REST answer's message for one that is not a number.
            body[f.name] = text
    if any(f.error for f in fields):
        return None
    try:
        limits = LimitsBody.model_validate(body)
    except ValidationError as exc:
        for problem in exc.errors():
            target = by_name.get(str(problem["loc"][0])) if problem["loc"] else None
            if target is not None and not target.error:
                target.error = problem["msg"]
        return None
    if limits.quota_policy is not None:
        try:
            QuotaPolicy().override(limits.quota_policy)  # what the REST route checks
        except InvalidInput as exc:
            details = exc.details if isinstance(exc.details, list) else []
            said = [
                f"{str(d.get('path', '')).removeprefix('quota_policy.')}: {d.get('message')}"
                for d in details
                if isinstance(d, dict)
            ]
            by_name["quota_policy"].error = "; ".join(said) or exc.message
            return None
    return limits


def _limits_saved(ui: UiContext, before: PluginView, after: PluginView) -> str:
    said = f"Limits of {after.id} saved."
    if not _serving(ui, after.id):
        return said + f" {after.id} is {after.state}, not running: they apply from its next start."
    said += (
        " Its calls are held to the rate and concurrency limits from now, and to the quota "
        "policy from the monitor's next sample."
    )
    if before.resources.get("isolation") != after.resources.get("isolation"):
        tier = after.resources.get("isolation") or "the default tier"
        said += f" The isolation tier ({tier}) takes effect at its next reload or start."
    return said


@router.post("/plugins/{plugin_id}/limits")
async def save_limits(plugin_id: str, ui: UiDep) -> Response:
    """``PUT /v1/plugins/{id}/limits`` with the body the form holds."""
    form = await ui.form()
    await ui.require(*settings_rule(plugin_id, "limits"))
    app = ui.request.app.state
    before = await run_in_threadpool(_plugin, ui, plugin_id)
    fields = _limit_fields(ui, before)
    limits = _read_limits(ui, form, fields)
    if limits is None:
        return _limits_page(ui, before, fields, error=NOT_SAVED, status_code=422)
    try:
        await run_in_threadpool(app.lifecycle.set_limits, plugin_id, limits.model_dump())
    except SummitError as exc:
        return _limits_page(
            ui,
            await run_in_threadpool(_plugin, ui, plugin_id),
            fields,
            error=f"Not saved: {exc.message}.",
            status_code=exc.status_code,
        )
    after = await run_in_threadpool(_plugin, ui, plugin_id)
    ui.flash("ok", _limits_saved(ui, before, after))
    return ui.back(f"/ui/plugins/{plugin_id}")
