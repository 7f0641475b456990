"""Routes of the host API; each one authenticates the plugin and checks one permission.

The plugin's identity is not taken from the request: the listener of its own socket stamps
it on the ASGI scope (``summit.plugin_id``), and its token must have been issued to that
plugin. Paths, bodies and answers follow the SDK's ``HOST_API`` table.

The service's database work runs on a thread pool of the host API's own, reached with
``run_in_executor`` rather than anyio's worker hand-off (Starlette's ``run_in_threadpool``),
which costs more per trip. A call without a body is authorized and served in one trip to that
pool; a call with one is authorized before its body is read. Together that took about 0.1 ms
of the orchestrator's ~1.8 ms of CPU per storage read; most of the rest is FastAPI's request
handling and the authorization's database reads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from orchestrator.api.errors import install_error_handlers
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import BadRequest, TooLarge
from orchestrator.services.host import Caller, HostService

__all__ = ["PLUGIN_SCOPE_KEY", "create_host_app"]

PLUGIN_SCOPE_KEY = "summit.plugin_id"
PREFIX = "/host/v1"
HOST_THREADS = 16  # database calls of the host API in flight at once, across all plugins

T = TypeVar("T")


def create_host_app(service: HostService, *, max_body_bytes: int) -> FastAPI:
    app = FastAPI(title="Summit host API", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    threads = ThreadPoolExecutor(max_workers=HOST_THREADS, thread_name_prefix="summit-host")

    async def blocking(fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(threads, functools.partial(fn, *args))

    def credentials(request: Request) -> tuple[str, str | None]:
        plugin_id = request.scope.get(PLUGIN_SCOPE_KEY)
        if not plugin_id:  # only reachable through a plugin's own listener
            raise BadRequest("this listener serves no plugin")
        auth = request.headers.get("authorization", "")
        return plugin_id, auth[7:] if auth[:7].lower() == "bearer " else None

    async def caller(request: Request, operation: str) -> Caller:
        return await blocking(service.authorize, *credentials(request), operation)

    async def authorized(request: Request, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(caller, *args)`` for an authorized caller, in one trip to the pool."""
        plugin_id, token = credentials(request)

        def run() -> T:
            return fn(service.authorize(plugin_id, token, operation), *args)

        return await blocking(run)

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise TooLarge(f"the request body is over {max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise TooLarge(f"the request body is over {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await body(request)
        try:
            # The body is one level: what it holds gets the same depth as any other JSON.
            parsed = jsonlimits.decode(raw, max_depth=jsonlimits.MAX_DEPTH + 1) if raw else {}
        except jsonlimits.TooDeep:
            raise jsonlimits.too_deep("the body") from None
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise BadRequest("the body must be a JSON object")
        return parsed

    ok = {"status": "ok"}

    @app.get(PREFIX + "/data/{collection}/{key:path}")
    async def data_get(collection: str, key: str, request: Request) -> Any:
        return {"value": await authorized(request, "data.get", service.data_get, collection, key)}

    @app.put(PREFIX + "/data/{collection}/{key:path}")
    async def data_put(collection: str, key: str, request: Request) -> Any:
        who = await caller(request, "data.put")
        data = await json_body(request)
        if "value" not in data:
            raise BadRequest("the body needs 'value'")
        await blocking(service.data_put, who, collection, key, data["value"])
        return ok

    @app.post(PREFIX + "/data/{collection}/query")
    async def data_query(collection: str, request: Request) -> Any:
        who = await caller(request, "data.query")
        data = await json_body(request)
        where, limit, cursor = data.get("where") or {}, data.get("limit", 100), data.get("cursor")
        if not isinstance(where, dict) or not isinstance(limit, int) or isinstance(limit, bool):
            raise BadRequest("'where' must be an object and 'limit' an integer")
        if cursor is not None and not isinstance(cursor, str):
            raise BadRequest("'cursor' must be a string")
        return await blocking(service.data_query, who, collection, where, limit, cursor)

    for kind, segment, suffix in (("kv", "kv", ""), ("blob", "blobs", "_blob")):
        _storage_routes(
            app, service, caller, authorized, blocking, body, json_body, kind, segment, suffix
        )

    @app.post(PREFIX + "/events")
    async def publish(request: Request) -> Any:
        who = await caller(request, "events.publish")
        data = await json_body(request)
        event_type, subject = data.get("type"), data.get("subject")
        if not isinstance(event_type, str) or not event_type:
            raise BadRequest("the body needs a string 'type'")
        if subject is not None and not isinstance(subject, str):
            raise BadRequest("'subject' must be a string")
        event_id = await blocking(service.publish, who, event_type, data.get("payload"), subject)
        return {"id": event_id}

    @app.get(PREFIX + "/secrets/{name}")
    async def secret(name: str, request: Request) -> Any:
        value = await authorized(request, "secrets.get", service.secret_get, name)
        return {"name": name, "value": value}

    @app.post(PREFIX + "/http")
    async def egress(request: Request) -> Any:
        who = await caller(request, "http.request")
        return await service.egress(who, await json_body(request))

    @app.post(PREFIX + "/plugins/{plugin_id}/extensions/{point}/{name}")
    async def invoke(plugin_id: str, point: str, name: str, request: Request) -> Any:
        who = await caller(request, "invoke")
        data = await json_body(request)
        return {"output": await service.invoke(who, plugin_id, point, name, data.get("input"))}

    return app


def _storage_routes(
    app: FastAPI,
    service: HostService,
    caller: Any,
    authorized: Any,
    blocking: Any,
    body: Any,
    json_body: Any,
    kind: str,
    segment: str,
    suffix: str,
) -> None:
    path = f"{PREFIX}/storage/{segment}/{{key:path}}"

    async def get(key: str, request: Request) -> Any:
        value = await authorized(request, f"storage.get{suffix}", service.storage_get, kind, key)
        if kind == "blob":
            return Response(value, media_type="application/octet-stream")
        return JSONResponse({"value": value})

    async def put(key: str, request: Request) -> Any:
        who = await caller(request, f"storage.put{suffix}")
        if kind == "blob":
            value: Any = await body(request)
        else:
            data = await json_body(request)
            if "value" not in data:
                raise BadRequest("the body needs 'value'")
            value = data["value"]
        await blocking(service.storage_put, who, kind, key, value)
        return {"status": "ok"}

    async def delete(key: str, request: Request) -> Any:
        await authorized(request, f"storage.delete{suffix}", service.storage_delete, kind, key)
        return {"status": "ok"}

    app.add_api_route(path, get, methods=["GET"], name=f"storage_get_{kind}")
    app.add_api_route(path, put, methods=["PUT"], name=f"storage_put_{kind}")
    app.add_api_route(path, delete, methods=["DELETE"], name=f"storage_delete_{kind}")
