"""``/v1/extension-points``: list providers and execute calls through the broker."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import Conflict, InvalidInput, SummitError
from orchestrator.domain.manifest import ExtensionPoint
from orchestrator.jobs.worker import ExecutePayload

from ..deps import BrokerDep, PrincipalDep, QueriesDep, SettingsDep
from .jobs import JobsDep, submit_execute

router = APIRouter(prefix="/v1/extension-points", tags=["extension points"])


class RequestTooLarge(SummitError):
    status_code = 413
    code = "request_too_large"


class ExecuteBody(BaseModel):
    input: Any = None
    mode: Literal["all", "pipeline", "first"] = "all"
    plugins: list[str] | None = None
    timeout_ms: int | None = Field(None, ge=1, le=600_000)
    run_async: bool = Field(
        False, alias="async", description="Queue the call: 202 with a job id (GET /v1/jobs/{id})"
    )


async def execute_body(request: Request, settings: SettingsDep) -> ExecuteBody:
    """The execute body, read no further than ``SUMMIT_MAX_REQUEST_BYTES``."""
    cap = settings.max_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise RequestTooLarge(
            f"the request body is {declared} bytes; the limit is {cap}",
            details={"limit_bytes": cap},
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > cap:
            raise RequestTooLarge(
                f"the request body is over the limit of {cap} bytes",
                details={"limit_bytes": cap},
            )
    try:
        body = ExecuteBody.model_validate_json(bytes(raw) or b"{}")
    except ValidationError as exc:
        raise InvalidInput(
            "the request is not valid",
            code="invalid_request",
            details=[
                {"path": ".".join(map(str, e["loc"])) or "(body)", "message": e["msg"]}
                for e in exc.errors()
            ],
        ) from None
    # The broker holds a synchronous call to the same limit (with the same error, so the fast
    # path answers alike); checked here so that a queued call is refused at once.
    jsonlimits.check_depth(raw, body.input, what="the input")
    return body


ExecuteBodyDep = Annotated[ExecuteBody, Depends(execute_body)]


@router.get("")
def list_points(broker: BrokerDep, _: PrincipalDep) -> list[dict[str, Any]]:
    out = []
    for point in ExtensionPoint:
        providers = [
            {
                "plugin": route.plugin_id,
                "version": route.version,
                "name": ext.name,
                "priority": ext.priority,
                "idempotent": ext.idempotent,
                "input_schema": ext.input_schema,
                "output_schema": ext.output_schema,
                "breaker": broker.breakers.describe(route.plugin_id),
            }
            for route, ext in broker.providers(point.value)
        ]
        out.append({"point": point.value, "providers": providers})
    return out


@router.post(
    "/{point}/execute",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ExecuteBody.model_json_schema()}},
        }
    },
)
async def execute(
    point: str,
    body: ExecuteBodyDep,
    broker: BrokerDep,
    queries: QueriesDep,
    _: PrincipalDep,
    jobs: JobsDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any] | JSONResponse:
    """Call the providers of ``point``: ``all`` at once, a ``pipeline``, or the ``first``
    that succeeds. When no provider succeeds the answer is the first error's status, with
    every provider's result in ``error.details.results``. With ``async: true`` the call is
    queued: 202 ``{job_id, status, links}`` at once, the outcome at ``GET /v1/jobs/{id}``."""
    if body.run_async:
        payload = ExecutePayload(point=point, **body.model_dump(exclude={"run_async"}))
        response.status_code = 202
        return await submit_execute(jobs, payload, max_attempts=settings.job_max_attempts)
    try:
        result = await broker.execute(
            point, body.input, mode=body.mode, plugins=body.plugins, timeout_ms=body.timeout_ms
        )
        # Already JSON-safe (it came from JSON): skip FastAPI's recursive jsonable_encoder.
        return JSONResponse(result)
    except Conflict as exc:
        if exc.code == "not_active":
            for plugin_id in exc.details["plugins"]:
                await run_in_threadpool(queries.get, plugin_id)  # 404 when not installed
        raise
