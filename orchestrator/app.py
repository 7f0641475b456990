"""FastAPI application factory. Start-up migrates, then reconciles in the background."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from orchestrator import __version__, web
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.fastpath import FastPathAPI
from orchestrator.api.graphql import make_graphql_router
from orchestrator.api.host import HostGateway, HostServer, create_host_app
from orchestrator.api.host.server import advertised_host_url
from orchestrator.api.http_guard import HttpLimits, raise_open_files_limit
from orchestrator.api.routes import (
    catalog,
    catalog_archive,
    extensions,
    jobs,
    metering,
    plugins,
    security,
    system,
    usage,
    webhooks,
)
from orchestrator.api.routes import collections as collection_routes
from orchestrator.api.routes import events as event_routes
from orchestrator.broker.setup import close_rate_limiter, make_broker
from orchestrator.catalog.collections import CollectionService
from orchestrator.catalog.installer import CatalogInstaller
from orchestrator.catalog.reports import InstallReporter, InstallReportService, reporter_id
from orchestrator.catalog.service import CatalogCache, CatalogService
from orchestrator.catalog.sources import LocalCatalog, RemoteCatalog, use_source
from orchestrator.catalog.tracking import CatalogTracking
from orchestrator.config import Settings, get_settings
from orchestrator.events.bus import EventBus
from orchestrator.events.fanout import Fanout
from orchestrator.events.retention import Retention
from orchestrator.events.sender import DeliverySender, default_owner
from orchestrator.events.stream import EventStream
from orchestrator.events.summaries import BrokerSummaries
from orchestrator.jobs.setup import make_queue, start_embedded_worker
from orchestrator.monitor.cgroups import CgroupLocator, ContainerMeter
from orchestrator.monitor.quotas import EventJournal, QuotaEnforcer, QuotaPolicy
from orchestrator.monitor.replica_calls import ReplicaCallStats
from orchestrator.monitor.resources import ResourceCollector
from orchestrator.monitor.sampler import Sampler, call_stats_from
from orchestrator.monitor.series import UsageSeries
from orchestrator.monitor.service import UsageService
from orchestrator.runtime.select import make_backend
from orchestrator.security.access import ApiTokens
from orchestrator.security.egress import EgressProxy
from orchestrator.security.secretbox import SecretBox
from orchestrator.security.tokens import HostTokens
from orchestrator.services.assembly import assemble
from orchestrator.services.host import HostService
from orchestrator.services.idle import PAUSE_EVENTS, IdlePause
from orchestrator.services.leadership import Leadership
from orchestrator.services.plugins import PluginQueries
from orchestrator.services.routing import ROUTE_EVENTS, RouteSync
from orchestrator.services.webhooks import RetryPolicy, WebhookService
from orchestrator.store.db import make_engine, migrate

log = logging.getLogger("orchestrator")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Plugins get a lower limit (NOFILE_LIMIT) and a cap on host API connections, so
        # none of them can use up the descriptors the others and the admin API need.
        before, now = raise_open_files_limit()
        log.info("open files limit: %d (was %d)", now, before)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        settings.sockets_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database_url)
        migrate(engine)
        runtime, image_store = make_backend(settings)
        broker = make_broker(settings)
        events = EventBus(engine, max_payload_bytes=settings.event_max_payload_bytes)
        events.bind(asyncio.get_running_loop())
        events.fanout = Fanout(
            lambda: [(r.plugin_id, r.subscribe) for r in broker.routes() if r.subscribe]
        )
        secretbox = SecretBox.from_settings(settings.secrets_key, settings.state_dir)
        tokens = HostTokens(engine)
        egress = EgressProxy(
            allow_private=settings.allow_private_targets,
            timeout_s=settings.egress_timeout_s,
            max_response_bytes=settings.egress_max_response_bytes,
            max_request_bytes=settings.host_max_body_bytes,
        )
        host = HostService(
            engine=engine,
            tokens=tokens,
            secrets=secretbox,
            broker=broker,
            egress=egress,
            events=events,
        )
        host_server = HostServer(
            create_host_app(host, max_body_bytes=settings.host_max_body_bytes),
            asyncio.get_running_loop(),
            plugin_user=settings.plugin_user,
            limits=HttpLimits.from_settings(
                settings, max_connections=settings.host_max_connections
            ),
        )
        advertised: str | None = None
        if settings.host_api_port:
            # Plugins on a network (pods) reach the host API here, through any replica.
            advertised = advertised_host_url(
                settings.host_api_address, settings.host_api_port, os.environ.get("POD_IP")
            )
            await asyncio.to_thread(
                host_server.listen_tcp, "0.0.0.0", settings.host_api_port, tokens
            )
            log.info(
                "host API on port %d, told to plugins as %s", settings.host_api_port, advertised
            )
        services = assemble(
            engine=engine,
            settings=settings,
            runtime=runtime,
            images=image_store,
            broker=broker,
            events=events,
            host=HostGateway(host_server, tokens, advertised_url=advertised),
        )
        lifecycle, installs, supervision = (
            services.lifecycle,
            services.installs,
            services.supervision,
        )
        trust = services.trust
        installs.sweep_workdirs()
        app.state.settings = settings
        app.state.engine = engine
        app.state.runtime = runtime
        app.state.broker = broker
        app.state.lifecycle = lifecycle
        app.state.installs = installs
        catalog_cache = CatalogCache(settings.redis_url, prefix=settings.instance)
        app.state.catalog = CatalogService(
            engine=engine,
            images=image_store,
            supply_chain=installs.supply_chain,
            trust=services.trust,
            cache=catalog_cache,
        )
        # The catalog this orchestrator installs from: its own, or SUMMIT_CATALOG_URL's.
        catalog_source: LocalCatalog | RemoteCatalog = LocalCatalog(
            engine, service=app.state.catalog
        )
        if settings.catalog_url:
            catalog_source = RemoteCatalog(
                settings.catalog_url,
                settings.catalog_token.get_secret_value() if settings.catalog_token else None,
            )
            use_source(engine, catalog_source)
        app.state.catalog_source = catalog_source
        app.state.catalog_installer = CatalogInstaller(
            engine=engine, installs=installs, uninstall=lifecycle.uninstall, source=catalog_source
        )
        app.state.collections = CollectionService(engine=engine)
        app.state.install_reports = InstallReportService(
            engine=engine, on_change=catalog_cache.bump
        )
        reporter: InstallReporter | None = None
        if isinstance(catalog_source, RemoteCatalog):
            reporter = InstallReporter(
                engine=engine,
                catalog=catalog_source,
                events=events,
                orchestrator=reporter_id(settings.state_dir, settings.instance),
                retry_s=settings.event_summary_interval_s,
            )
            reporter.start()
        app.state.trust = trust
        app.state.host = host
        app.state.egress = egress
        app.state.events = events
        replica = settings.replica or default_owner(str(settings.state_dir))
        sender = DeliverySender(
            engine,
            bus=events,
            broker=broker,
            secrets=secretbox,
            owner=replica,
            allow_private=settings.webhook_allow_private,
            webhook_concurrency=settings.webhook_concurrency,
            max_body_bytes=settings.webhook_max_body_bytes,
            lease_s=settings.delivery_lease_s,
            poll_s=settings.delivery_poll_s,
            plugin_retry_s=settings.plugin_event_retry_s,
        )
        await sender.start()
        app.state.sender = sender
        app.state.webhooks = WebhookService(
            engine,
            secrets=secretbox,
            defaults=RetryPolicy(
                max_attempts=settings.webhook_max_attempts,
                backoff_base_s=settings.webhook_backoff_base_s,
                backoff_cap_s=settings.webhook_backoff_cap_s,
                timeout_s=settings.webhook_timeout_s,
                pause_after=settings.webhook_pause_after,
            ).check(),
            allow_private=settings.webhook_allow_private,
            on_change=sender.wake,
        )
        app.state.secretbox = secretbox
        summaries = BrokerSummaries(broker, events, interval_s=settings.event_summary_interval_s)
        summaries.start()
        # Catalog statistics: this replica's calls and the operations it logged, by day.
        tracking = CatalogTracking(
            engine=engine,
            broker=broker,
            events=events,
            interval_s=settings.event_summary_interval_s,
            on_change=catalog_cache.bump,
        )
        tracking.start()
        # Supervision and event retention run on the elected replica only.
        leadership = Leadership(
            engine,
            holder=replica,
            lease_s=settings.leader_lease_s,
            renew_s=settings.leader_renew_s,
            on_elected=supervision.start,
            on_deposed=supervision.stop,
        )
        retention = Retention(
            engine,
            keep_s=settings.event_retention_s,
            interval_s=settings.event_prune_interval_s,
            when=lambda: leadership.leader,
        )
        retention.start()
        routes = RouteSync(
            engine=engine,
            broker=broker,
            containers=services.containers,
            locks=lifecycle.locks,
            interval_s=settings.route_resync_s,
        )
        broker.refresh = routes.refresh
        for event_type in ROUTE_EVENTS:
            events.on(event_type, routes.on_event)
        idle = IdlePause(
            engine=engine,
            runtime=runtime,
            broker=broker,
            locks=lifecycle.locks,
            idle_s=settings.idle_pause_s,
            events=events,
            redis_url=settings.redis_url,
            instance=settings.instance,
            leader=lambda: leadership.leader and supervision.reconciled.is_set(),
        )
        for event_type in PAUSE_EVENTS:
            events.on(event_type, idle.on_event)
        stream: EventStream | None = None
        if settings.redis_url:
            stream = EventStream(
                settings.redis_url,
                bus=events,
                replica=replica,
                on_work=sender.wake,
                prefix=settings.instance,
            )
            await stream.start()
        app.state.api_tokens = ApiTokens(engine, cache_s=settings.api_token_cache_s)
        app.state.queries = PluginQueries(engine=engine, runtime=runtime)
        # The resource monitor samples on the elected supervisor only.
        series = UsageSeries(engine)
        # Every replica's calls, counted once by the sampling replica (shared through Redis).
        replica_calls = ReplicaCallStats(
            call_stats=call_stats_from(broker.metrics),
            replica=replica,
            redis_url=settings.redis_url,
            instance=settings.instance,
        )
        sampler = Sampler(
            engine=engine,
            series=series,
            meter=ContainerMeter(
                CgroupLocator(settings.monitor_cgroup_root), runtime_stats=runtime.stats
            ),
            interval_s=settings.monitor_interval_s,
            should_run=lambda: leadership.leader,
            egress_bytes=lambda p: (u := egress.usage(p))["bytes_out"] + u["bytes_in"],
            call_stats=replica_calls.read,
        )
        quotas = QuotaEnforcer(
            default=QuotaPolicy().override(settings.quota_policy),
            control=lifecycle,
            journal=EventJournal(engine, events),
            recent=sampler.recent,
            egress_since=lambda p, t: series.sum_since(p, "network_bytes", since=t),
            default_rate_limit=settings.rate_limit_requests,
            default_storage_mb=settings.default_storage_mb,
        )
        sampler.listeners.append(quotas)
        sampler.start()
        replica_calls.start()
        app.state.usage = UsageService(
            engine=engine,
            series=series,
            egress_usage=egress.usage,
            live_usage=app.state.queries.live_usage,
            interval_s=settings.monitor_interval_s,
        )
        ResourceCollector(
            states=app.state.usage.plugin_states, latest=app.state.usage.latest_points
        ).register(broker.metrics.registry)
        app.state.reconciled = routes.synced
        app.state.leadership = leadership
        leadership.start()

        def routes_may_start(stop: threading.Event) -> bool:
            # The leader first reconciles (adopting what runs); the others read at once.
            while not stop.is_set():
                if leadership.decided.wait(0.1) and (
                    not leadership.leader or supervision.reconciled.wait(0.1)
                ):
                    return True
            return False

        routes.start(after=routes_may_start)
        idle.start()
        app.state.idle = idle
        app.state.jobs = make_queue(settings)
        queue = app.state.jobs
        broker.metrics.gauge_from(
            "summit_job_queue_depth", "Jobs waiting in the queue.", lambda: float(queue.depth())
        )
        job_worker = start_embedded_worker(settings, app.state.jobs, broker, installs)
        try:
            yield
        finally:
            # Plugin containers keep running: the next start (or the next leader) adopts them.
            routes.stop()
            await asyncio.to_thread(idle.stop)
            await idle.aclose()
            await asyncio.to_thread(sampler.stop)
            await asyncio.to_thread(replica_calls.stop)  # writes its last counts on the way out
            quotas.close()
            await asyncio.to_thread(leadership.stop)
            if job_worker is not None:
                await job_worker.stop()
            app.state.jobs.close()
            if stream is not None:
                await stream.aclose()
            await retention.aclose()
            await summaries.aclose()
            await tracking.aclose()
            if reporter is not None:
                await reporter.aclose()
            if isinstance(catalog_source, RemoteCatalog):
                use_source(engine, None)
                catalog_source.close()
            await sender.aclose()
            await host_server.aclose()
            await egress.aclose()
            catalog_cache.close()
            await broker.aclose()
            await close_rate_limiter(broker)
            engine.dispose()

    app = FastPathAPI(
        title="Summit plugin orchestrator",
        version=__version__,
        lifespan=lifespan,
        description="Installs, runs and brokers calls into sandboxed, container-per-plugin "
        "extensions. Authenticate with `Authorization: Bearer $SUMMIT_ADMIN_TOKEN`.",
    )
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(plugins.router)
    app.include_router(extensions.router)
    app.include_router(jobs.router)
    app.include_router(security.router)
    app.include_router(event_routes.router)
    app.include_router(webhooks.router)
    app.include_router(usage.router)
    app.include_router(catalog.router)
    app.include_router(collection_routes.router)
    app.include_router(metering.router)
    app.include_router(catalog_archive.router)
    app.include_router(make_graphql_router(settings))
    app.include_router(web.router)  # the web UI at /ui (pages and /ui/static/)
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the live event streams as soon as it starts to stop:
    a stream is a request that never finishes by itself, and the server waits for requests."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        events = getattr(getattr(self.config.app, "state", None), "events", None)
        if isinstance(events, EventBus):
            events.close_tails()
        await super().shutdown(sockets)


def serve(settings: Settings, *, host: str, port: int, log_level: str = "info") -> None:
    """Run the orchestrator on ``host:port`` until SIGINT or SIGTERM. Stopping drains: open
    requests get ``SHUTDOWN_GRACE_S``, then whatever still runs is cancelled."""
    limits = HttpLimits.from_settings(settings, max_connections=settings.api_max_connections)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # uvicorn caps neither the request head nor the time to send it; the guard does.
        **limits.uvicorn_options("admin API"),
    )
    _Server(config).run()
