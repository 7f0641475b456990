"""``/v1/plugins``: install, inspect, enable, disable, reload, upgrade, roll back, canary,
configure, uninstall, and the installation history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.api.errors import error_body
from orchestrator.catalog.installer import CatalogInstall, CollectionInstall
from orchestrator.config import Settings
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import BadRequest, InvalidInput, SummitError, TooLarge
from orchestrator.jobs.install import INSTALL, save_upload
from orchestrator.jobs.queue import JobQueue
from orchestrator.monitor.quotas import QuotaPolicy
from orchestrator.services.install import InstallRequest, InstallService
from orchestrator.services.lifecycle import CanaryView, HistoryPage
from orchestrator.services.plugins import PluginView, TransitionView

from ..deps import (
    ActorDep,
    BrokerDep,
    CatalogInstallerDep,
    IdleDep,
    InstallsDep,
    JobsDep,
    LifecycleDep,
    PrincipalDep,
    QueriesDep,
    RowCursor,
    SettingsDep,
)

router = APIRouter(prefix="/v1/plugins", tags=["plugins"])
NDJSON = "application/x-ndjson"
# Room in a JSON install body for what is not its config (image, permissions, signature).
INSTALL_BODY_EXTRA_BYTES = 64 * 1024
# The smallest cap on a multipart text field: a signature envelope or a permission list.
FORM_FIELD_MIN_BYTES = 1024 * 1024


class ConfigBody(BaseModel):
    config: dict[str, Any]


class UpgradeBody(BaseModel):
    approved_permissions: list[str] | None = Field(
        None,
        description="From the catalog: the new version's permissions (default: those granted "
        "now; a permission it adds must be approved)",
    )
    version: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="A version (from the catalog: or a range; default: the newest compatible). "
        "Otherwise an installed version (default: the one installed while the plugin was "
        "ACTIVE, waiting to take over)",
    )


class CanaryBody(BaseModel):
    version: str = Field(
        min_length=1, max_length=64, description="An installed version of the plugin"
    )
    weight: int = Field(ge=0, le=100, description="Percent of the plugin's calls it takes")


class LimitsBody(BaseModel):
    """Per-plugin broker limits; null restores the orchestrator's default."""

    rate_limit_requests: int | None = Field(None, ge=0, description="0 = unlimited")
    rate_limit_window_s: float | None = Field(None, gt=0, le=86400)
    concurrency: int | None = Field(None, ge=1, le=10000)
    quota_policy: dict[str, Any] | None = Field(
        None,
        description="This plugin's quota policy, rule by rule over the default "
        "(SUMMIT_QUOTA_POLICY): memory, cpu_throttled, storage, egress, each with an action "
        "(warn, throttle, restart, disable) or null to switch the rule off",
    )
    isolation: Literal["runc", "gvisor"] | None = Field(
        None,
        description="Isolation tier of this plugin's containers (null: SUMMIT_ISOLATION, or "
        "SUMMIT_ISOLATION_UNSIGNED for an unsigned plugin); takes effect at its next start "
        "or reload",
    )


def _json_field(
    form: Any,
    name: str,
    default: Any,
    kind: type,
    *,
    max_bytes: int | None = None,
    too_large_code: str = "too_large",
) -> Any:
    raw = form.get(name)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):  # a file where text was expected
        raise InvalidInput(f"field {name!r} must be JSON text", code="invalid_request")
    value = jsonlimits.loads(
        raw, what=f"field {name!r}", max_bytes=max_bytes, too_large_code=too_large_code
    )
    if not isinstance(value, kind):
        raise InvalidInput(f"field {name!r} must be a JSON {kind.__name__}", code="invalid_request")
    return value


async def _read_body(request: Request, cap: int, *, code: str, hint: str = "") -> bytes:
    """The request body, read no further than ``cap`` bytes (413 ``code`` beyond it)."""

    def too_large() -> TooLarge:
        return TooLarge(
            f"the request body is over the limit of {cap} bytes{hint}",
            code=code,
            details={"limit_bytes": cap},
        )

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large()
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > cap:
            raise too_large()
    return bytes(raw)


def _json_body(raw: bytes) -> Any:
    """A JSON body through the API's one decoder (one level more than the limit: the body
    itself)."""
    return jsonlimits.loads(
        raw or b"{}", what="the request body", max_depth=jsonlimits.MAX_DEPTH + 1
    )


