"""Dependencies that handlers declare with ``Annotated`` aliases."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, ClassVar

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from orchestrator.broker.pool import Broker
from orchestrator.config import Settings
from orchestrator.domain.errors import Forbidden, SummitError
from orchestrator.security.access import ApiTokens, Role, required_role
from orchestrator.services.host import HostService
from orchestrator.services.lifecycle import LifecycleService
from orchestrator.services.plugins import PluginQueries


class Unauthorized(SummitError):
    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_lifecycle(request: Request) -> LifecycleService:
    service: LifecycleService = request.app.state.lifecycle
    return service


async def get_queries(request: Request) -> PluginQueries:
    queries: PluginQueries = request.app.state.queries
    return queries


async def get_host(request: Request) -> HostService:
    service: HostService = request.app.state.host
    return service


async def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


# These dependencies are ``async def`` although they do no I/O: a plain ``def`` dependency runs
# in the thread pool, a hop that costs more than the work on the broker's hot path.
async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's role, if its credential is valid and the role may make this request."""
    settings: Settings = request.app.state.settings
    token = credentials.credentials if credentials is not None else None
    role: Role | None = None
    if token is not None and credentials is not None and credentials.scheme.lower() == "bearer":
        if hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            role = Role.ADMIN  # the bootstrap token: no database round trip on the hot path
        else:
            tokens: ApiTokens = request.app.state.api_tokens
            role = await run_in_threadpool(tokens.role_of, token)
    if role is None and settings.auth_provider:
        role = await _ask_auth_provider(request, settings.auth_provider, token)
    if role is None:
        raise Unauthorized("a valid bearer token is required")
    needed = required_role(request.method, request.url.path)
    if role < needed:
        raise Forbidden(
            f"the {role.label} role may not {request.method} {request.url.path}; "
            f"it needs {needed.label}",
            code="forbidden",
            details={"role": role.label, "required": needed.label},
        )
    return role.label


async def _ask_auth_provider(request: Request, provider: str, bearer: str | None) -> Role | None:
    """Let an ``auth_provider`` plugin judge credentials Summit does not know (an API key)."""
    api_key = request.headers.get("x-api-key") or bearer
    if not api_key:
        return None
    plugin_id, _, name = provider.partition("/")
    broker: Broker = request.app.state.broker
    route = broker.route(plugin_id)
    ext = next(
        (
            e
            for e in (route.extensions if route else ())
            if e.point.value == "auth_provider" and (not name or e.name == name)
        ),
        None,
    )
    if route is None or ext is None:
        log.warning("auth provider %s is not ACTIVE; only Summit tokens are accepted", provider)
        return None
    payload = {
        "credentials": {"api_key": api_key},
        "headers": {},
        "method": request.method,
        "path": request.url.path,
    }
    try:
        result = await broker.call(route, ext, payload, timeout_ms=5000)
    except SummitError as exc:
        log.warning("auth provider %s failed: %s", provider, exc.message)
        return None
    if not isinstance(result, dict) or result.get("authenticated") is not True:
        return None
    roles = ((result.get("principal") or {}).get("roles")) or []
    granted = [
        Role[r.upper()] for r in roles if isinstance(r, str) and r.upper() in Role.__members__
    ]
    return max(granted) if granted else None


SettingsDep = Annotated[Settings, Depends(get_settings)]
LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]
QueriesDep = Annotated[PluginQueries, Depends(get_queries)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
HostDep = Annotated[HostService, Depends(get_host)]
PrincipalDep = Annotated[str, Depends(authorize)]

# Row ids and paging cursors live in INTEGER columns: 32 bits on PostgreSQL, 64 on SQLite. A
# larger number names no row, yet the database refuses to compare with it (PostgreSQL: "integer
# out of range"; SQLite past 64 bits: OverflowError), which was a 500. Such a request is refused
# up front with a 422 that the OpenAPI document also shows.
ROW_ID_MAX = 2**31 - 1
RowIdPath = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]
RowCursor = Annotated[
    int | None,
    Query(ge=1, le=ROW_ID_MAX, description="The 'next' cursor of the previous page"),
]
