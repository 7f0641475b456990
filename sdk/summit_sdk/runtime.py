"""ASGI runtime that answers ``summit.plugin/v1`` for a :class:`~summit_sdk.Plugin`.

Plugin images start it as ``python -m summit_sdk.runtime``; it imports the plugin named by
``SUMMIT_PLUGIN_ENTRYPOINT`` (``module:object``) from the working directory and serves it on
``SUMMIT_PLUGIN_LISTEN`` (``tcp://HOST:PORT`` or ``unix:///abs/path.sock``).

Environment:

- ``SUMMIT_PLUGIN_ENTRYPOINT``  required, ``module:object`` (a Plugin, a PluginBuilder, or a
  zero-argument callable returning one)
- ``SUMMIT_PLUGIN_LISTEN``      default ``tcp://0.0.0.0:8080``
- ``SUMMIT_PLUGIN_MANIFEST``    default ``/summit/plugin.json``; id/version when the builder
  has none
- ``SUMMIT_PLUGIN_CONCURRENCY`` default 64; extension calls beyond it get 429
- ``SUMMIT_PLUGIN_LOG_LEVEL``   default INFO
- ``SUMMIT_PLUGIN_TOKEN``       the call token; on a TCP address every request but
  ``GET /summit/v1/health`` must carry ``Authorization: Bearer <token>`` (else 401
  ``unauthorized``). A network address, unlike the unix socket only the orchestrator can
  reach, is open to whatever the cluster's network plugin lets by.

After ``POST /summit/v1/shutdown`` has been answered the server stops by itself and the process
exits 0; SIGTERM does the same after in-flight requests finish. uvicorn is imported only when
serving, so ``create_app`` stays cheap for tests and embedding.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import hmac
import importlib
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from summit_sdk.builder import Handler, HostSource, Plugin, PluginBuilder, PluginContext
from summit_sdk.builder import is_async_handler as _is_async
from summit_sdk.errors import PluginError
from summit_sdk.spec import BASE_PATH, ERROR_CODES, PROTOCOL

# No pydantic here: it would double the cold start. Requests are checked by hand against the
# shapes of summit_sdk.protocol (a unit test keeps the two in step).

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LISTEN",
    "DEFAULT_MANIFEST",
    "EntrypointError",
    "PluginApp",
    "call_token_for",
    "create_app",
    "load_entrypoint",
    "main",
    "parse_listen",
    "resolve_metadata",
    "serve",
]

DEFAULT_LISTEN = "tcp://0.0.0.0:8080"
DEFAULT_MANIFEST = "/summit/plugin.json"
DEFAULT_CONCURRENCY = 64
TOKEN_ENV = "SUMMIT_PLUGIN_TOKEN"

log = logging.getLogger("summit_sdk.runtime")


class EntrypointError(Exception):
    """The plugin named by ``SUMMIT_PLUGIN_ENTRYPOINT`` cannot be loaded."""


class _Failure(Exception):
    """Answered as an ErrorResponse; raised anywhere inside an endpoint."""

    def __init__(
        self, code: str, message: str, status: int | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else ERROR_CODES.get(code, 500)
        self.details = details

    @classmethod
    def of(cls, exc: PluginError) -> _Failure:
        return cls(exc.code, str(exc), exc.status, exc.details)


@dataclasses.dataclass
class _State:
    plugin: Plugin
    concurrency: int
    # Sync handlers get as many worker threads as calls may be in flight.
    threads: ThreadPoolExecutor
    logger: logging.Logger
    on_exit: Callable[[], None] | None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    host_url: str | None = None
    host_token: str | None = None
    permissions: tuple[str, ...] = ()
    host_transport: Any = None
    host_source: HostSource | None = None
    in_flight: int = 0
    shutting_down: bool = False
    exit_requested: bool = False
    # id(handler) -> (handler, is it async): decided once per handler, not on every call.
    handler_kinds: dict[int, tuple[Handler, bool]] = dataclasses.field(default_factory=dict)

    def context(
        self, request_id: str | None = None, deadline_ms: int | None = None
    ) -> PluginContext:
        return PluginContext(
            config=self.config,
            request_id=request_id,
            deadline_ms=deadline_ms,
            logger=self.logger,
            host_url=self.host_url,
            host_token=self.host_token,
            permissions=self.permissions,
            host_source=self.host_source,
        )

    def request_exit(self) -> None:
        if self.on_exit is not None and not self.exit_requested:
            self.exit_requested = True
            self.on_exit()

    async def run(self, fn: Handler, *args: Any) -> Any:
        """Await ``fn(*args)``: on the event loop if it is async, else on a worker thread.

        A cancelled wait (a deadline) abandons the thread, which runs on; the answer goes out
        at once. The caller's context variables go with the call.
        """
        known = self.handler_kinds.get(id(fn))
        if known is None or known[0] is not fn:
            known = self.handler_kinds[id(fn)] = (fn, _is_async(fn))
        if known[1]:
            return await fn(*args)
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        result = await loop.run_in_executor(self.threads, call)
        if inspect.isawaitable(result):
            result = await result
        return result


# --------------------------------------------------------------------------- app

_Answer = tuple[int, bytes, Callable[[], None] | None]  # status, JSON body, run after sending
_Endpoint = Callable[["_Request"], Awaitable[_Answer]]
_JSON_TYPE = (b"content-type", b"application/json")


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    body: bytes
    params: tuple[str, ...]  # the extension route's point and name


class PluginApp:
    """The ASGI application answering ``summit.plugin/v1`` for one plugin.

    Plain ASGI rather than a web framework: five fixed routes, and each call into a plugin pays
    for every layer in front of its handler (a router, middleware and request objects cost
    about as much as the handler hand-off itself). ``state`` is the runtime's view of the
    plugin: its configuration, host access and calls in flight.
    """

    def __init__(
        self,
        state: _State,
        endpoints: dict[tuple[str, str], _Endpoint],
        *,
        call_token: str | None = None,
    ) -> None:
        self.state = state
        self._endpoints = endpoints
        # The credential expected in Authorization, compared in constant time.
        self._credential = call_token.encode() if call_token else None
        self._methods: dict[str, list[str]] = {}
        for method, path in endpoints:
            self._methods.setdefault(path, []).append(method)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            return
        method, path = scope["method"], scope["path"]
        head = method == "HEAD"  # a GET without the body, as HTTP has it
        if head:
            method = "GET"
        # The kubelet's readiness probe carries no token; health reveals only the id, version
        # and extensions. Everything else is refused before it is routed.
        needs_token = self._credential is not None and not (method == "GET" and path == _HEALTH)
        if needs_token and not self._authorized(scope.get("headers") or ()):
            status, content = _error("unauthorized", "a valid call token is required")
            headers = [
                _JSON_TYPE,
                (b"content-length", str(len(content)).encode()),
                (b"www-authenticate", b"Bearer"),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if head else content})
            return
        params: tuple[str, ...] = ()
        if path.startswith(_EXTENSIONS_PREFIX):  # the one route with parameters
            parts = path[len(_EXTENSIONS_PREFIX) :].split("/")
            if len(parts) == 2 and all(parts):
                path, params = _EXTENSIONS, (parts[0], parts[1])
        endpoint = self._endpoints.get((method, path))
        extra: list[tuple[bytes, bytes]] = []
        after: Callable[[], None] | None = None
        try:
            if endpoint is not None:
                body = await _read_body(receive)
                if body is None:
                    return  # the caller went away
                status, content, after = await endpoint(_Request(body, params))
            elif path in self._methods:
                methods = self._methods[path]
                allowed = ", ".join(sorted([*methods, "HEAD"] if "GET" in methods else methods))
                extra = [(b"allow", allowed.encode())]
                raise _Failure("method_not_allowed", "Method Not Allowed")
            else:
                raise _Failure("not_found", "Not Found")
        except _Failure as exc:
            status, content = _error(exc.code, exc.message, exc.status, exc.details)
        except Exception:
            log.exception("runtime error answering %s %s", method, scope["path"])
            status, content = _error("internal_error", "internal error in the plugin runtime")
        headers = [_JSON_TYPE, (b"content-length", str(len(content)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else content})
        if after is not None:
            after()

    def _authorized(self, headers: Any) -> bool:
        assert self._credential is not None
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, credential = bytes(value).strip().partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credential.strip(), self._credential
                )
        return False


_HEALTH = f"{BASE_PATH}/health"
_EXTENSIONS_PREFIX = f"{BASE_PATH}/extensions/"
_EXTENSIONS = f"{_EXTENSIONS_PREFIX}{{point}}/{{name}}"


async def _read_body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Any, send: Any) -> None:
    # Nothing to set up or tear down; answered so that servers and test clients may ask.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    plugin: Plugin,
    *,
    on_exit: Callable[[], None] | None = None,
    concurrency: int | None = None,
    host_transport: Any = None,
    call_token: str | None = None,
) -> PluginApp:
    """Build the ASGI app for ``plugin``.

    With ``call_token`` every request but ``GET /summit/v1/health`` must carry
    ``Authorization: Bearer <call_token>``; :func:`serve` passes ``SUMMIT_PLUGIN_TOKEN`` when
    it listens on TCP.

    ``on_exit`` is called once, after the answer to ``/shutdown`` has been sent; :func:`serve`
    uses it to stop the server. Without it, shutdown only runs the plugin's handler.
    Missing id/version are read from the manifest file (see :func:`resolve_metadata`).
    ``host_transport`` (an ``httpx.BaseTransport``) replaces the network under ``ctx.host``;
    :class:`summit_sdk.testing.PluginTestClient` passes its in-memory host here.
    """
    plugin = resolve_metadata(plugin)
    limit = concurrency if concurrency is not None else _env_concurrency()
    if limit < 1:
        raise ValueError("concurrency must be at least 1")
    state = _State(
        plugin=plugin,
        concurrency=limit,
        threads=ThreadPoolExecutor(max_workers=limit, thread_name_prefix="summit-handler"),
        logger=logging.getLogger(f"summit.plugin.{plugin.id}"),
        on_exit=on_exit,
        host_transport=host_transport,
    )
    health = _dumps(
        {
            "status": "ok",
            "protocol": PROTOCOL,
            "plugin": {"id": plugin.id, "version": plugin.version},
            "extensions": [{"point": p, "name": n} for p, n in plugin.extensions],
        }
    )

    async def get_health(request: _Request) -> _Answer:
        return 200, health, None

    async def post_initialize(request: _Request) -> _Answer:
        body = _initialize_request(request.body)
        source = HostSource(
            body["host_url"], body["host_token"], body["permissions"], state.host_transport
        )
        ctx = PluginContext(
            config=body["config"],
            logger=state.logger,
            host_url=body["host_url"],
            host_token=body["host_token"],
            permissions=body["permissions"],
            host_source=source,
        )
        if plugin.initialize_handler is not None:
            try:
                await state.run(plugin.initialize_handler, ctx)
            except Exception as exc:
                log.exception("on_initialize of %s failed", plugin.id)
                raise _Failure("initialize_failed", _message(exc)) from exc
        # ctx.config, not body.config: on_initialize may fill in defaults for later calls.
        state.config = ctx.config
        state.host_url, state.host_token = ctx.host_url, ctx.host_token
        state.permissions = ctx.permissions
        old, state.host_source = state.host_source, source
        if old is not None:
            old.close()
        return 200, _OK, None

    async def post_extension(request: _Request) -> _Answer:
        point, name = request.params
        fn = plugin.extension_handler(point, name)
        if fn is None:
            raise _Failure("unknown_extension", f"no extension {point}/{name} in {plugin.id}")
        if state.shutting_down:
            raise _Failure("shutting_down", "plugin is shutting down")
        if state.in_flight >= state.concurrency:
            raise _Failure("too_many_requests", f"more than {state.concurrency} calls in flight")
        state.in_flight += 1
        try:
            return 200, await _call_extension(state, request.body, point, name, fn), None
        finally:
            state.in_flight -= 1

    async def post_event(request: _Request) -> _Answer:
        event = _event_request(request.body)
        event_type = event.get("type")
        handlers: tuple[Handler, ...] = ()
        if isinstance(event_type, str) and event_type != "*":
            handlers += plugin.event_handlers.get(event_type, ())
        handlers += plugin.event_handlers.get("*", ())
        event_id = event.get("id")
        ctx = state.context(request_id=event_id if isinstance(event_id, str) else None)
        for handler in handlers:
            try:
                await state.run(handler, event, ctx)
            except PluginError as exc:
                raise _Failure.of(exc) from exc
            except Exception as exc:
                log.exception("event handler for %r of %s failed", event_type, plugin.id)
                raise _Failure("handler_error", _message(exc)) from exc
        return 200, _OK, None

    async def post_shutdown(request: _Request) -> _Answer:
        first = not state.shutting_down
        state.shutting_down = True
        # A repeated /shutdown (e.g. a retry after a lost answer) must not rerun the handler.
        if first and plugin.shutdown_handler is not None:
            try:
                await state.run(plugin.shutdown_handler, state.context())
            except Exception as exc:
                log.exception("on_shutdown of %s failed", plugin.id)
                # Exit anyway: the orchestrator wants the container gone either way.
                status, content = _error("shutdown_failed", _message(exc))
                return status, content, state.request_exit
        return 200, _OK, state.request_exit

    return PluginApp(
        state,
        call_token=call_token,
        endpoints={
            ("GET", f"{BASE_PATH}/health"): get_health,
            ("POST", f"{BASE_PATH}/initialize"): post_initialize,
            ("POST", _EXTENSIONS): post_extension,
            ("POST", f"{BASE_PATH}/events"): post_event,
            ("POST", f"{BASE_PATH}/shutdown"): post_shutdown,
        },
    )


async def _call_extension(state: _State, raw: bytes, point: str, name: str, fn: Handler) -> bytes:
    payload, request_id, deadline_ms = _extension_request(raw)
    if deadline_ms is not None and deadline_ms <= 0:
        raise _Failure("deadline_exceeded", "deadline already passed when the call arrived")
    ctx = state.context(request_id, deadline_ms)
    deadline = asyncio.timeout(None if deadline_ms is None else deadline_ms / 1000)
    try:
        async with deadline:
            output = await state.run(fn, payload, ctx)
    except PluginError as exc:
        raise _Failure.of(exc) from exc
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            raise _Failure(
                "deadline_exceeded", f"{point}/{name} did not finish within {deadline_ms} ms"
            ) from None
        # The traceback goes to the container log, never to the caller.
        log.exception("extension %s/%s failed (request %s)", point, name, ctx.request_id)
        raise _Failure("handler_error", _message(exc)) from exc
    if callable(getattr(output, "model_dump", None)):  # a pydantic model, without importing it
        output = output.model_dump(mode="json")
    try:
        return _dumps({"output": output})
    except (TypeError, ValueError) as exc:
        raise _Failure("handler_error", f"output is not JSON serialisable: {exc}") from exc


def _json_object(raw: bytes, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    if empty_ok and not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _Failure("bad_request", f"invalid {what}: body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _Failure("bad_request", f"invalid {what}: body must be a JSON object")
    return data


def _bad(what: str, problem: str) -> _Failure:
    return _Failure("bad_request", f"invalid {what}: {problem}")


def _optional_str(value: Any, what: str, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _bad(what, f"{field} must be a string or null")


def _extension_request(raw: bytes) -> tuple[Any, str, int | None]:
    """ExtensionRequest -> (input, request_id, deadline_ms)."""
    what = "ExtensionRequest"
    data = _json_object(raw, what)
    if "input" not in data:
        raise _bad(what, "input is required")
    context = data.get("context")
    if not isinstance(context, dict):
        raise _bad(what, "context must be an object")
    request_id = context.get("request_id")
    if not isinstance(request_id, str):
        raise _bad(what, "context.request_id must be a string")
    deadline_ms = context.get("deadline_ms")
    if isinstance(deadline_ms, float) and deadline_ms.is_integer():
        deadline_ms = int(deadline_ms)
    if deadline_ms is not None and (
        isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int)
    ):
        raise _bad(what, "context.deadline_ms must be an integer or null")
    return data["input"], request_id, deadline_ms


def _initialize_request(raw: bytes) -> dict[str, Any]:
    what = "InitializeRequest"
    data = _json_object(raw, what, empty_ok=True)
    config = data.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _bad(what, "config must be an object")
    host = data.get("host")
    if host is None:
        host = {}
    if not isinstance(host, dict):
        raise _bad(what, "host must be an object")
    permissions = data.get("permissions")
    if permissions is None:
        permissions = []
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise _bad(what, "permissions must be a list of strings")
    return {
        "config": config,
        "host_url": _optional_str(host.get("url"), what, "host.url"),
        "host_token": _optional_str(host.get("token"), what, "host.token"),
        "permissions": tuple(permissions),
    }


def _event_request(raw: bytes) -> dict[str, Any]:
    event = _json_object(raw, "EventRequest").get("event")
    if not isinstance(event, dict):
        raise _bad("EventRequest", "event must be an object")
    return event


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


_OK = _dumps({"status": "ok"})


def _error(
    code: str, message: str, status: int | None = None, details: Any = None
) -> tuple[int, bytes]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return status or ERROR_CODES.get(code, 500), _dumps({"error": error})


def _env_concurrency() -> int:
    raw = os.environ.get("SUMMIT_PLUGIN_CONCURRENCY", "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"SUMMIT_PLUGIN_CONCURRENCY must be an integer, got {raw!r}") from None


# --------------------------------------------------------------------------- metadata


def resolve_metadata(plugin: Plugin, manifest_path: str | None = None) -> Plugin:
    """Fill a missing id/version (and name/description) from the manifest JSON file.

    The file is ``manifest_path``, else ``SUMMIT_PLUGIN_MANIFEST``, else
    ``/summit/plugin.json``. Raises ValueError when id or version stays unknown.
    """
    if plugin.id and plugin.version:
        return plugin
    path = manifest_path or os.environ.get("SUMMIT_PLUGIN_MANIFEST") or DEFAULT_MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"plugin id/version not set in the builder and manifest {path} is unreadable: {exc}"
        ) from None
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest {path} must be a JSON object")

    def pick(key: str) -> str | None:
        found = manifest.get(key)
        return getattr(plugin, key) or (found if isinstance(found, str) and found else None)

    plugin_id, version = pick("id"), pick("version")
    if not plugin_id or not version:
        raise ValueError(f"manifest {path} lacks a string 'id' and 'version'")
    return dataclasses.replace(
        plugin,
        id=plugin_id,
        version=version,
        name=pick("name"),
        description=pick("description"),
    )


# --------------------------------------------------------------------------- serving


def parse_listen(listen: str) -> tuple[Literal["tcp"], str, int] | tuple[Literal["unix"], str]:
    """``tcp://HOST:PORT`` -> ("tcp", host, port); ``unix:///abs/path`` -> ("unix", path)."""
    if listen.startswith("unix://"):
        path = listen[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"unix listen address needs an absolute path: {listen!r}")
        return ("unix", path)
    if listen.startswith("tcp://"):
        host, sep, port = listen[len("tcp://") :].rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:8080
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return ("tcp", host, int(port))
    raise ValueError(f"listen address must be tcp://HOST:PORT or unix:///PATH, got {listen!r}")