def _decode_body(raw: bytes, model: type[BaseModel]) -> Any:
    """A JSON body decoded (``_json_body``), then validated as ``model``."""
    return _validated(model, _json_body(raw))


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(
            [
                {"path": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
                for e in exc.errors()
            ]
        ) from None


def _invalid(details: list[dict[str, str]]) -> InvalidInput:
    return InvalidInput("the request is not valid", code="invalid_request", details=details)


async def _install_form(request: Request, settings: Settings) -> Any:
    # Text fields may be as large as a config may be; a larger one is refused while the form
    # is parsed, where Starlette only tells it apart from other refusals by its message.
    cap = max(FORM_FIELD_MIN_BYTES, settings.config_max_bytes)
    try:
        return await request.form(max_part_size=cap)
    except StarletteHTTPException as exc:
        if exc.status_code == 400 and "maximum size" in str(exc.detail):
            raise TooLarge(
                f"a form field is over the limit of {cap} bytes (a config may have at most "
                f"{settings.config_max_bytes}: SUMMIT_CONFIG_MAX_BYTES)",
                code="field_too_large",
                details={"limit_bytes": cap},
            ) from None
        raise


_INSTALL_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            # The one install model; a JSON body names an image (a bundle comes as multipart).
            "application/json": {
                "schema": {**InstallRequest.model_json_schema(), "required": ["image"]}
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["bundle"],
                    "properties": {
                        "bundle": {"type": "string", "format": "binary"},
                        "approved_permissions": {"type": "string", "description": "JSON list"},
                        "config": {"type": "string", "description": "JSON object"},
                        "allow_findings": {"type": "string", "description": "JSON boolean"},
                        "override_reason": {"type": "string"},
                        "signature": {"type": "string", "description": "JSON envelope"},
                    },
                }
            },
        },
    }
}


@router.post("", status_code=201, response_model=PluginView, openapi_extra=_INSTALL_DOC)
async def install_plugin(
    request: Request,
    installs: InstallsDep,
    catalog_installer: CatalogInstallerDep,
    principal: PrincipalDep,
    actor: ActorDep,
    jobs: JobsDep,
    settings: SettingsDep,
) -> PluginView | Response:
    """Install from an image reference (JSON), a source bundle (multipart ``bundle``), or the
    catalog (JSON ``{"catalog": {"id", "version"}, "approved_permissions"}``: the plugin and the
    dependencies it needs, all or nothing; 201 ``{plan, installed}``). A collection from the
    catalog (``{"collection": {"id", "version"}, "approved_permissions", "config": {"<id>":
    {...}}}``) installs every member not installed yet, with their dependencies, all or
    nothing: 201 ``{collection, plan, installed}`` (200 when every member was there already).

    With ``Accept: application/x-ndjson`` the build's progress is streamed as JSON lines.
    With ``?async=true`` the install is queued as a job: 202 ``{job_id, status, links}`` at
    once; ``GET /v1/jobs/{id}`` shows its progress lines and its outcome.
    """
    ctype = request.headers.get("content-type", "")
    upload: UploadFile | None = None
    # Who asks is the authenticated caller, never a field of the request.
    server_set = {"principal": principal, "actor": actor, "bundle_path": None}
    if ctype.startswith("multipart/form-data"):
        form = await _install_form(request, settings)
        field = form.get("bundle")
        if field is None or isinstance(field, str):
            raise BadRequest(
                "the multipart body needs a file field 'bundle'", code="invalid_request"
            )
        upload = field
        fields = {
            "approved_permissions": _json_field(form, "approved_permissions", [], list),
            "config": _json_field(
                form,
                "config",
                {},
                dict,
                max_bytes=settings.config_max_bytes,
                too_large_code="config_too_large",
            ),
            "allow_findings": _json_field(form, "allow_findings", False, bool),
            "override_reason": str(form.get("override_reason") or "") or None,
            "signature": _json_field(form, "signature", None, dict),
        }
        req: InstallRequest = _validated(InstallRequest, {**fields, **server_set})
    elif ctype.startswith("application/json"):
        raw = await _read_body(
            request,
            settings.config_max_bytes + INSTALL_BODY_EXTRA_BYTES,
            code="request_too_large",
            hint=f" (a config may have at most {settings.config_max_bytes})",
        )
        # Decoded once; the keys say which install it is (catalog, collection, image).
        data = _json_body(raw)
        asks = data.keys() if isinstance(data, dict) else ()
        if "catalog" in asks:
            wanted: CatalogInstall = _validated(CatalogInstall, data)
            result = await run_in_threadpool(
                catalog_installer.install, wanted, principal=principal, actor=actor
            )
            return JSONResponse(result, status_code=201)
        if "collection" in asks:
            members: CollectionInstall = _validated(CollectionInstall, data)
            result = await run_in_threadpool(
                catalog_installer.install_collection, members, principal=principal, actor=actor
            )
            return JSONResponse(result, status_code=201 if result["installed"] else 200)
        req = _validated(InstallRequest, data).model_copy(update=server_set)
        if req.image is None:
            raise _invalid([{"path": "image", "message": "Field required"}])
    else:
        raise InvalidInput(
            "send application/json with 'image' or multipart/form-data with 'bundle'",
            code="unsupported_media_type",
        )
    bundle = upload.file if upload is not None else None
    if request.query_params.get("async", "").lower() in ("1", "true", "yes"):
        try:
            installs.check(req)  # refused now, not by the job later
            return await _install_queued(req, upload, jobs, settings)
        finally:
            if upload is not None:
                await upload.close()
    if NDJSON in request.headers.get("accept", ""):
        return await _install_streaming(installs, req, upload)
    try:
        view: PluginView = await run_in_threadpool(installs.install, req, bundle=bundle)
    finally:
        if upload is not None:
            await upload.close()
    return view


