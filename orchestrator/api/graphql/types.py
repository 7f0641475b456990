"""The GraphQL types: the REST API's views under GraphQL names (camelCase fields).

Each type is built from what a service already answers (``PluginSummary`` and the parts of
``PluginView``, ``HistoryPage``, the catalog's search page, ``ExtensionService.providers``,
``UsageService.current``, ``EventBus.page``, ``WebhookService``'s views), never from rows: the
fields mean what the REST fields of the same name mean. The parts of a plugin that live in other
rows (versions, grants, container, update notice, usage) are resolved through the operation's
DataLoaders (``loaders.py``), so a list of plugins reads each kind of part once.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from orchestrator.domain.errors import InvalidInput
from orchestrator.services.lifecycle import HistoryPage as HistoryPageView
from orchestrator.services.plugin_batches import InstalledVersion as InstalledVersionView
from orchestrator.services.plugin_batches import PluginSummary
from orchestrator.services.plugins import ContainerView, PluginView
from orchestrator.services.plugins import UpdateNotice as UpdateNoticeView

from .context import GraphQLContext

# The REST API's bounds on paging (``limit``) and on row cursors (``RowCursor`` in deps.py).
MAX_PAGE = 1000
ROW_ID_MAX = 2**31 - 1


def context_of(info: Info) -> GraphQLContext:
    context: GraphQLContext = info.context
    return context


def bounded(name: str, value: int | None, low: int, high: int) -> int | None:
    """``value`` if it is None or within ``low..high``; else the REST API's 422."""
    if value is not None and not low <= value <= high:
        message = f"must be between {low} and {high}"
        raise InvalidInput(
            f"{name}: {message}",
            code="invalid_request",
            details=[{"path": name, "message": message}],
        )
    return value


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- plugins ------------------------------------------------------------------------------------


@strawberry.type(description="A plugin's running (or frozen) container.")
class Container:
    id: str
    image: str
    name: str
    paused_at: datetime | None = strawberry.field(
        description="Frozen by the idle pause since then (null: running)"
    )

    @classmethod
    def of(cls, view: ContainerView) -> Container:
        return cls(id=view.id, image=view.image, name=view.name, paused_at=view.paused_at)


@strawberry.type(description="A newer version in the catalog that this orchestrator can run.")
class UpdateNotice:
    version: str
    image: str
    published_at: datetime

    @classmethod
    def of(cls, view: UpdateNoticeView) -> UpdateNotice:
        return cls(version=view.version, image=view.image, published_at=view.published_at)


@strawberry.type(description="A version of the plugin stored on this orchestrator.")
class InstalledVersion:
    version: str
    image: str
    source: str = strawberry.field(description="'bundle' (built here) or 'image' (pulled)")
    installed_at: datetime
    manifest: JSON
    current: bool = strawberry.field(description="Whether it is the version in use")

    @classmethod
    def of(cls, view: InstalledVersionView, *, current: str) -> InstalledVersion:
        return cls(
            version=view.version,
            image=view.image,
            source=view.source,
            installed_at=view.installed_at,
            manifest=JSON(view.manifest),
            current=view.version == current,
        )


@strawberry.type(
    description="ResourceUsage: MiB, milliseconds and bytes, as GET /v1/usage answers. "
    "Counters are floats: they outgrow GraphQL's 32-bit Int."
)
class ResourceUsage:
    memory_used_mb: float | None
    cpu_time_ms: float | None
    network_bytes_transferred: float | None
    storage_used_mb: float | None
    pids: int | None
    calls: float | None
    errors: float | None = strawberry.field(
        default=None, description="Calls that did not end ok (counted from migration 0012 on)"
    )

    @classmethod
    def of(cls, usage: dict[str, Any]) -> ResourceUsage:
        def number(key: str) -> float | None:
            value = usage.get(key)
            return float(value) if value is not None else None

        pids = usage.get("pids")
        return cls(
            memory_used_mb=number("memory_used_mb"),
            cpu_time_ms=number("cpu_time_ms"),
            network_bytes_transferred=number("network_bytes_transferred"),
            storage_used_mb=number("storage_used_mb"),
            pids=int(pids) if pids is not None else None,
            calls=number("calls"),
            errors=number("errors"),
        )