def serve(plugin: Plugin, listen: str = DEFAULT_LISTEN, *, call_token: str | None = None) -> None:
    """Serve ``plugin`` until ``/shutdown`` or SIGTERM/SIGINT; returns normally in both cases.

    On TCP the calls must carry ``call_token`` (default: ``SUMMIT_PLUGIN_TOKEN``); without
    one the plugin answers anyone who can reach the port, and says so in its log. A unix
    socket needs none: only the orchestrator can reach its folder."""
    import uvicorn  # here, not at module level: only serving needs it

    address = parse_listen(listen)
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    token = call_token_for(address[0], call_token)
    app = create_app(plugin, on_exit=stop, call_token=token)
    options: dict[str, Any] = {}
    if address[0] == "tcp":
        options = {"host": address[1], "port": address[2]}
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,  # keep the process's own logging setup
        server_header=False,
        proxy_headers=False,
        **options,
    )
    server = uvicorn.Server(config)
    sockets = [_bind_unix(address[1])] if address[0] == "unix" else None
    restore = _quiet_termination()
    try:
        server.run(sockets=sockets)
    finally:
        # Threads of handlers abandoned at their deadline are not waited for.
        app.state.threads.shutdown(wait=False, cancel_futures=True)
        restore()
        if address[0] == "unix":
            _unlink(address[1])


