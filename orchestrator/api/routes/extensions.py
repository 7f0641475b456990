"""``/v1/extension-points``: list providers and execute calls through the broker."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.jobs.worker import ExecutePayload

from ..deps import ExtensionsDep, PrincipalDep, SettingsDep

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
def list_points(extensions: ExtensionsDep, _: PrincipalDep) -> list[dict[str, Any]]:
    return extensions.providers()


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
    extensions: ExtensionsDep,
    _: PrincipalDep,
    response: Response,
) -> dict[str, Any] | JSONResponse:
    """Call the providers of ``point``: ``all`` at once, a ``pipeline``, or the ``first``
    that succeeds. When no provider succeeds the answer is the first error's status, with
    every provider's result in ``error.details.results``. With ``async: true`` the call is
    queued: 202 ``{job_id, status, links}`` at once, the outcome at ``GET /v1/jobs/{id}``."""
    if body.run_async:
        payload = ExecutePayload(point=point, **body.model_dump(exclude={"run_async"}))
        response.status_code = 202
        return await extensions.submit(payload)
    result = await extensions.execute(
        point, body.input, mode=body.mode, plugins=body.plugins, timeout_ms=body.timeout_ms
    )
    # Already JSON-safe (it came from JSON): skip FastAPI's recursive jsonable_encoder.
    return JSONResponse(result)
