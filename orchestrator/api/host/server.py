"""One host API listener per plugin container, on a unix socket in its mounted folder.

Design (a) of the sandbox: a plugin container has no network, only ``/run/summit``, a folder
the orchestrator made for that container. The plugin protocol is served there by the plugin
(``plugin.sock``); the host API by the orchestrator (``host.sock``). The listener knows which
plugin it serves, so a token presented on another plugin's socket is useless.

The listeners run on the orchestrator's event loop (the broker's pools live there, and
``invoke`` uses them); the lifecycle service, which works in threads, opens and closes them
through :class:`HostGateway`.

Each listener is a uvicorn server of its own with the guarded HTTP protocol
(:mod:`orchestrator.api.http_guard`): a plugin may hold at most ``max_connections`` of them
open, and a request head has a size cap and a deadline, so one plugin cannot use up the
orchestrator's file descriptors or memory that the others and the admin API need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from summit_sdk.sandbox import HOST_SOCKET_NAME, SOCKET_MOUNT
from summit_sdk.unixsock import hand_over

from orchestrator.api.host.app import PLUGIN_SCOPE_KEY
from orchestrator.api.http_guard import HttpLimits
from orchestrator.runtime.endpoints import Endpoint, UnixEndpoint
from orchestrator.security.tokens import HostTokens

__all__ = ["HOST_SOCKET_NAME", "HostGateway", "HostServer"]

log = logging.getLogger(__name__)

CONTAINER_SOCKET_DIR = SOCKET_MOUNT
OPEN_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 0.5
DEFAULT_MAX_CONNECTIONS = 64

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class HostServer:
    """Unix-socket listeners of one ASGI app, each stamped with the plugin it serves."""

    def __init__(
        self,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        *,
        plugin_user: str = "10001:10001",
        limits: HttpLimits | None = None,
    ) -> None:
        self.app = app
        self.loop = loop
        self.limits = limits or HttpLimits(max_connections=DEFAULT_MAX_CONNECTIONS)
        uid, _, gid = plugin_user.partition(":")
        self.plugin_uid, self.plugin_gid = int(uid), int(gid or uid)
        self._servers: dict[str, uvicorn.Server] = {}

    def _bound(self, plugin_id: str) -> ASGIApp:
        app = self.app

        async def bound(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = {**scope, PLUGIN_SCOPE_KEY: plugin_id}
            await app(scope, receive, send)

        return bound

    def listen(self, plugin_id: str, path: Path) -> None:
        """Bind ``path`` (replacing a stale socket) and serve; callable from any thread."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            hand_over(path, self.plugin_uid, self.plugin_gid)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self._bound(plugin_id),
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            **self.limits.uvicorn_options(f"host API of {plugin_id}"),
        )
        config.load()
        server = uvicorn.Server(config)
        # What Server.serve() would do before startup(); serve() itself also takes over the
        # process's signal handlers, which belong to the orchestrator's own server.
        server.lifespan = config.lifespan_class(config)
        self._call(server.startup(sockets=[sock]))
        old = self._servers.pop(str(path), None)
        self._servers[str(path)] = server
        if old is not None:
            self._call(old.shutdown())

    @property
    def serving(self) -> set[str]:
        """The socket paths this process listens on."""
        return set(self._servers)

    def close(self, path: Path) -> None:
        server = self._servers.pop(str(path), None)
        if server is not None:
            with contextlib.suppress(Exception):
                self._call(server.shutdown())
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    async def aclose(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            with contextlib.suppress(Exception):
                await server.shutdown()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            # Would deadlock waiting on ourselves; lifecycle work never runs on the loop.
            raise RuntimeError("HostServer methods must be called from a worker thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(OPEN_TIMEOUT_S)


class HostGateway:
    """What the lifecycle service needs: a listener and a token per container."""

    def __init__(self, server: HostServer, tokens: HostTokens) -> None:
        self.server = server
        self.tokens = tokens

    @staticmethod
    def socket_path(endpoint: Endpoint) -> Path | None:
        """The host socket beside the plugin's own, for containers reached over unix sockets."""
        if not isinstance(endpoint, UnixEndpoint):
            return None
        return endpoint.folder / HOST_SOCKET_NAME

    def open(self, plugin_id: str, container_id: str, endpoint: Endpoint) -> tuple[str, str] | None:
        """Listen for this container and issue its token: (url inside the container, token)."""
        path = self.socket_path(endpoint)
        if path is None:
            return None
        self.server.listen(plugin_id, path)
        token = self.tokens.issue(plugin_id=plugin_id, container_id=container_id)
        # The plugin is told where the host API is inside its container, as text (the wire).
        return str(UnixEndpoint(Path(CONTAINER_SOCKET_DIR) / HOST_SOCKET_NAME)), token

    def reattach(self, plugin_id: str, endpoint: Endpoint) -> None:
        """Listen again where nobody does any more (this orchestrator restarted, or the
        replica that started the container died); the plugin keeps its token. A socket
        another live replica serves is left to it."""
        path = self.socket_path(endpoint)
        if path is not None and str(path) not in self.server.serving and not _answers(path):
            self.server.listen(plugin_id, path)

    def close(self, container_id: str, endpoint: Endpoint | None) -> None:
        self.tokens.revoke(container_id=container_id)
        path = self.socket_path(endpoint) if endpoint is not None else None
        if path is not None:
            self.server.close(path)

    def revoke_plugin(self, plugin_id: str) -> None:
        self.tokens.revoke(plugin_id=plugin_id)


def _answers(path: Path) -> bool:
    """Whether some process accepts connections on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):  # nobody listens there
        return False
    except OSError:  # busy or slow, but somebody's
        return True
    finally:
        probe.close()
