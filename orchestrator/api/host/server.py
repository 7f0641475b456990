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
import ipaddress
import json
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
        server = self._start(self._bound(plugin_id), sock, f"host API of {plugin_id}")
        old = self._servers.pop(str(path), None)
        self._servers[str(path)] = server
        if old is not None:
            self._call(old.shutdown())

    def listen_tcp(self, host: str, port: int, tokens: HostTokens) -> None:
        """Serve every plugin on ``host:port`` (plugins reached over a network); the bearer
        token names the calling plugin, and a request without a live one is refused (401)
        before it reaches the host API."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        server = self._start(_by_token(self.app, tokens), sock, f"host API on {host}:{port}")
        self._servers[f"tcp://{host}:{port}"] = server

    def _start(self, app: ASGIApp, sock: socket.socket, listener: str) -> uvicorn.Server:
        """A guarded uvicorn server of ``app`` on the bound, listening ``sock``."""
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            **self.limits.uvicorn_options(listener),
        )
        config.load()
        server = uvicorn.Server(config)
        # What Server.serve() would do before startup(); serve() itself also takes over the
        # process's signal handlers, which belong to the orchestrator's own server.
        server.lifespan = config.lifespan_class(config)
        self._call(server.startup(sockets=[sock]))
        return server

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
    """What the lifecycle service needs: a listener and a token per container.

    A container reached over a unix socket gets a listener of its own beside it. A container
    on a network address (a pod) is told ``advertised_url``, the host API's TCP listener that
    every replica serves (``HostServer.listen_tcp``): its token says which plugin calls."""

    def __init__(
        self, server: HostServer, tokens: HostTokens, *, advertised_url: str | None = None
    ) -> None:
        self.server = server
        self.tokens = tokens
        self.advertised_url = advertised_url

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
            if self.advertised_url is None:
                return None
            token = self.tokens.issue(plugin_id=plugin_id, container_id=container_id)
            return self.advertised_url, token
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


def _by_token(app: ASGIApp, tokens: HostTokens) -> ASGIApp:
    """``app`` for a listener that serves every plugin: the plugin is the one the request's
    bearer token was issued to."""
    refusal = json.dumps(
        {
            "error": {
                "code": "unauthenticated",
                "message": "the host API needs the bearer token given in initialize",
                "details": {},
            }
        }
    ).encode()

    async def by_token(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        auth = dict(scope.get("headers") or ()).get(b"authorization", b"").decode("latin-1")
        token = auth[7:] if auth[:7].lower() == "bearer " else None
        plugin_id = await asyncio.to_thread(tokens.plugin_of, token) if token else None
        if plugin_id is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": refusal})
            return
        await app({**scope, PLUGIN_SCOPE_KEY: plugin_id}, receive, send)

    return by_token


def advertised_host_url(address: str | None, port: int, pod_ip: str | None) -> str:
    """The host API's URL as plugins on a network are told it: an IP, since plugins get no
    DNS. ``address`` is ``HOST[:PORT]`` (a name is resolved here, once: a Service's cluster IP
    stays for the Service's life); unset, this pod's own IP and ``port``."""
    if address:
        host, port = _host_and_port(address, port)
    elif pod_ip:
        host = pod_ip
    else:
        raise ValueError(
            "SUMMIT_HOST_API_PORT is set but plugins cannot be told where to reach it: set "
            "SUMMIT_HOST_API_ADDRESS (an IP or a name to resolve, e.g. the host API Service) "
            "or run in a pod with POD_IP"
        )
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ip = ipaddress.ip_address(infos[0][4][0])
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{shown}:{port}"


def _host_and_port(address: str, default_port: int) -> tuple[str, int]:
    """``10.0.0.7``, ``10.0.0.7:8701``, ``[fd00::7]:8701``, ``fd00::7``, ``name:8701``."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    if address.count(":") == 1:
        host, _, given = address.partition(":")
        if not given.isdigit():
            raise ValueError(f"SUMMIT_HOST_API_ADDRESS: {address!r} has no valid port")
        return host, int(given)
    return address, default_port
