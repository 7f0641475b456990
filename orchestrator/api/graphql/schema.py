"""``/graphql``: the second door into the services the REST API calls.

Queries read what ``GET /v1/...`` reads; mutations call the service calls their REST routes
call, with the same arguments, so every rule (lifecycle edges, approvals, the catalog's plan,
the broker's guards) is enforced once, in the service, and a refusal carries the same code
through either door. The caller is judged by the REST API's ``AdminAccess`` (``context.py``),
each root field names its least role (``permissions.py``), and an operation is held to the
limits of ``limits.py`` before any field runs.

There is no GraphiQL: Strawberry's loads its scripts from a CDN, which an orchestrator on an
air-gapped site cannot reach and should not make its operators' browsers fetch. Any GraphQL
client works against the endpoint (POST, or ``graphql-transport-ws`` for subscriptions).

Mount it with ``app.include_router(make_graphql_router(settings))``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

import strawberry
from fastapi import Depends
from graphql import GraphQLError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionContext, Info
from strawberry.types.unset import UnsetType

from orchestrator.api.deps import extensions_of
from orchestrator.api.routes.catalog import rate_limited
from orchestrator.api.routes.extensions import ExecuteBody
from orchestrator.api.routes.plugins import UpgradeBody, upgrade_plugin
from orchestrator.catalog.installer import CatalogInstall
from orchestrator.catalog.search import CatalogQuery
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import InvalidInput, NotFound, SummitError, TooLarge
from orchestrator.jobs.worker import ExecutePayload
from orchestrator.services.install import InstallRequest
from orchestrator.services.plugins import PluginView

from .context import (
    GRAPHQL_PATH,
    GraphQLContext,
    batches_of,
    connection_token,
    context_getter,
)
from .errors import ErrorShapes, log_errors
from .limits import Limits
from .permissions import IsAdmin, IsOperator, IsViewer
from .subscriptions import Subscription
from .types import (
    MAX_PAGE,
    ApiToken,
    CatalogItem,
    CatalogPage,
    Event,
    EventPage,
    ExecuteMode,
    ExecuteOutcome,
    ExtensionPoint,
    InstallInput,
    InstallResult,
    Plugin,
    PluginUsage,
    QueuedJob,
    UsageNow,
    Webhook,
    bounded,
    context_of,
    parse_time,
)

__all__ = ["Mutation", "Query", "make_graphql_router", "make_schema"]

# The REST API's caps on catalog search text (``routes/catalog.py``).
MAX_CURSOR = 2000
# How long a WebSocket may take to send connection_init (the protocol's 4408 after that).
CONNECTION_INIT_TIMEOUT = timedelta(seconds=10)


def validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """``data`` as ``model``, refused as the REST API refuses a body (422 ``invalid_request``
    listing every field)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            "the request is not valid",
            code="invalid_request",
            details=[
                {"path": ".".join(map(str, e["loc"])) or "(input)", "message": e["msg"]}
                for e in exc.errors()
            ],
        ) from None


# -- queries --------------------------------------------------------------------------------------


