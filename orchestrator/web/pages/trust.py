"""What plugins may be trusted with: a plugin's secrets (set, replaced, removed; never shown)
and the publisher keys whose signatures this orchestrator accepts (added, revoked).

Each form stands for its REST request (``PUT``/``DELETE /v1/plugins/{id}/secrets/{name}``,
``POST /v1/trust/keys``, ``DELETE /v1/trust/keys/{id}``): allowed by that request's rule, its
fields checked by the route's own body model, and the same service call (``HostService``,
``TrustStore``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from orchestrator.api.routes.security import KeyRequest, SecretValue
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.web.forms import checked
from orchestrator.web.guard import UiContext, UiDep, UiRoute

__all__ = ["router"]

router = APIRouter(route_class=UiRoute)


def _secrets_rule(plugin_id: str, name: str = "") -> str:
    return f"/v1/plugins/{plugin_id}/secrets" + (f"/{name}" if name else "")


async def _secrets_page(ui: UiContext, plugin_id: str, *, status_code: int = 200) -> Response:
    app = ui.request.app.state
    plugin = await run_in_threadpool(app.queries.get, plugin_id)  # 404 when not installed
    secrets = await run_in_threadpool(app.host.list_secrets, plugin_id)
    return ui.render(
        "plugin_secrets.html",
        status_code,
        plugin=plugin,
        secrets=secrets,
        can_set=ui.can("PUT", _secrets_rule(plugin_id, "x")),
        can_delete=ui.can("DELETE", _secrets_rule(plugin_id, "x")),
        reads_secrets="secrets:read" in plugin.granted_permissions,
    )


@router.get("/plugins/{plugin_id}/secrets", name="ui_plugin_secrets")
async def secrets(plugin_id: str, ui: UiDep) -> Response:
    await ui.require("GET", _secrets_rule(plugin_id))
    return await _secrets_page(ui, plugin_id)


@router.post("/plugins/{plugin_id}/secrets")
async def set_secret(plugin_id: str, ui: UiDep) -> Response:
    """``PUT /v1/plugins/{id}/secrets/{name} {"value"}``: the value is stored sealed and
    never shown again, here or anywhere."""
    form = await ui.form()
    name = str(form.get("name") or "").strip()
    await ui.require("PUT", _secrets_rule(plugin_id, name or "x"))
    try:
        if not name:
            raise InvalidInput("name: a secret needs a name")
        body = checked(SecretValue, {"value": str(form.get("value") or "")})
        await run_in_threadpool(ui.request.app.state.host.set_secret, plugin_id, name, body.value)
        ui.flash("ok", f"Secret {name} of {plugin_id} is set.")
    except SummitError as exc:
        ui.flash("error", f"secret {name[:64]!r}: {exc.message}")
    return ui.back(f"/ui/plugins/{plugin_id}/secrets")


@router.post("/plugins/{plugin_id}/secrets/{name}/delete")
async def delete_secret(plugin_id: str, name: str, ui: UiDep) -> Response:
    await ui.form()
    await ui.require("DELETE", _secrets_rule(plugin_id, name))
    try:
        await run_in_threadpool(ui.request.app.state.host.delete_secret, plugin_id, name)
        ui.flash("ok", f"Secret {name} of {plugin_id} is removed.")
    except SummitError as exc:
        ui.flash("error", f"secret {name[:64]!r}: {exc.message}")
    return ui.back(f"/ui/plugins/{plugin_id}/secrets")


async def _keys_page(
    ui: UiContext, *, status_code: int = 200, error: str = "", typed: dict[str, str] | None = None
) -> Response:
    keys = await run_in_threadpool(ui.request.app.state.trust.list)
    return ui.render(
        "trust.html",
        status_code,
        keys=keys,
        can_add=ui.can("POST", "/v1/trust/keys"),
        can_revoke=ui.can("DELETE", "/v1/trust/keys/x"),
        typed=typed or {},
        error=error,
    )


@router.get("/trust", name="ui_trust")
async def trust(ui: UiDep) -> Response:
    await ui.require("GET", "/v1/trust/keys")
    return await _keys_page(ui)


@router.post("/trust")
async def add_key(ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("POST", "/v1/trust/keys")
    typed = {"name": str(form.get("name") or ""), "public_key": str(form.get("public_key") or "")}
    try:
        body = checked(KeyRequest, {k: v.strip() for k, v in typed.items()})
        added = await run_in_threadpool(
            lambda: ui.request.app.state.trust.add(name=body.name, public_key=body.public_key)
        )
    except SummitError as exc:
        # Shown again as typed, with the reason: nothing was stored.
        return await _keys_page(ui, status_code=exc.status_code, error=exc.message, typed=typed)
    ui.flash("ok", f"Trusted {added.name}'s key {added.key_id}.")
    return ui.back("/ui/trust")


@router.post("/trust/{key_id}/revoke")
async def revoke_key(key_id: str, ui: UiDep) -> Response:
    await ui.form()
    await ui.require("DELETE", f"/v1/trust/keys/{key_id}")
    try:
        revoked = await run_in_threadpool(ui.request.app.state.trust.revoke, key_id)
        ui.flash(
            "ok", f"Key {revoked.key_id} ({revoked.name}) is revoked: what it signs is refused."
        )
    except SummitError as exc:
        ui.flash("error", f"revoke {key_id[:64]}: {exc.message}")
    return ui.back("/ui/trust")
