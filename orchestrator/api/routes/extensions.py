"""``/v1/extension-points``: list providers and execute calls through the broker."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from orchestrator.domain.manifest import ExtensionPoint

from ..deps import BrokerDep, PrincipalDep

router = APIRouter(prefix="/v1/extension-points", tags=["extension points"])


class ExecuteBody(BaseModel):
    input: Any = None
    mode: Literal["all", "pipeline", "first"] = "all"
    plugins: list[str] | None = None
    timeout_ms: int | None = Field(None, ge=1, le=600_000)


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
                "input_schema": ext.input_schema,
                "output_schema": ext.output_schema,
            }
            for route, ext in broker.providers(point.value)
        ]
        out.append({"point": point.value, "providers": providers})
    return out


@router.post("/{point}/execute")
async def execute(
    point: str, body: ExecuteBody, broker: BrokerDep, _: PrincipalDep
) -> dict[str, Any]:
    return await broker.execute(
        point, body.input, mode=body.mode, plugins=body.plugins, timeout_ms=body.timeout_ms
    )
