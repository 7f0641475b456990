"""Dependencies that handlers declare with ``Annotated`` aliases.

Handlers never read ``request.app.state`` themselves: every service they use comes from an
alias here. The services the app factory does not build (extensions, access, system) are
built here from the ones it does, once per app, and kept on its state; the fast path
(``api/fastpath.py``) takes them from the same functions.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import State

from orchestrator.broker import Broker
from orchestrator.catalog.installer import CatalogInstaller
from orchestrator.config import Settings
from orchestrator.events.bus import EventBus
from orchestrator.jobs.queue import JobQueue
from orchestrator.monitor.service import UsageService
from orchestrator.security.access import ApiTokens, Caller, Role
from orchestrator.security.egress import EgressProxy
from orchestrator.security.trust import TrustStore
from orchestrator.services.extensions import AdminAccess, ExtensionService
from orchestrator.services.host import HostService
from orchestrator.services.idle import IdlePause
from orchestrator.services.install import InstallService
from orchestrator.services.lifecycle import LifecycleService
from orchestrator.services.plugin_batches import PluginBatches
from orchestrator.services.plugins import PluginQueries
from orchestrator.services.system import SystemService
from orchestrator.services.webhooks import WebhookService

_bearer = HTTPBearer(auto_error=False)

# The job queue's default, for a state whose settings do not say (a test's stand-in).
_JOB_MAX_ATTEMPTS = 3


def extensions_of(state: State) -> ExtensionService:
    """The app's :class:`ExtensionService` (built on first use from its broker, plugin
    queries and job queue)."""
    service: ExtensionService | None = getattr(state, "extensions", None)
    if service is None:
        settings = state.settings
        service = state.extensions = ExtensionService(
            broker=state.broker,
            plugins=getattr(state, "queries", None),
            jobs=getattr(state, "jobs", None),
            job_max_attempts=getattr(settings, "job_max_attempts", _JOB_MAX_ATTEMPTS),
        )
    return service


def batches_of(state: State) -> PluginBatches:
    """The app's :class:`PluginBatches` (built on first use): reads of many plugins at once,
    for GraphQL's loaders and the UI's lists."""
    batches: PluginBatches | None = getattr(state, "plugin_batches", None)
    if batches is None:
        batches = state.plugin_batches = PluginBatches(engine=state.engine)
    return batches


def access_of(state: State) -> AdminAccess:
    """The app's :class:`AdminAccess`: the one rule for who may call the admin API."""
    access: AdminAccess | None = getattr(state, "access", None)
    if access is None:
        settings = state.settings
        access = state.access = AdminAccess(
            admin_token=settings.admin_token,
            tokens=getattr(state, "api_tokens", None),
            auth_provider=getattr(settings, "auth_provider", None),
            extensions=extensions_of(state),
        )
    return access


def system_of(state: State) -> SystemService:
    """The app's :class:`SystemService` (readiness and metrics)."""
    service: SystemService | None = getattr(state, "system", None)
    if service is None:
        service = state.system = SystemService(
            engine=state.engine,
            runtime=state.runtime,
            reconciled=state.reconciled,
            registry=state.broker.metrics.registry,
            is_leader=lambda: getattr(getattr(state, "leadership", None), "leader", True),
        )
    return service


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


# These dependencies are ``async def`` although they do no I/O: a plain ``def`` dependency runs
# in the thread pool, a hop that costs more than the work on the broker's hot path.


async def get_settings(request: Request) -> Settings:
    settings: Settings = _state(request, "settings")
    return settings


async def get_lifecycle(request: Request) -> LifecycleService:
    service: LifecycleService = _state(request, "lifecycle")
    return service


async def get_installs(request: Request) -> InstallService:
    service: InstallService = _state(request, "installs")
    return service


async def get_catalog_installer(request: Request) -> CatalogInstaller:
    installer: CatalogInstaller = _state(request, "catalog_installer")
    return installer


async def get_idle(request: Request) -> IdlePause:
    service: IdlePause = _state(request, "idle")
    return service


async def get_usage(request: Request) -> UsageService:
    service: UsageService = _state(request, "usage")
    return service


async def get_queries(request: Request) -> PluginQueries:
    queries: PluginQueries = _state(request, "queries")
    return queries


async def get_host(request: Request) -> HostService:
    service: HostService = _state(request, "host")
    return service


async def get_broker(request: Request) -> Broker:
    broker: Broker = _state(request, "broker")
    return broker


async def get_events(request: Request) -> EventBus:
    bus: EventBus = _state(request, "events")
    return bus


async def get_webhooks(request: Request) -> WebhookService:
    service: WebhookService = _state(request, "webhooks")
    return service


async def get_api_tokens(request: Request) -> ApiTokens:
    tokens: ApiTokens = _state(request, "api_tokens")
    return tokens


async def get_trust(request: Request) -> TrustStore:
    trust: TrustStore = _state(request, "trust")
    return trust


async def get_jobs(request: Request) -> JobQueue:
    queue: JobQueue = _state(request, "jobs")
    return queue


async def get_egress(request: Request) -> EgressProxy:
    egress: EgressProxy = _state(request, "egress")
    return egress


async def get_extensions(request: Request) -> ExtensionService:
    return extensions_of(request.app.state)


async def get_system(request: Request) -> SystemService:
    return system_of(request.app.state)


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's role, if its credential is valid and the role may make this request."""
    token = credentials.credentials if credentials is not None else None
    role = await access_of(request.app.state).authorize(
        token,
        api_key=request.headers.get("x-api-key") or token,
        method=request.method,
        path=request.url.path,
    )
    return role.label


async def caller(
    request: Request,
    role: Annotated[str, Depends(authorize)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who makes this (authorized) request: the bootstrap admin token, an API token (its id
    and name, one database read), or whoever the auth provider vouched for."""
    token = credentials.credentials if credentials is not None else None
    if token is not None and access_of(request.app.state).is_admin_token(token):
        return Caller(Role.ADMIN, None, "admin token")
    tokens: ApiTokens | None = getattr(request.app.state, "api_tokens", None)
    if token is not None and tokens is not None:
        view = await run_in_threadpool(tokens.identity, token)
        if view is not None:
            return Caller(Role.parse(view.role), view.id, f"{view.name} ({view.id})")
    return Caller(Role.parse(role), None, "auth provider")


async def actor(who: Annotated[Caller, Depends(caller)]) -> str:
    """How the history and the audit log name who made this request."""
    return who.actor


SettingsDep = Annotated[Settings, Depends(get_settings)]
LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]
InstallsDep = Annotated[InstallService, Depends(get_installs)]
QueriesDep = Annotated[PluginQueries, Depends(get_queries)]
UsageDep = Annotated[UsageService, Depends(get_usage)]
IdleDep = Annotated[IdlePause, Depends(get_idle)]
CatalogInstallerDep = Annotated[CatalogInstaller, Depends(get_catalog_installer)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
HostDep = Annotated[HostService, Depends(get_host)]
EventsDep = Annotated[EventBus, Depends(get_events)]
WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
ApiTokensDep = Annotated[ApiTokens, Depends(get_api_tokens)]
TrustDep = Annotated[TrustStore, Depends(get_trust)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
EgressDep = Annotated[EgressProxy, Depends(get_egress)]
ExtensionsDep = Annotated[ExtensionService, Depends(get_extensions)]
SystemDep = Annotated[SystemService, Depends(get_system)]
PrincipalDep = Annotated[str, Depends(authorize)]
ActorDep = Annotated[str, Depends(actor)]
CallerDep = Annotated[Caller, Depends(caller)]

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
