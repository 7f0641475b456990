"""The broker: routes extension calls to the current container of each ACTIVE plugin.

Routes are swapped atomically on reload: new calls go to the new container at once, and the
old container is stopped only after its in-flight calls have finished (``wait_drained``).
One keep-alive connection pool per endpoint is kept for the life of the route.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.broker.client import PluginCallError, base_url_for, transport_for
from orchestrator.domain.errors import Conflict, InvalidInput, NotFound, SummitError
from orchestrator.domain.manifest import Extension, ExtensionPoint


class PluginTimeout(SummitError):
    status_code = 504
    code = "plugin_timeout"


@dataclass(frozen=True)
class Route:
    plugin_id: str
    version: str
    endpoint: str
    extensions: tuple[Extension, ...]
    timeout_ms: int = 30000


@dataclass
class _Pool:
    client: httpx.AsyncClient
    inflight: int = 0
    retired: bool = False
    idle: threading.Event = field(default_factory=threading.Event)


class Broker:
    def __init__(self, *, max_response_bytes: int = 1024 * 1024) -> None:
        self._routes: dict[str, Route] = {}
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_response_bytes = max_response_bytes

    # -- routing table (called from lifecycle threads) ---------------------------------------

    def set_route(self, route: Route) -> Route | None:
        with self._lock:
            old = self._routes.get(route.plugin_id)
            self._routes[route.plugin_id] = route
        return old

    def drop_route(self, plugin_id: str) -> Route | None:
        with self._lock:
            return self._routes.pop(plugin_id, None)

    def route(self, plugin_id: str) -> Route | None:
        return self._routes.get(plugin_id)

    def routes(self) -> list[Route]:
        with self._lock:
            return list(self._routes.values())

    def wait_drained(self, endpoint: str, *, timeout_s: float) -> bool:
        """Block until no call is in flight on ``endpoint``, then close its pool."""
        with self._lock:
            pool = self._pools.get(endpoint)
            if pool is None:
                return True
            pool.retired = True
            if pool.inflight == 0:
                pool.idle.set()
        drained = pool.idle.wait(timeout_s)
        with self._lock:
            self._pools.pop(endpoint, None)
        self._close_later(pool.client)
        return drained

    def _close_later(self, client: httpx.AsyncClient) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)

    # -- calls (event loop) ------------------------------------------------------------------

    def _acquire(self, endpoint: str) -> _Pool:
        with self._lock:
            pool = self._pools.get(endpoint)
            if pool is None or pool.retired:
                client = httpx.AsyncClient(
                    base_url=base_url_for(endpoint),
                    transport=transport_for(endpoint, asynchronous=True),
                    timeout=None,
                )
                pool = _Pool(client=client)
                if endpoint not in self._pools:
                    self._pools[endpoint] = pool
            pool.inflight += 1
            pool.idle.clear()
            return pool

    def _release(self, pool: _Pool) -> None:
        with self._lock:
            pool.inflight -= 1
            if pool.inflight == 0 and pool.retired:
                pool.idle.set()

    def providers(self, point: str) -> list[tuple[Route, Extension]]:
        """(route, extension) pairs for ``point``, highest priority first."""
        found = [
            (route, ext)
            for route in self.routes()
            for ext in route.extensions
            if ext.point.value == point
        ]
        found.sort(key=lambda pair: (-pair[1].priority, pair[0].plugin_id, pair[1].name))
        return found

    async def call(
        self, route: Route, ext: Extension, payload: Any, *, timeout_ms: int | None = None
    ) -> Any:
        self._loop = asyncio.get_running_loop()
        budget_ms = timeout_ms or ext.timeout_ms or route.timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        body = {
            "input": payload,
            "context": {"request_id": uuid.uuid4().hex, "deadline_ms": budget_ms},
        }
        pool = self._acquire(route.endpoint)
        try:
            try:
                r = await asyncio.wait_for(
                    pool.client.post(
                        f"/summit/v1/extensions/{ext.point.value}/{ext.name}", json=body
                    ),
                    timeout=max(0.001, deadline - time.monotonic()),
                )
            except TimeoutError:
                raise PluginTimeout(
                    f"plugin {route.plugin_id} did not answer within {budget_ms} ms",
                    details={"plugin": route.plugin_id},
                ) from None
            except httpx.TransportError as exc:
                raise PluginCallError(
                    f"plugin {route.plugin_id} could not be reached: {exc!r}",
                    details={"plugin": route.plugin_id},
                ) from None
        finally:
            self._release(pool)
        if len(r.content) > self.max_response_bytes:
            raise PluginCallError(
                f"plugin {route.plugin_id} answered more than {self.max_response_bytes} bytes",
                details={"plugin": route.plugin_id},
            )
        try:
            data = r.json()
        except ValueError:
            raise PluginCallError(
                f"plugin {route.plugin_id} answered a body that is not JSON",
                details={"plugin": route.plugin_id, "status": r.status_code},
            ) from None
        if r.status_code != 200 or not isinstance(data, dict) or "output" not in data:
            error = data.get("error") if isinstance(data, dict) else None
            raise PluginCallError(
                f"plugin {route.plugin_id} failed: "
                + (f"{error.get('code')}: {error.get('message')}" if error else f"{r.status_code}"),
                details={"plugin": route.plugin_id, "status": r.status_code, "error": error},
            )
        return data["output"]

    async def execute(
        self,
        point: str,
        payload: Any,
        *,
        mode: str = "all",
        plugins: list[str] | None = None,
        timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        if point not in {p.value for p in ExtensionPoint}:
            raise NotFound(f"unknown extension point {point!r}", code="unknown_point")
        providers = self.providers(point)
        if plugins is not None:
            active = {route.plugin_id for route, _ in providers}
            missing = [p for p in plugins if p not in active]
            if missing:
                raise Conflict(
                    f"not ACTIVE providers of {point}: {', '.join(missing)}",
                    code="not_active",
                    details={"plugins": missing},
                )
            providers = [pair for pair in providers if pair[0].plugin_id in plugins]
        if not providers:
            raise NotFound(f"no ACTIVE plugin provides {point}", code="no_provider")

        async def one(route: Route, ext: Extension, value: Any) -> dict[str, Any]:
            started = time.perf_counter()
            entry: dict[str, Any] = {"plugin": route.plugin_id, "extension": ext.name}
            try:
                entry["output"] = await self.call(route, ext, value, timeout_ms=timeout_ms)
            except SummitError as exc:
                entry["error"] = {"code": exc.code, "message": exc.message}
            entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
            return entry

        if mode == "all":
            results = await asyncio.gather(*(one(r, e, payload) for r, e in providers))
            return {"mode": mode, "results": list(results)}
        if mode in ("pipeline", "first"):
            steps: list[dict[str, Any]] = []
            value = payload
            for route, ext in providers:
                entry = await one(route, ext, value)
                steps.append(entry)
                if mode == "first" and "output" in entry:
                    return {"mode": mode, "output": entry["output"], "results": steps}
                if mode == "pipeline":
                    if "error" in entry:
                        return {"mode": mode, "failed_at": route.plugin_id, "results": steps}
                    value = entry["output"]
            if mode == "first":
                return {"mode": mode, "failed_at": None, "results": steps}
            return {"mode": mode, "output": value, "results": steps}
        raise InvalidInput(
            f"unknown mode {mode!r}", details={"allowed": ["all", "pipeline", "first"]}
        )

    async def aclose(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            await pool.client.aclose()
