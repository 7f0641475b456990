"""A plugin's containers: start one until it is healthy and initialized, serve it through the
broker (as the plugin's current container, or as its canary's candidate taking a share of the
calls), record it, retire one or all. This module runs containers and never changes a plugin's
state; ``lifecycle.py`` decides when to start or stop them and records what came of it.

The plugin protocol client (health, initialize, shutdown) is a collaborator
(``PluginClients``), so the lifecycle can be tested against ``FakeRuntime`` with a fake one.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from summit_sdk.protocol import HealthResponse

from orchestrator.broker import Broker, PluginClient, Route
from orchestrator.broker.canary import Canary
from orchestrator.config import Settings
from orchestrator.domain.errors import SummitError
from orchestrator.domain.manifest import Manifest, Permission
from orchestrator.runtime.base import ContainerRuntime, ContainerSpec, ContainerStatus
from orchestrator.runtime.endpoints import Endpoint, parse_endpoint
from orchestrator.store import crud
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import Container

log = logging.getLogger(__name__)

LOG_TAIL_ON_FAILURE = 20
INSPECT_EVERY_S = 0.5
# A short, flat poll: a growing interval overshoots the moment the plugin becomes ready.
HEALTH_POLL_S = 0.01


class StartFailed(SummitError):
    """The plugin's container did not become healthy and initialized; it was removed."""

    status_code = 502
    code = "start_failed"


class PluginConnection(Protocol):
    """The calls the orchestrator itself makes into a plugin (``broker.client.PluginClient``)."""

    def health(self, *, timeout_s: float = 2.0) -> HealthResponse: ...

    def initialize(
        self,
        *,
        config: dict[str, Any],
        permissions: list[str],
        host_url: str | None = None,
        host_token: str | None = None,
    ) -> None: ...

    def shutdown(self, *, timeout_s: float = 5.0) -> None: ...

    def close(self) -> None: ...


PluginClients = Callable[..., PluginConnection]
"""Opens a connection to the plugin at an endpoint:
``clients(endpoint, timeout_s=..., call_token=...)``."""


def plugin_client(
    endpoint: Endpoint, *, timeout_s: float = 10.0, call_token: str | None = None
) -> PluginConnection:
    return PluginClient(endpoint, timeout_s=timeout_s, call_token=call_token)


class HostAccess(Protocol):
    """The host API as the lifecycle sees it: a listener and a token per container
    (``orchestrator.api.host.HostGateway``)."""

    def open(self, plugin_id: str, container_id: str, endpoint: Endpoint) -> tuple[str, str] | None:
        """Start serving the container; (host URL inside it, its token), or None."""

    def reattach(self, plugin_id: str, endpoint: Endpoint) -> None: ...

    def close(self, container_id: str, endpoint: Endpoint | None) -> None:
        """Stop serving the container and revoke its token."""

    def revoke_plugin(self, plugin_id: str) -> None: ...


def endpoint_of(row: Container) -> Endpoint | None:
    """The endpoint a container row keeps as text (the database's edge); None if it names none."""
    try:
        return parse_endpoint(row.endpoint) if row.endpoint else None
    except ValueError:
        log.warning("container %s has no valid endpoint: %r", row.id[:12], row.endpoint)
        return None


def route_for(
    plugin_id: str,
    endpoint: Endpoint,
    manifest: Manifest,
    resources: dict[str, Any],
    *,
    default_timeout_ms: int,
    call_token: str | None = None,
) -> Route:
    return Route(
        plugin_id=plugin_id,
        version=manifest.version,
        endpoint=endpoint,
        extensions=tuple(manifest.extensions),
        timeout_ms=int(resources.get("timeout_ms", default_timeout_ms)),
        rate_limit_requests=resources.get("rate_limit_requests"),
        rate_limit_window_s=resources.get("rate_limit_window_s"),
        concurrency=resources.get("concurrency"),
        subscribe=tuple(manifest.events.subscribe)
        if Permission.EVENTS_SUBSCRIBE in manifest.permissions
        else (),
        call_token=call_token,
    )


def isolation_for(resources: dict[str, Any], settings: Settings, *, signed: bool) -> str:
    """The isolation tier a plugin's container runs under: the operator's choice for this
    plugin (its ``isolation`` limit), else the tier of unsigned plugins when it is set and the
    plugin is not signed by a trusted key, else the default tier."""
    chosen = resources.get("isolation")
    if chosen:
        return str(chosen)
    if not signed and settings.isolation_unsigned:
        return settings.isolation_unsigned
    return settings.isolation


def why_stopped(status: ContainerStatus | None) -> str:
    """A stopped container's cause of death, as a plugin's state reason says it."""
    if status is None:
        return "container vanished"
    if status.oom_killed:
        return "OOMKilled"
    return f"exited with code {status.exit_code}"


