"""How the plugin services are put together: one place for the orchestrator, the job worker
process and the in-process tests, so the three cannot drift apart. Each caller brings what
differs (the container backend, the event bus and the host API where it has them)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.broker import Broker
from orchestrator.config import Settings
from orchestrator.events.bus import EventBus
from orchestrator.runtime.base import ContainerRuntime, ImageStore
from orchestrator.runtime.builder import ImageBuilder
from orchestrator.security.trust import TrustStore
from orchestrator.services.containers import (
    HostAccess,
    PluginClients,
    PluginContainers,
    plugin_client,
)
from orchestrator.services.install import InstallService, PluginImages
from orchestrator.services.lifecycle import LifecycleService
from orchestrator.services.locks import PluginLocks
from orchestrator.services.scanning import SupplyChainCheck
from orchestrator.services.supervision import Schedule, Supervision, thread_timer
from orchestrator.store.db import Engine

__all__ = ["PluginServices", "assemble"]


@dataclass(frozen=True)
class PluginServices:
    images: PluginImages
    containers: PluginContainers
    lifecycle: LifecycleService
    installs: InstallService
    supervision: Supervision
    trust: TrustStore


def assemble(
    *,
    engine: Engine,
    settings: Settings,
    runtime: ContainerRuntime,
    images: ImageStore,
    broker: Broker,
    events: EventBus | None = None,
    host: HostAccess | None = None,
    clients: PluginClients = plugin_client,
    schedule: Schedule = thread_timer,
) -> PluginServices:
    """The services over ``runtime`` and ``images`` (often one object: Docker is both)."""
    plugin_images = PluginImages(
        engine=engine,
        images=images,
        builder=ImageBuilder(
            images, base_image=settings.base_image, workdir=settings.state_dir / "build"
        ),
        sources_dir=settings.state_dir / "sources",
        workdir=settings.state_dir / "bundles",
        bundle_max_bytes=settings.bundle_max_bytes,
        events=events,
    )
    containers = PluginContainers(
        engine=engine,
        runtime=runtime,
        broker=broker,
        settings=settings,
        host=host,
        clients=clients,
    )
    lifecycle = LifecycleService(
        locks=PluginLocks(engine, namespace=settings.instance),
        engine=engine,
        runtime=runtime,
        broker=broker,
        containers=containers,
        images=plugin_images,
        settings=settings,
        events=events,
    )
    trust = TrustStore(engine)
    installs = InstallService(
        engine=engine,
        lifecycle=lifecycle,
        images=plugin_images,
        supply_chain=SupplyChainCheck(settings),
        trust=trust,
        settings=settings,
    )
    supervision = Supervision(
        engine=engine,
        lifecycle=lifecycle,
        runtime=runtime,
        containers=containers,
        broker=broker,
        settings=settings,
        schedule=schedule,
    )
    return PluginServices(
        images=plugin_images,
        containers=containers,
        lifecycle=lifecycle,
        installs=installs,
        supervision=supervision,
        trust=trust,
    )