@strawberry.type(description="A plugin's newest usage sample (GET /v1/usage, one entry).")
class PluginUsage:
    plugin_id: str
    state: str = strawberry.field(description="PAUSED for an ACTIVE plugin frozen when idle")
    at: datetime | None = strawberry.field(description="When the newest sample was taken")
    usage: ResourceUsage | None = strawberry.field(
        description="Null without a sample in the last three sampling periods"
    )

    @classmethod
    def of(cls, entry: dict[str, Any]) -> PluginUsage:
        usage = entry.get("usage")
        return cls(
            plugin_id=entry["plugin"],
            state=entry["state"],
            at=parse_time(entry.get("at")),
            usage=ResourceUsage.of(usage) if usage is not None else None,
        )


@strawberry.type
class UsageNow:
    at: datetime
    interval_s: float
    plugins: list[PluginUsage]


@strawberry.type(description="An install, upgrade, rollback, enable, disable, ... of a plugin.")
class HistoryEntry:
    id: int
    action: str
    version: str
    from_version: str | None
    actor: str
    reason: str | None
    at: datetime


@strawberry.type
class HistoryPage:
    items: list[HistoryEntry]
    next: int | None = strawberry.field(description="The 'before' of the next (older) page")

    @classmethod
    def of(cls, page: HistoryPageView) -> HistoryPage:
        return cls(
            items=[
                HistoryEntry(
                    id=e.id,
                    action=e.action,
                    version=e.version,
                    from_version=e.from_version,
                    actor=e.actor,
                    reason=e.reason,
                    at=e.at,
                )
                for e in page.items
            ],
            next=page.next,
        )


@strawberry.type(description="An installed plugin: GET /v1/plugins/{id}, and more on demand.")
class Plugin:
    id: str
    version: str
    pending_version: str | None = strawberry.field(
        description="An installed version waiting to take over (the default of an upgrade)"
    )
    state: str
    state_reason: str | None
    resources: JSON
    config: JSON
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: PluginSummary | PluginView) -> Plugin:
        return cls(
            id=view.id,
            version=view.version,
            pending_version=view.pending_version,
            state=view.state,
            state_reason=view.state_reason,
            resources=JSON(dict(view.resources)),
            config=JSON(dict(view.config)),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )

    @strawberry.field(description="The current version's manifest")
    async def manifest(self, info: Info) -> JSON:
        versions = await context_of(info).loaders.versions.load(self.id)
        current = next((v for v in versions if v.version == self.version), None)
        return JSON(current.manifest if current is not None else {})

    @strawberry.field
    async def granted_permissions(self, info: Info) -> list[str]:
        return await context_of(info).loaders.grants.load(self.id)

    @strawberry.field
    async def container(self, info: Info) -> Container | None:
        view = await context_of(info).loaders.container.load(self.id)
        return Container.of(view) if view is not None else None

    @strawberry.field
    async def update_available(self, info: Info) -> UpdateNotice | None:
        view = await context_of(info).loaders.update.load((self.id, self.version))
        return UpdateNotice.of(view) if view is not None else None

    @strawberry.field(description="Every version stored here, oldest installed first")
    async def versions(self, info: Info) -> list[InstalledVersion]:
        views = await context_of(info).loaders.versions.load(self.id)
        return [InstalledVersion.of(v, current=self.version) for v in views]

    @strawberry.field(description="The newest usage sample (GET /v1/plugins/{id}/usage: current)")
    async def usage(self, info: Info) -> PluginUsage | None:
        entry = await context_of(info).loaders.usage.load(self.id)
        return PluginUsage.of(entry) if entry is not None else None

    @strawberry.field(
        description="GET /v1/plugins/{id}/history: newest first; read per plugin, so it "
        "costs its 'limit' in the operation's complexity"
    )
    async def history(self, info: Info, limit: int = 100, before: int | None = None) -> HistoryPage:
        bounded("limit", limit, 1, MAX_PAGE)
        bounded("before", before, 1, ROW_ID_MAX)
        lifecycle = context_of(info).state.lifecycle
        page = await run_in_threadpool(lifecycle.history, self.id, limit=limit, before=before)
        return HistoryPage.of(page)


