"""Typed extension points: pydantic input/output models and a base class for each point.

Subclass the point and implement its one method; register an instance with the builder
(``.extension("analyzer", "keywords", Keywords())``) or decorate the class
(``@analyzer("keywords")``). The runtime then validates the input before the method runs
(400 ``invalid_input`` with the pydantic errors in ``error.details``) and the method's result
before it is sent (500 ``invalid_output``); the method may return the output model or a dict.

The method may be ``async def``. Importing this module loads pydantic, which plain plugins and
the runtime's cold start avoid.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_serializer, model_validator

from summit_sdk.builder import SCHEMAS_ATTRIBUTE
from summit_sdk.errors import PluginError

__all__ = [
    "Analyzer",
    "AnalyzerInput",
    "AnalyzerOutput",
    "AuthProvider",
    "AuthRequest",
    "AuthResult",
    "DataSource",
    "DataSourcePage",
    "DataSourceQuery",
    "Export",
    "ExportInput",
    "ExportOutput",
    "ExtensionPoint",
    "Finding",
    "Principal",
    "Visualization",
    "VisualizationInput",
    "VisualizationOutput",
    "Workflow",
    "WorkflowInput",
    "WorkflowResult",
    "typed_handler",
]

log = logging.getLogger("summit_sdk.points")

M = TypeVar("M")
# What a point's method may return: its output model or a dict, directly or from ``async def``.
Result: TypeAlias = M | dict[str, Any] | Awaitable[M | dict[str, Any]]


# --------------------------------------------------------------------------- models


class DataSourceQuery(BaseModel):
    query: dict[str, Any] = Field(default_factory=dict, description="source-specific filter")
    limit: int = Field(100, ge=1, le=10_000)
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class DataSourcePage(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: str | None = None
    total: int | None = Field(None, ge=0)


class AnalyzerInput(BaseModel):
    text: str | None = None
    data: Any = None
    options: dict[str, Any] = Field(default_factory=dict)


class Finding(BaseModel):
    label: str
    score: float = Field(ge=0.0, le=1.0)
    kind: str | None = None
    start: int | None = Field(None, ge=0)
    end: int | None = Field(None, ge=0)
    details: dict[str, Any] = Field(default_factory=dict)


class AnalyzerOutput(BaseModel):
    findings: list[Finding]
    summary: dict[str, Any] = Field(default_factory=dict)


class VisualizationInput(BaseModel):
    data: list[dict[str, Any]]
    title: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class VisualizationOutput(BaseModel):
    format: Literal["vega-lite", "svg"]
    spec: dict[str, Any] | None = None
    svg: str | None = None

    @model_validator(mode="after")
    def _one_body(self) -> VisualizationOutput:
        if self.format == "vega-lite" and self.spec is None:
            raise ValueError("format 'vega-lite' needs spec")
        if self.format == "svg" and not self.svg:
            raise ValueError("format 'svg' needs svg")
        return self


class ExportInput(BaseModel):
    data: list[dict[str, Any]]
    format: str | None = None
    filename: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ExportOutput(BaseModel):
    """``content`` is bytes in Python and base64 on the wire (see :meth:`from_wire`)."""

    content: bytes
    content_type: str = Field(min_length=1)
    filename: str = Field(min_length=1)

    @field_serializer("content", when_used="json")
    def _base64(self, content: bytes) -> str:
        return base64.b64encode(content).decode()

    @classmethod
    def from_wire(cls, output: dict[str, Any]) -> ExportOutput:
        """Parse an answer whose ``content`` is base64, as the runtime sends it."""
        return cls(**{**output, "content": base64.b64decode(output["content"], validate=True)})


class Principal(BaseModel):
    id: str = Field(min_length=1)
    name: str | None = None
    roles: list[str] = Field(default_factory=list)
    claims: dict[str, Any] = Field(default_factory=dict)


class AuthRequest(BaseModel):
    credentials: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    method: str | None = None
    path: str | None = None
    body: str | None = None


class AuthResult(BaseModel):
    authenticated: bool
    principal: Principal | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _principal_iff_authenticated(self) -> AuthResult:
        if self.authenticated and self.principal is None:
            raise ValueError("an authenticated result needs a principal")
        if not self.authenticated and self.principal is not None:
            raise ValueError("a refusal must not carry a principal")
        return self

    @classmethod
    def allow(cls, principal: Principal | str, **fields: Any) -> AuthResult:
        if isinstance(principal, str):
            principal = Principal(id=principal, **fields)
        return cls(authenticated=True, principal=principal)

    @classmethod
    def refuse(cls, reason: str) -> AuthResult:
        return cls(authenticated=False, reason=reason)


class WorkflowInput(BaseModel):
    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class WorkflowResult(BaseModel):
    status: Literal["ok", "accepted", "failed"] = "ok"
    result: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None


# --------------------------------------------------------------------------- validation


def typed_handler(
    fn: Callable[..., Any],
    input_model: type[BaseModel] | None,
    output_model: type[BaseModel] | None,
    label: str = "extension",
) -> Callable[..., Any]:
    """Wrap ``fn(input, ctx)`` so its input and output pass through the given models.

    The wrapper is ``async`` exactly when ``fn`` is, so the runtime runs it the same way.
    """

    def parse(raw: Any) -> Any:
        if input_model is None:
            return raw
        try:
            return input_model.model_validate(raw)
        except ValidationError as exc:
            raise PluginError(
                f"input of {label} is invalid: {exc.error_count()} error(s)",
                code="invalid_input",
                status=400,
                details=_errors(exc),
            ) from None

    def dump(result: Any) -> Any:
        if output_model is None:
            return result
        try:
            # Instances are checked again too: model_construct or mutation skips validation.
            data = result.model_dump() if isinstance(result, BaseModel) else result
            model = output_model.model_validate(data)
        except ValidationError as exc:
            log.error("%s returned invalid output: %s", label, exc)
            raise PluginError(
                f"{label} returned output that does not match {output_model.__name__}",
                code="invalid_output",
                status=500,
                details=_errors(exc),
            ) from None
        return model.model_dump(mode="json")

    def schemas() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return (
            input_model.model_json_schema() if input_model is not None else None,
            output_model.model_json_schema(mode="serialization")
            if output_model is not None
            else None,
        )

    handler: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):

        async def run_async(raw: Any, ctx: Any) -> Any:
            return dump(await fn(parse(raw), ctx))

        handler = run_async
    else:

        def run(raw: Any, ctx: Any) -> Any:
            return dump(fn(parse(raw), ctx))

        handler = run
    # Read by the builder for ``summit-plugin manifest`` (see builder.SCHEMAS_ATTRIBUTE).
    setattr(handler, SCHEMAS_ATTRIBUTE, schemas)
    return handler


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Through JSON so that ctx values (exceptions, Decimals) become plain strings.
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    return errors


# --------------------------------------------------------------------------- base classes


class ExtensionPoint:
    """Base of the typed points: names the point, its models and the method that serves it."""

    point: ClassVar[str]
    method: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]

    def summit_handler(self) -> Callable[..., Any]:
        """The validating ``(input, ctx)`` handler the builder registers."""
        fn = getattr(self, self.method)
        label = f"{self.point} {type(self).__name__}"
        return typed_handler(fn, self.input_model, self.output_model, label)


class DataSource(ExtensionPoint):
    point = "data_source"
    method = "fetch"
    input_model = DataSourceQuery
    output_model = DataSourcePage

    def fetch(self, query: DataSourceQuery, ctx: Any) -> Result[DataSourcePage]:
        raise NotImplementedError


class Analyzer(ExtensionPoint):
    point = "analyzer"
    method = "analyze"
    input_model = AnalyzerInput
    output_model = AnalyzerOutput

    def analyze(self, input: AnalyzerInput, ctx: Any) -> Result[AnalyzerOutput]:
        raise NotImplementedError


class Visualization(ExtensionPoint):
    point = "visualization"
    method = "render"
    input_model = VisualizationInput
    output_model = VisualizationOutput

    def render(self, input: VisualizationInput, ctx: Any) -> Result[VisualizationOutput]:
        raise NotImplementedError


class Export(ExtensionPoint):
    point = "export"
    method = "export"
    input_model = ExportInput
    output_model = ExportOutput

    def export(self, input: ExportInput, ctx: Any) -> Result[ExportOutput]:
        raise NotImplementedError


class AuthProvider(ExtensionPoint):
    point = "auth_provider"
    method = "authenticate"
    input_model = AuthRequest
    output_model = AuthResult

    def authenticate(self, request: AuthRequest, ctx: Any) -> Result[AuthResult]:
        raise NotImplementedError


class Workflow(ExtensionPoint):
    point = "workflow"
    method = "run"
    input_model = WorkflowInput
    output_model = WorkflowResult

    def run(self, input: WorkflowInput, ctx: Any) -> Result[WorkflowResult]:
        raise NotImplementedError
