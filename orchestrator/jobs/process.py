"""A ``summit worker`` process: a broker of its own, routes from the database, Redis jobs."""

from __future__ import annotations

import asyncio
import threading

from orchestrator.broker.setup import close_rate_limiter, make_broker
from orchestrator.config import Settings
from orchestrator.jobs.install import INSTALL, install_handler
from orchestrator.jobs.routes import load_routes
from orchestrator.jobs.setup import make_queue
from orchestrator.jobs.worker import EXECUTE, Worker, execute_handler
from orchestrator.runtime.select import make_backend
from orchestrator.services.assembly import assemble
from orchestrator.store.db import make_engine


def run_worker_process(settings: Settings, stop: threading.Event) -> None:
    """Work until ``stop`` is set and the jobs in flight have finished."""
    if not settings.redis_url:
        raise ValueError("a worker process needs SUMMIT_REDIS_URL")
    engine = make_engine(settings.database_url)
    queue = make_queue(settings)
    broker = make_broker(settings)
    # Installs (builds) run here too, on the orchestrator's container backend. A worker has
    # no host API to open and no event bus (its install transitions are stored, their events
    # are not).
    runtime, image_store = make_backend(settings)
    services = assemble(
        engine=engine, settings=settings, runtime=runtime, images=image_store, broker=broker
    )
    installs = services.installs

    def refresh() -> None:
        load_routes(engine, broker, default_timeout_ms=settings.default_timeout_ms)

    worker = Worker(
        queue,
        {
            EXECUTE: execute_handler(broker, refresh=refresh),
            INSTALL: install_handler(installs, queue),
        },
        concurrency=settings.worker_concurrency,
        lease_s=settings.worker_lease_s,
    )

    async def main() -> None:
        try:
            await worker.run(stop)
        finally:
            await broker.aclose()
            await close_rate_limiter(broker)

    try:
        asyncio.run(main())
    finally:
        queue.close()
        engine.dispose()