@strawberry.type(description="What an install did: the plugins installed, and a catalog plan")
class InstallResult:
    plugins: list[Plugin] = strawberry.field(
        description="The plugin installed, with (from the catalog) the dependencies it needed"
    )
    plan: JSON | None = strawberry.field(description="The catalog install's plan (null: image)")


# -- catalog ------------------------------------------------------------------------------------


@strawberry.type(description="A plugin in the catalog (GET /v1/catalog/plugins, one item).")
class CatalogItem:
    id: str
    name: str
    publisher: str
    description: str
    latest_version: str
    compatible_version: str | None
    published_at: datetime
    categories: list[str]
    keywords: list[str]
    points: list[str]
    permissions: list[str]
    signed: bool
    deprecated: bool
    successor: str | None
    installs: int
    active_installs: int
    score: float | None

    @classmethod
    def of(cls, item: dict[str, Any]) -> CatalogItem:
        published = parse_time(item["published_at"])
        assert published is not None
        return cls(
            id=item["id"],
            name=item["name"],
            publisher=item["publisher"],
            description=item["description"],
            latest_version=item["latest_version"],
            compatible_version=item.get("compatible_version"),
            published_at=published,
            categories=list(item["categories"]),
            keywords=list(item["keywords"]),
            points=list(item["points"]),
            permissions=list(item["permissions"]),
            signed=bool(item["signed"]),
            deprecated=bool(item["deprecated"]),
            successor=item.get("successor"),
            installs=int(item["installs"]),
            active_installs=int(item["active_installs"]),
            score=item.get("score"),
        )


@strawberry.type
class CatalogPage:
    items: list[CatalogItem]
    facets: JSON = strawberry.field(description="{point: {value: count}, category: {...}}")
    total: int
    next: str | None = strawberry.field(description="The 'cursor' of the next page")


# -- extension points -----------------------------------------------------------------------------


@strawberry.type(description="An ACTIVE plugin's extension of a point, in the broker's order.")
class Provider:
    plugin_id: str
    version: str
    name: str
    priority: int
    idempotent: bool
    input_schema: JSON | None
    output_schema: JSON | None
    breaker: JSON = strawberry.field(description="{state, failures, retry_in_s}")

    @strawberry.field
    async def plugin(self, info: Info) -> Plugin | None:
        summary = await context_of(info).loaders.plugin.load(self.plugin_id)
        return Plugin.of(summary) if summary is not None else None


@strawberry.type
class ExtensionPoint:
    point: str
    providers: list[Provider]

    @classmethod
    def of(cls, entry: dict[str, Any]) -> ExtensionPoint:
        return cls(
            point=entry["point"],
            providers=[
                Provider(
                    plugin_id=p["plugin"],
                    version=p["version"],
                    name=p["name"],
                    priority=p["priority"],
                    idempotent=p["idempotent"],
                    input_schema=JSON(p["input_schema"]),
                    output_schema=JSON(p["output_schema"]),
                    breaker=JSON(p["breaker"]),
                )
                for p in entry["providers"]
            ],
        )


@strawberry.enum
class ExecuteMode(enum.Enum):
    ALL = "all"
    PIPELINE = "pipeline"
    FIRST = "first"


@strawberry.type(description="A queued call (202 of POST .../execute with async: true).")
class QueuedJob:
    job_id: str
    status: str
    links: JSON


@strawberry.type
class ExecuteOutcome:
    result: JSON | None = strawberry.field(description="The broker's answer (a synchronous call)")
    job: QueuedJob | None = strawberry.field(description="The queued job (runAsync: true)")


# -- events and webhooks --------------------------------------------------------------------------


