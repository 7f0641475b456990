"""The UI's one router, mounted by the app factory under ``/ui``: the pages of each area and
the static files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from orchestrator.web.assets import serve_static
from orchestrator.web.guard import UiDep, UiRoute, secure
from orchestrator.web.pages import (
    analytics,
    marketplace,
    operations,
    plugin_settings,
    plugins,
    session,
    trust,
    webhook_forms,
)

__all__ = ["router"]

router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)


@router.get("/static/{path:path}", name="ui_static")
async def static(path: str, request: Request) -> Response:
    return secure(await serve_static(path, request))


@router.get("", name="ui_home")
@router.get("/")
async def home(ui: UiDep) -> Response:
    return ui.back("/ui/plugins")


# Fixed paths before the patterns that would take them: plugin_settings before plugins (its
# POST /plugins/{id}/{action}), webhook_forms before operations (/webhooks/{id}).
for area in (
    session,
    plugin_settings,
    trust,
    plugins,
    marketplace,
    webhook_forms,
    operations,
    analytics,
):
    router.include_router(area.router, include_in_schema=False)