class PluginContainers:
    def __init__(
        self,
        *,
        engine: Engine,
        runtime: ContainerRuntime,
        broker: Broker,
        settings: Settings,
        host: HostAccess | None = None,
        clients: PluginClients = plugin_client,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.broker = broker
        self.settings = settings
        self.host = host
        self.clients = clients

    def serve(
        self,
        plugin_id: str,
        endpoint: Endpoint,
        manifest: Manifest,
        resources: dict[str, Any],
        *,
        call_token: str | None = None,
    ) -> Route | None:
        """Route the plugin's calls to ``endpoint`` from now on; the route it replaces (an
        equal route is left as it is)."""
        route = route_for(
            plugin_id,
            endpoint,
            manifest,
            resources,
            default_timeout_ms=self.settings.default_timeout_ms,
            call_token=call_token,
        )
        current = self.broker.route(plugin_id)
        if current == route:
            return current
        return self.broker.set_route(route)

    def serve_canary(
        self,
        plugin_id: str,
        endpoint: Endpoint,
        manifest: Manifest,
        resources: dict[str, Any],
        *,
        weight: int,
        call_token: str | None = None,
    ) -> Canary:
        """Send ``weight`` percent of the plugin's calls to its candidate at ``endpoint`` (an
        unchanged candidate keeps its statistics)."""
        route = route_for(
            plugin_id,
            endpoint,
            manifest,
            resources,
            default_timeout_ms=self.settings.default_timeout_ms,
            call_token=call_token,
        )
        return self.broker.set_canary(route, weight)

    @staticmethod
    def record(
        session: Session,
        plugin_id: str,
        version: str,
        status: ContainerStatus,
        *,
        canary_weight: int | None = None,
    ) -> None:
        """Keep a started container's row (its endpoint as text: the database's edge); with
        ``canary_weight``, as the candidate of the plugin's canary."""
        crud.add_container(
            session,
            container_id=status.id,
            plugin_id=plugin_id,
            name=status.name,
            version=version,
            image=status.image,
            endpoint=str(status.endpoint) if status.endpoint else "",
            call_token=status.call_token,
        )
        if canary_weight is not None:
            session.flush()
            plugin_store.set_canary_weight(session, container_id=status.id, weight=canary_weight)

    def reinitialize(
        self,
        plugin_id: str,
        *,
        config: dict[str, Any],
        grants: list[str],
        canary_grants: list[str] | None = None,
    ) -> None:
        """Give a serving plugin its new config (nothing to do when it is not serving), and
        its canary's candidate too, with ``canary_grants``."""
        route = self.broker.route(plugin_id)
        if route is None:
            return
        gate = self.broker.pauses
        if plugin_id in gate.paused and gate.thaw_blocking is not None:
            gate.thaw_blocking(plugin_id)
        canary = self.broker.canary(plugin_id)
        targets = [(route, grants)]
        if canary is not None and canary_grants is not None:
            targets.append((canary.route, canary_grants))
        for target, permissions in targets:
            client = self.clients(target.endpoint, call_token=target.call_token)
            try:
                client.initialize(config=config, permissions=permissions)
            finally:
                client.close()

    def stop_all(self, plugin_id: str, *, graceful: bool) -> None:
        """Take the plugin out of the broker, shut down and remove all its containers (a
        canary's candidate too), and revoke its host API tokens."""
        canary = self.broker.drop_canary(plugin_id)
        route = self.broker.drop_route(plugin_id)
        for served in (route, canary.route if canary is not None else None):
            if served is not None:
                self.broker.wait_drained(served.endpoint, timeout_s=self.settings.shutdown_grace_s)
        with session_scope(self.engine) as session:
            rows = crud.list_containers(session, plugin_id=plugin_id)
            found = {row.id: (endpoint_of(row), row.call_token) for row in rows}
        for status in self.runtime.list_owned():
            if status.plugin_id == plugin_id:
                found.setdefault(status.id, (status.endpoint, None))
        for container_id, (endpoint, call_token) in found.items():
            self.retire(container_id, endpoint, graceful=graceful, call_token=call_token)
            with session_scope(self.engine) as session:
                crud.delete_container(session, container_id=container_id)
        if self.host is not None:
            self.host.revoke_plugin(plugin_id)

    def take_down(self, plugin_id: str, container: Container) -> str:
        """Remove a crashed container at once (no shutdown call: it is not answering); the
        last lines it logged."""
        tail = self.log_tail(container.id)
        self.broker.drop_route(plugin_id)
        self.runtime.remove(container.id)
        self.close_host(container.id, endpoint_of(container))
        return tail

    def start(
        self,
        plugin_id: str,
        *,
        version: str,
        image: str,
        resources: dict[str, Any],
        config: dict[str, Any],
        grants: list[str],
        signed: bool = False,
    ) -> ContainerStatus:
        """Deploy, wait for health, initialize. On any failure the container is removed.
        The status carries the container's call token (its protocol's bearer secret)."""
        spec = ContainerSpec(
            plugin_id=plugin_id,
            version=version,
            image=image,
            memory_mb=int(resources.get("memory_mb", self.settings.default_memory_mb)),
            cpu_percent=int(resources.get("cpu_percent", self.settings.default_cpu_percent)),
            storage_mb=int(resources.get("storage_mb", self.settings.default_storage_mb)),
            pids_limit=self.settings.pids_limit,
            tmpfs_mb=self.settings.tmpfs_mb,
            user=self.settings.plugin_user,
            log_max_size=self.settings.log_max_size,
            isolation=isolation_for(resources, self.settings, signed=signed),
            call_token=secrets.token_urlsafe(32),
        )
        status = replace(self.runtime.deploy(spec), call_token=spec.call_token)
        try:
            if status.endpoint is None:
                raise StartFailed(f"the runtime gave {plugin_id}'s container no endpoint")
            host = self.host.open(plugin_id, status.id, status.endpoint) if self.host else None
            host_url, host_token = host if host is not None else (None, None)
            client = self.clients(status.endpoint, call_token=status.call_token)
            try:
                self._wait_healthy(client, status, plugin_id)
                client.initialize(
                    config=config, permissions=grants, host_url=host_url, host_token=host_token
                )
            finally:
                client.close()
            return status
        except BaseException as exc:
            tail = self.log_tail(status.id)
            self.close_host(status.id, status.endpoint)
            self.runtime.remove(status.id)
            if isinstance(exc, SummitError):
                if tail:
                    exc.message = f"{exc.message}; last log lines:\n{tail}"
                raise
            if isinstance(exc, Exception):
                raise StartFailed(f"{plugin_id} failed to start: {exc!r}") from exc
            raise

    def _wait_healthy(
        self, client: PluginConnection, status: ContainerStatus, plugin_id: str
    ) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        next_inspect = time.monotonic() + INSPECT_EVERY_S
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                health = client.health(timeout_s=1.0)
                if health.plugin.id != plugin_id:
                    raise StartFailed(
                        f"container answers as plugin {health.plugin.id!r}, not {plugin_id!r}",
                        code="plugin_mismatch",
                    )
                return
            except SummitError:
                raise
            except Exception as exc:  # not listening yet
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() >= next_inspect:
                current = self.runtime.status(status.id)
                if current is None or not current.running:
                    why = why_stopped(current).removeprefix("container ")
                    raise StartFailed(f"{plugin_id} stopped while starting: {why}")
                next_inspect = time.monotonic() + INSPECT_EVERY_S
            time.sleep(HEALTH_POLL_S)
        raise StartFailed(
            f"{plugin_id} did not become healthy within {self.settings.startup_timeout_s:g}s "
            f"({last_error})",
            code="startup_timeout",
        )

    def retire(
        self,
        container_id: str,
        endpoint: Endpoint | None,
        *,
        graceful: bool,
        call_token: str | None = None,
    ) -> None:
        """Remove a container (after asking it to shut down, when ``graceful``)."""
        grace = self.settings.shutdown_grace_s
        if graceful and endpoint is not None:
            if self.runtime.can_pause:
                # Frozen by the idle pause, it could not hear the shutdown. Cheaper than
                # asking first: Docker answers "not paused" at once.
                with contextlib.suppress(SummitError):
                    self.runtime.unpause(container_id)
            try:
                client = self.clients(endpoint, timeout_s=grace, call_token=call_token)
                try:
                    client.shutdown(timeout_s=grace)
                finally:
                    client.close()
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    current = self.runtime.status(container_id)
                    if current is None or not current.running:
                        break
                    time.sleep(0.05)
            except Exception as exc:  # a plugin that will not shut down is stopped anyway
                log.info("shutdown of %s did not answer: %s", container_id[:12], exc)
        self.runtime.remove(container_id, grace_s=1 if graceful else 0)
        self.close_host(container_id, endpoint)

    def close_host(self, container_id: str, endpoint: Endpoint | None) -> None:
        if self.host is not None:
            try:
                self.host.close(container_id, endpoint)
            except Exception as exc:  # the container is gone either way; its token is revoked
                log.warning("closing the host API of %s failed: %s", container_id[:12], exc)

    def log_tail(self, container_id: str) -> str:
        try:
            return self.runtime.logs(container_id, tail=LOG_TAIL_ON_FAILURE).strip()
        except SummitError:
            return ""