@strawberry.type(description="An event of the event log.")
class Event:
    id: str
    type: str
    source: str
    subject: str | None
    time: datetime
    payload: JSON | None

    @classmethod
    def of(cls, event: dict[str, Any]) -> Event:
        time = parse_time(event["time"])
        assert time is not None
        return cls(
            id=event["id"],
            type=event["type"],
            source=event["source"],
            subject=event.get("subject"),
            time=time,
            payload=JSON(event.get("payload")),
        )


@strawberry.type
class EventPage:
    events: list[Event]
    next: str | None = strawberry.field(description="The 'after' of the next page")


@strawberry.type(description="One delivery of an event to a webhook.")
class Delivery:
    id: int
    event_id: str
    event_type: str | None
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    latency_ms: float | None
    next_at: datetime | None
    replay_of: int | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, view: dict[str, Any]) -> Delivery:
        created = parse_time(view["created_at"])
        assert created is not None
        return cls(
            id=view["id"],
            event_id=view["event_id"],
            event_type=view.get("event_type"),
            status=view["status"],
            attempts=view["attempts"],
            last_status=view.get("last_status"),
            last_error=view.get("last_error"),
            latency_ms=view.get("latency_ms"),
            next_at=parse_time(view.get("next_at")),
            replay_of=view.get("replay_of"),
            created_at=created,
            finished_at=parse_time(view.get("finished_at")),
        )


@strawberry.type
class DeliveryPage:
    deliveries: list[Delivery]
    next: int | None = strawberry.field(description="The 'before' of the next (older) page")


@strawberry.type(description="A webhook subscription (its secret is shown once, at creation).")
class Webhook:
    id: str
    url: str
    description: str | None
    types: list[str]
    where: JSON | None
    transform: JSON | None
    status: str
    status_reason: str | None
    policy: JSON
    consecutive_dead: int
    delivery_counts: JSON = strawberry.field(description="Deliveries by status")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: dict[str, Any]) -> Webhook:
        created, updated = parse_time(view["created_at"]), parse_time(view["updated_at"])
        assert created is not None and updated is not None
        return cls(
            id=view["id"],
            url=view["url"],
            description=view.get("description"),
            types=list(view["types"]),
            where=JSON(view.get("where")),
            transform=JSON(view.get("transform")),
            status=view["status"],
            status_reason=view.get("status_reason"),
            policy=JSON(view["policy"]),
            consecutive_dead=view["consecutive_dead"],
            delivery_counts=JSON(view["deliveries"]),
            created_at=created,
            updated_at=updated,
        )

    @strawberry.field(description="GET /v1/webhooks/{id}/deliveries: newest first")
    async def deliveries(
        self,
        info: Info,
        status: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> DeliveryPage:
        bounded("limit", limit, 1, MAX_PAGE)
        bounded("before", before, 1, ROW_ID_MAX)
        service = context_of(info).state.webhooks
        page = await run_in_threadpool(
            service.deliveries, self.id, status=status, limit=limit, before=before
        )
        return DeliveryPage(
            deliveries=[Delivery.of(d) for d in page["deliveries"]], next=page["next"]
        )


@strawberry.type(description="An admin API token (its secret is shown once, at creation).")
class ApiToken:
    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


# -- inputs ---------------------------------------------------------------------------------------


@strawberry.input
class CatalogRefInput:
    id: str
    version: str = strawberry.field(default="*", description="A version or an npm-style range")


@strawberry.input(
    description="POST /v1/plugins: an image reference, or a plugin from the catalog (with "
    "the dependencies it needs, all or nothing). A source bundle is REST-only (multipart)."
)
class InstallInput:
    image: str | None = None
    catalog: CatalogRefInput | None = None
    approved_permissions: list[str] = strawberry.field(default_factory=list)
    config: JSON | None = None
    allow_findings: bool = strawberry.field(
        default=False, description="Install despite blocking findings (admin only; recorded)"
    )
    override_reason: str | None = None
    signature: JSON | None = strawberry.field(
        default=None, description="Detached signature envelope (image installs)"
    )
