"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from orchestrator import __version__
from orchestrator.services.system import METRICS_CONTENT_TYPE

from ..deps import SystemDep

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=Response)
def metrics(system: SystemDep) -> Response:
    """Prometheus metrics (calls, errors, latency, breakers, refusals, queue depth)."""
    return Response(system.metrics(), media_type=METRICS_CONTENT_TYPE)


@router.get("/readyz")
def readyz(system: SystemDep) -> JSONResponse:
    checks = system.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "role": system.role()},
        status_code=200 if ready else 503,
    )