@strawberry.type(
    description="Every root field may be null: a field refused (a role too low, a bad "
    "argument) is null with its error, and the others are still answered."
)
class Query:
    @strawberry.field(
        permission_classes=[IsViewer],
        description="GET /v1/plugins: installed plugins by id, 'limit' at a time after the "
        "id 'after'",
    )
    async def plugins(
        self,
        info: Info,
        state: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Plugin] | None:
        bounded("limit", limit, 1, MAX_PAGE)
        context = context_of(info)
        rows = await run_in_threadpool(batches_of(context.state).list_plugins, state=state)
        chosen = [r for r in rows if after is None or r.id > after][:limit]
        context.loaders.plugin.prime_many({r.id: r for r in chosen})
        return [Plugin.of(r) for r in chosen]

    @strawberry.field(permission_classes=[IsViewer], description="GET /v1/plugins/{id}")
    async def plugin(self, info: Info, id: str) -> Plugin | None:
        summary = await context_of(info).loaders.plugin.load(id)
        if summary is None:
            raise NotFound(f"plugin {id!r} is not installed", code="plugin_not_found")
        return Plugin.of(summary)

    @strawberry.field(
        permission_classes=[IsViewer],
        description="GET /v1/catalog/plugins: search the catalog (counts against the "
        "caller's catalog rate limit, as the REST search does)",
    )
    async def catalog(
        self,
        info: Info,
        q: str | None = None,
        point: str | None = None,
        category: str | None = None,
        permission: str | None = None,
        signed: bool | None = None,
        compatible: bool = False,
        sort: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> CatalogPage | None:
        context = context_of(info)
        if cursor is not None and len(cursor) > MAX_CURSOR:
            raise InvalidInput(f"cursor: at most {MAX_CURSOR} characters", code="invalid_request")
        await rate_limited(_as_request(context.connection))
        query = CatalogQuery(
            q=q,
            point=point,
            category=category,
            permission=permission,
            signed=signed,
            compatible=compatible,
            sort=sort,
            cursor=cursor,
            limit=limit,
        )
        page = await run_in_threadpool(context.state.catalog.search, query)
        return CatalogPage(
            items=[CatalogItem.of(item) for item in page["items"]],
            facets=JSON(page["facets"]),
            total=page["total"],
            next=page["next"],
        )

    @strawberry.field(
        permission_classes=[IsViewer],
        description="GET /v1/extension-points: every point with its ACTIVE providers",
    )
    def extension_points(self, info: Info) -> list[ExtensionPoint] | None:
        providers = extensions_of(context_of(info).state).providers()
        return [ExtensionPoint.of(entry) for entry in providers]

    @strawberry.field(
        permission_classes=[IsViewer],
        description="GET /v1/usage: every installed plugin's state and newest usage",
    )
    async def usage(self, info: Info) -> UsageNow | None:
        now = await run_in_threadpool(context_of(info).state.usage.current)
        at = parse_time(now["at"])
        assert at is not None
        return UsageNow(
            at=at,
            interval_s=float(now["interval_s"]),
            plugins=[PluginUsage.of(entry) for entry in now["plugins"]],
        )

    @strawberry.field(
        permission_classes=[IsViewer],
        description="GET /v1/events: the event log, oldest first; 'next' continues it",
    )
    async def events(
        self,
        info: Info,
        type: str | None = None,
        # Named apart in Python: the permission check takes ``source`` (the parent object).
        event_source: Annotated[str | None, strawberry.argument(name="source")] = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> EventPage | None:
        bounded("limit", limit, 1, MAX_PAGE)
        page = await run_in_threadpool(
            context_of(info).state.events.page,
            type_pattern=type,
            source=event_source,
            subject=subject,
            since=since,
            until=until,
            limit=limit,
            after=after,
        )
        return EventPage(events=[Event.of(e) for e in page["events"]], next=page["next"])

    @strawberry.field(permission_classes=[IsViewer], description="GET /v1/webhooks")
    async def webhooks(self, info: Info) -> list[Webhook] | None:
        views = await run_in_threadpool(context_of(info).state.webhooks.list)
        return [Webhook.of(v) for v in views]

    @strawberry.field(permission_classes=[IsViewer], description="GET /v1/webhooks/{id}")
    async def webhook(self, info: Info, id: str) -> Webhook | None:
        view = await run_in_threadpool(context_of(info).state.webhooks.get, id)
        return Webhook.of(view)

    @strawberry.field(permission_classes=[IsAdmin], description="GET /v1/tokens (admin)")
    async def api_tokens(self, info: Info) -> list[ApiToken] | None:
        views = await run_in_threadpool(context_of(info).state.api_tokens.list)
        return [
            ApiToken(
                id=v.id,
                name=v.name,
                role=v.role,
                created_at=v.created_at,
                revoked_at=v.revoked_at,
            )
            for v in views
        ]


def _as_request(connection: HTTPConnection) -> Request:
    # The catalog's rate limit reads the headers, the client and ``app.state``: all of them
    # are an HTTPConnection's, a WebSocket's as well as a Request's.
    return connection  # type: ignore[return-value]


# -- mutations ------------------------------------------------------------------------------------


async def _changed(info: Info, plugin_id: str, change: Any, **kwargs: Any) -> Plugin:
    """Run a lifecycle change as its REST route does (in the thread pool, as the caller's
    actor), then answer the plugin as it is now."""
    context = context_of(info)
    who = await context.caller()
    await run_in_threadpool(change, plugin_id, actor=who.actor, **kwargs)
    summary = await run_in_threadpool(batches_of(context.state).get, plugin_id)
    return Plugin.of(summary)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        permission_classes=[IsOperator],
        description="POST /v1/plugins: install an image, or a plugin from the catalog",
    )
    async def install_plugin(self, info: Info, input: InstallInput) -> InstallResult:
        context = context_of(info)
        if (input.image is None) == (input.catalog is None):
            raise InvalidInput(
                "give either image or catalog",
                code="invalid_request",
                details=[{"path": "input", "message": "exactly one of image and catalog"}],
            )
        who = await context.caller()
        principal = who.role.label
        common: dict[str, Any] = {
            "approved_permissions": list(input.approved_permissions),
            "config": input.config if input.config is not None else {},
            "allow_findings": input.allow_findings,
            "override_reason": input.override_reason,
        }
        if input.catalog is not None:
            if input.signature is not None:
                raise InvalidInput(
                    "a catalog install takes the signature the catalog holds",
                    code="invalid_request",
                    details=[{"path": "input.signature", "message": "not with catalog"}],
                )
            wanted: CatalogInstall = validated(
                CatalogInstall,
                {
                    "catalog": {"id": input.catalog.id, "version": input.catalog.version},
                    **common,
                },
            )
            result = await run_in_threadpool(
                context.state.catalog_installer.install,
                wanted,
                principal=principal,
                actor=who.actor,
            )
            return InstallResult(
                plugins=[
                    Plugin.of(PluginView.model_validate(view)) for view in result["installed"]
                ],
                plan=JSON(result["plan"]),
            )
        request: InstallRequest = validated(
            InstallRequest, {"image": input.image, "signature": input.signature, **common}
        )
        # Who asks is the authenticated caller, never a field of the request.
        request = request.model_copy(
            update={"principal": principal, "actor": who.actor, "bundle_path": None}
        )
        view = await run_in_threadpool(context.state.installs.install, request)
        return InstallResult(plugins=[Plugin.of(view)], plan=None)

    @strawberry.mutation(permission_classes=[IsOperator], description="POST .../enable")
    async def enable_plugin(self, info: Info, id: str) -> Plugin:
        return await _changed(info, id, context_of(info).state.lifecycle.enable)

    @strawberry.mutation(
        permission_classes=[IsOperator],
        description="POST .../disable (cascade: also the ACTIVE plugins that depend on it)",
    )
    async def disable_plugin(self, info: Info, id: str, cascade: bool = False) -> Plugin:
        lifecycle = context_of(info).state.lifecycle
        return await _changed(info, id, lifecycle.disable, cascade=cascade)

    @strawberry.mutation(permission_classes=[IsOperator], description="POST .../reload")
    async def reload_plugin(self, info: Info, id: str) -> Plugin:
        return await _changed(info, id, context_of(info).state.lifecycle.reload)

    @strawberry.mutation(permission_classes=[IsOperator], description="POST .../rollback")
    async def rollback_plugin(self, info: Info, id: str) -> Plugin:
        return await _changed(info, id, context_of(info).state.lifecycle.rollback)

    @strawberry.mutation(
        permission_classes=[IsOperator],
        description="POST .../upgrade: from the catalog (a version or a range; default the "
        "newest compatible), else to an installed version (default: the pending one)",
    )
    async def upgrade_plugin(
        self,
        info: Info,
        id: str,
        version: str | None = None,
        approved_permissions: list[str] | None = None,
    ) -> Plugin:
        context = context_of(info)
        who = await context.caller()
        body: UpgradeBody = validated(
            UpgradeBody, {"version": version, "approved_permissions": approved_permissions}
        )
        state = context.state
        # The REST handler itself: where the upgrade comes from (the catalog, or a version
        # installed here) is decided there, and decided once.
        view = await run_in_threadpool(
            upgrade_plugin,
            id,
            state.lifecycle,
            state.catalog_installer,
            state.queries,
            who.role.label,
            who.actor,
            body,
        )
        return Plugin.of(view)

    @strawberry.mutation(
        permission_classes=[IsOperator],
        description="POST /v1/extension-points/{point}/execute: call the point's providers "
        "(all at once, a pipeline, or the first that succeeds), or queue the call",
    )
    async def execute(
        self,
        info: Info,
        point: str,
        input: JSON | None = None,
        mode: ExecuteMode = ExecuteMode.ALL,
        plugins: list[str] | None = None,
        timeout_ms: int | None = None,
        run_async: bool = False,
    ) -> ExecuteOutcome:
        body: ExecuteBody = validated(
            ExecuteBody,
            {
                "input": input,
                "mode": mode.value,
                "plugins": plugins,
                "timeout_ms": timeout_ms,
                "async": run_async,
            },
        )
        jsonlimits.check(body.input, what="the input")  # the REST route's depth limit
        extensions = extensions_of(context_of(info).state)
        if body.run_async:
            payload = ExecutePayload(point=point, **body.model_dump(exclude={"run_async"}))
            queued = await extensions.submit(payload)
            return ExecuteOutcome(
                result=None,
                job=QueuedJob(
                    job_id=queued["job_id"], status=queued["status"], links=JSON(queued["links"])
                ),
            )
        result = await extensions.execute(
            point, body.input, mode=body.mode, plugins=body.plugins, timeout_ms=body.timeout_ms
        )
        return ExecuteOutcome(result=JSON(result), job=None)


# -- the schema and its router ------------------------------------------------------------------


class FreshLoaders(SchemaExtension):
    """New DataLoaders for every operation, also for each one on a long-lived WebSocket."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, GraphQLContext):
            context.fresh_loaders()
        yield


class SummitSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def make_schema(limits: Limits, *, debug: bool = False) -> strawberry.Schema:
    return SummitSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            *limits.extensions(),
            FreshLoaders,
            functools.partial(ErrorShapes, debug=debug),
        ],
        # Without introspection, "did you mean ...?" would still spell the schema out.
        config=StrawberryConfig(disable_field_suggestions=not limits.introspection),
    )


class LengthRequired(SummitError):
    status_code = 411
    code = "length_required"


async def request_size_cap(connection: HTTPConnection) -> None:
    """A POST declares its length, and it is at most ``SUMMIT_MAX_REQUEST_BYTES`` (the cap
    of an execute body on the REST side): checked before a byte of it is read."""
    if connection.scope["type"] != "http" or connection.scope.get("method") != "POST":
        return
    cap: int = connection.app.state.settings.max_request_bytes
    declared = connection.headers.get("content-length")
    if declared is None:
        raise LengthRequired("a GraphQL request must declare its Content-Length")
    if not declared.isdigit() or int(declared) > cap:
        raise TooLarge(
            f"the request body is {declared} bytes; the limit is {cap}",
            code="request_too_large",
            details={"limit_bytes": cap},
        )


class SummitGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        """Judge the socket's credential when its ``connection_init`` arrives; a socket
        without a valid one is closed with 4403, as graphql-transport-ws says."""
        token = connection_token(context.connection_params, context.connection)
        role = await context.authenticate(token, None)
        if role is None:
            raise ConnectionRejectionError({"message": "a valid bearer token is required"})
        return {"role": role.label}


def make_graphql_router(settings: Any) -> GraphQLRouter[GraphQLContext, None]:
    """The ``/graphql`` router over the app's services (found on ``app.state`` per request)."""
    limits = Limits.from_settings(settings)
    return SummitGraphQLRouter(
        make_schema(limits, debug=bool(getattr(settings, "dev", False))),
        path=GRAPHQL_PATH,
        graphql_ide=None,
        allow_queries_via_get=False,
        context_getter=context_getter,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
        dependencies=[Depends(request_size_cap)],
        include_in_schema=False,
    )