async def _install_queued(
    req: InstallRequest, upload: UploadFile | None, jobs: JobQueue, settings: Settings
) -> Response:
    if upload is not None:
        path = await run_in_threadpool(
            save_upload,
            upload.file,
            settings.state_dir / "uploads",
            max_bytes=settings.bundle_max_bytes,
        )
        req = req.model_copy(update={"bundle_path": str(path.resolve())})
    job = await run_in_threadpool(
        jobs.submit, INSTALL, req.model_dump(), max_attempts=settings.job_max_attempts
    )
    return JSONResponse(
        {"job_id": job.id, "status": job.status.value, "links": {"self": f"/v1/jobs/{job.id}"}},
        status_code=202,
    )


async def _install_streaming(
    installs: InstallService, req: InstallRequest, upload: UploadFile | None
) -> Response:
    """Install, answering NDJSON lines: ``{"progress"}`` while it builds, then ``{"plugin"}``.

    The answer starts only with the first progress line, so everything refused before the
    build starts (bad bundle, manifest, permissions) still gets its own HTTP status.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    bundle = upload.file if upload is not None else None

    def progress(line: str) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, {"progress": line})

    async def run() -> None:
        try:
            view = await run_in_threadpool(installs.install, req, bundle=bundle, progress=progress)
            await lines.put({"plugin": view.model_dump(mode="json")})
        except SummitError as exc:
            await lines.put(
                {"status": exc.status_code, **error_body(exc.code, exc.message, exc.details)}
            )
        except Exception as exc:
            await lines.put(
                {"status": 500, **error_body("internal_error", f"unexpected {type(exc).__name__}")}
            )
        finally:
            if upload is not None:
                await upload.close()
            await lines.put(None)

    task = asyncio.create_task(run())
    first = await lines.get()
    if first is not None and "progress" not in first:
        await task
        if "plugin" in first:
            return JSONResponse(first["plugin"], status_code=201)
        return JSONResponse({"error": first["error"]}, status_code=first["status"])

    async def stream() -> AsyncIterator[bytes]:
        item = first
        while item is not None:
            yield (json.dumps(item) + "\n").encode()
            item = await lines.get()
        await task

    return StreamingResponse(stream(), status_code=201, media_type=NDJSON)


@router.get("", response_model=list[PluginView])
def list_plugins(
    queries: QueriesDep, _: PrincipalDep, state: str | None = None
) -> list[PluginView]:
    return queries.list_plugins(state=state)


@router.get("/{plugin_id}", response_model=PluginView)
def get_plugin(plugin_id: str, queries: QueriesDep, _: PrincipalDep) -> PluginView:
    return queries.get(plugin_id)


@router.post("/{plugin_id}/enable", response_model=PluginView)
def enable_plugin(
    plugin_id: str, lifecycle: LifecycleDep, queries: QueriesDep, actor: ActorDep
) -> PluginView:
    lifecycle.enable(plugin_id, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/disable", response_model=PluginView)
def disable_plugin(
    plugin_id: str,
    lifecycle: LifecycleDep,
    queries: QueriesDep,
    actor: ActorDep,
    cascade: bool = Query(False, description="also disable ACTIVE plugins that depend on it"),
) -> PluginView:
    lifecycle.disable(plugin_id, cascade=cascade, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/reload", response_model=PluginView)
def reload_plugin(
    plugin_id: str, lifecycle: LifecycleDep, queries: QueriesDep, actor: ActorDep
) -> PluginView:
    lifecycle.reload(plugin_id, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/upgrade", response_model=PluginView)
def upgrade_plugin(
    plugin_id: str,
    lifecycle: LifecycleDep,
    catalog_installer: CatalogInstallerDep,
    queries: QueriesDep,
    principal: PrincipalDep,
    actor: ActorDep,
    body: UpgradeBody | None = None,
) -> PluginView:
    """Move to another version. A plugin from the catalog moves to ``version`` (a version or a
    range; default: the newest compatible one), installed from the catalog first with any new
    dependency it needs (a new permission must be in ``approved_permissions``). Otherwise the
    version must be installed already (default: the one waiting to take over). An ACTIVE
    plugin switches blue/green: if the new version fails its health checks or initialize, the
    old one keeps serving and the answer is 409 ``upgrade_rolled_back`` with the start error.
    409 ``dependents_would_break`` lists the installed plugins whose range the version is
    outside of."""
    version = body.version if body else None
    if not lifecycle.has_version(plugin_id, version) and catalog_installer.knows(plugin_id):
        catalog_installer.upgrade(
            plugin_id,
            version=version,
            approved_permissions=body.approved_permissions if body else None,
            principal=principal,
            actor=actor,
            switch=lambda pid, target: lifecycle.upgrade(pid, version=target, actor=actor),
        )
    else:
        lifecycle.upgrade(plugin_id, version=version, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/rollback", response_model=PluginView)
def rollback_plugin(
    plugin_id: str, lifecycle: LifecycleDep, queries: QueriesDep, actor: ActorDep
) -> PluginView:
    """Back to the version the current one replaced, the same way as an upgrade (409
    ``no_previous_version`` when there is none)."""
    lifecycle.rollback(plugin_id, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/canary", response_model=CanaryView)
def start_canary(
    plugin_id: str, body: CanaryBody, lifecycle: LifecycleDep, actor: ActorDep
) -> CanaryView:
    """Run the installed ``version`` beside the ACTIVE plugin's current version and send it
    ``weight`` percent of the calls (each call is drawn; a fan-out draws for each of its
    calls); again with the same version, change the weight without restarting it. 404
    ``version_not_installed`` lists the installed versions; 409 ``canary_running`` when
    another version is the candidate, ``canary_failed`` with the start error when it does not
    start (nothing is left behind). Events go to the current version only. Reload, upgrade,
    rollback and disable end a running canary first."""
    return lifecycle.start_canary(plugin_id, version=body.version, weight=body.weight, actor=actor)


@router.get("/{plugin_id}/canary", response_model=CanaryView)
def get_canary(plugin_id: str, lifecycle: LifecycleDep, _: PrincipalDep) -> CanaryView:
    """The canary's weight and each version's calls, errors, p50 and p99 (milliseconds)
    through this replica since it started here; 404 ``no_canary`` without one."""
    return lifecycle.canary(plugin_id)


@router.post("/{plugin_id}/canary/promote", response_model=PluginView)
def promote_canary(
    plugin_id: str, lifecycle: LifecycleDep, queries: QueriesDep, actor: ActorDep
) -> PluginView:
    """Make the candidate the current version (history ``upgraded``); the old container is
    retired once its calls in flight have finished, so no call fails. 409 ``no_canary``."""
    lifecycle.promote_canary(plugin_id, actor=actor)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/canary/abort", response_model=PluginView)
def abort_canary(
    plugin_id: str, lifecycle: LifecycleDep, queries: QueriesDep, actor: ActorDep
) -> PluginView:
    """Send every call to the current version again and retire the candidate once its calls
    in flight have finished (history ``canary_aborted``). 409 ``no_canary``."""
    lifecycle.abort_canary(plugin_id, actor=actor)
    return queries.get(plugin_id)


@router.get("/{plugin_id}/history", response_model=HistoryPage)
def plugin_history(
    plugin_id: str,
    lifecycle: LifecycleDep,
    _: PrincipalDep,
    limit: int = Query(100, ge=1, le=1000),
    before: RowCursor = None,
) -> HistoryPage:
    """Every version installed, upgrade (and upgrade rolled back), rollback, enable, disable,
    reload, failure and uninstall, newest first, with who and when: ``{items, next}``, where
    ``next`` is the ``before`` of the following page. Kept after the plugin is uninstalled."""
    return lifecycle.history(plugin_id, limit=limit, before=before)


@router.post("/{plugin_id}/pause", response_model=PluginView)
def pause_plugin(plugin_id: str, idle: IdleDep, queries: QueriesDep, _: PrincipalDep) -> PluginView:
    """Freeze the ACTIVE plugin now, as the idle pause would; its next call thaws it."""
    idle.pause_now(plugin_id)
    return queries.get(plugin_id)


@router.post("/{plugin_id}/resume", response_model=PluginView)
def resume_plugin(
    plugin_id: str, idle: IdleDep, queries: QueriesDep, _: PrincipalDep
) -> PluginView:
    """Thaw a frozen plugin now (a call would too); a running one is left as it is."""
    idle.resume_by_operator(plugin_id)
    return queries.get(plugin_id)


@router.delete("/{plugin_id}", status_code=204)
def uninstall_plugin(plugin_id: str, lifecycle: LifecycleDep, actor: ActorDep) -> Response:
    lifecycle.uninstall(plugin_id, actor=actor)
    return Response(status_code=204)


_CONFIG_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ConfigBody.model_json_schema()}},
    }
}


@router.put("/{plugin_id}/config", response_model=PluginView, openapi_extra=_CONFIG_DOC)
async def put_config(
    plugin_id: str,
    request: Request,
    lifecycle: LifecycleDep,
    queries: QueriesDep,
    settings: SettingsDep,
    _: PrincipalDep,
) -> PluginView:
    """Replace the plugin's config (at most ``SUMMIT_CONFIG_MAX_BYTES``); a running plugin is
    initialized again with it."""
    # The body is {"config": ...}: a few bytes more than the config itself.
    raw = await _read_body(request, settings.config_max_bytes + 64, code="config_too_large")
    body = _decode_body(raw, ConfigBody)
    await run_in_threadpool(lifecycle.set_config, plugin_id, body.config)
    return await run_in_threadpool(queries.get, plugin_id)


@router.put("/{plugin_id}/limits", response_model=PluginView)
def put_limits(
    plugin_id: str, body: LimitsBody, lifecycle: LifecycleDep, queries: QueriesDep, _: PrincipalDep
) -> PluginView:
    """Rate limit (sliding window) and concurrency limit of calls into this plugin, and the
    isolation tier its containers run under."""
    if body.quota_policy is not None:
        QuotaPolicy().override(body.quota_policy)  # 422 listing every bad field
    lifecycle.set_limits(plugin_id, body.model_dump())
    return queries.get(plugin_id)


@router.get("/{plugin_id}/profile")
async def plugin_profile(
    plugin_id: str, broker: BrokerDep, queries: QueriesDep, _: PrincipalDep
) -> dict[str, Any]:
    """Where the time of the plugin's recent successful calls through this replica went,
    phase by phase (``slot``: admission and waiting for a connection, ``connect``, ``plugin``:
    the plugin's own time, ``check``: reading, decoding and checking the answer), in
    milliseconds: p50, p90, p99, max and mean over the last calls kept."""
    await run_in_threadpool(queries.get, plugin_id)  # 404 for a plugin not installed
    return {"plugin": plugin_id, **broker.profile.summary(plugin_id)}


@router.get("/{plugin_id}/logs")
def plugin_logs(
    plugin_id: str, queries: QueriesDep, _: PrincipalDep, tail: int = Query(100, ge=1, le=10000)
) -> dict[str, Any]:
    return {"plugin": plugin_id, "logs": queries.logs(plugin_id, tail=tail)}


@router.get("/{plugin_id}/events", response_model=list[TransitionView])
def plugin_events(
    plugin_id: str, queries: QueriesDep, _: PrincipalDep, limit: int = Query(100, ge=1, le=1000)
) -> list[TransitionView]:
    """The plugin's state transitions, newest first, each with its time and reason."""
    return queries.transitions(plugin_id, limit=limit)


@router.get("/{plugin_id}/scan")
def scan_report(
    plugin_id: str, queries: QueriesDep, _: PrincipalDep, version: str | None = None
) -> dict[str, Any]:
    """What the supply-chain check found in a version (default: the installed one)."""
    return queries.scan_report(plugin_id, version=version)
