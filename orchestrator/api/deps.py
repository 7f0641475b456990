"""Dependencies that handlers declare with ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated, ClassVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.broker.pool import Broker
from orchestrator.config import Settings
from orchestrator.domain.errors import SummitError
from orchestrator.services.host import HostService
from orchestrator.services.lifecycle import LifecycleService
from orchestrator.services.plugins import PluginQueries


class Unauthorized(SummitError):
    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


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
async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    settings: Settings = request.app.state.settings
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
        raise Unauthorized("the bearer token is not valid")
    return "admin"


SettingsDep = Annotated[Settings, Depends(get_settings)]
LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]
QueriesDep = Annotated[PluginQueries, Depends(get_queries)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
HostDep = Annotated[HostService, Depends(get_host)]
PrincipalDep = Annotated[str, Depends(require_admin)]