def call_token_for(kind: str, given: str | None = None) -> str | None:
    """The token calls must carry on a listener of ``kind`` ("tcp" or "unix")."""
    if kind != "tcp":
        return None
    token = given if given is not None else os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        log.warning(
            "listening on TCP without %s: any caller that reaches this port is served",
            TOKEN_ENV,
        )
        return None
    return token


def _bind_unix(path: str) -> socket.socket:
    _unlink(path)  # a socket file left by a killed predecessor would make bind fail
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # The orchestrator connects as another user than the plugin's non-root one.
        os.chmod(path, 0o666)
    except BaseException:
        sock.close()
        raise
    return sock


def _unlink(path: str) -> None:
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _quiet_termination() -> Callable[[], None]:
    """Make a graceful SIGTERM/SIGINT end the process with status 0.

    uvicorn re-raises the captured signal after its graceful shutdown, which with the default
    handlers would kill the process (143) or raise KeyboardInterrupt; a container that was
    asked to stop and did so cleanly should exit 0.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    originals = {
        sig: signal.signal(sig, lambda signum, frame: None)
        for sig in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for sig, handler in originals.items():
            signal.signal(sig, handler)

    return restore


def load_entrypoint(spec: str) -> Plugin:
    """Import ``module:object`` (working directory first on sys.path) and return the Plugin."""
    module_name, sep, attr = spec.strip().partition(":")
    if not spec.strip():
        raise EntrypointError("SUMMIT_PLUGIN_ENTRYPOINT is not set (expected module:object)")
    if not sep or not module_name or not attr:
        raise EntrypointError(f"SUMMIT_PLUGIN_ENTRYPOINT must be module:object, got {spec!r}")
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise EntrypointError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EntrypointError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Plugin | PluginBuilder) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise EntrypointError(f"{spec} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, PluginBuilder):
        obj = obj.build()
    if not isinstance(obj, Plugin):
        raise EntrypointError(f"{spec} is a {type(obj).__name__}, not a summit_sdk Plugin")
    return obj


def main() -> None:
    level = os.environ.get("SUMMIT_PLUGIN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    listen = os.environ.get("SUMMIT_PLUGIN_LISTEN") or DEFAULT_LISTEN
    try:
        parse_listen(listen)
        plugin = resolve_metadata(load_entrypoint(os.environ.get("SUMMIT_PLUGIN_ENTRYPOINT", "")))
    except (EntrypointError, ValueError) as exc:
        one_line = " ".join(str(exc).split())
        print(f"summit_sdk.runtime: error: {one_line}", file=sys.stderr)
        sys.exit(2)
    log.info("serving plugin %s %s on %s", plugin.id, plugin.version, listen)
    serve(plugin, listen)


if __name__ == "__main__":
    main()
