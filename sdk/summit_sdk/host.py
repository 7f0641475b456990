"""Client of the host API ``/host/v1`` (plugin -> orchestrator), given to handlers as ``ctx.host``.

Every method first checks the permissions the plugin was granted at initialize and raises
:class:`~summit_sdk.errors.PermissionDenied` naming the missing one, without any request. The
host checks them again (403). Paths, bodies and permissions are listed in ``HOST_API`` and in
``sdk/README.md``; the orchestrator implements the same table.

The client is synchronous (sync handlers run in worker threads); from an ``async def`` handler
call it through ``await anyio.to_thread.run_sync(...)`` when the call may be slow. The network
sits behind one httpx transport, so tests swap it (``summit_sdk.testing.FakeHost``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from summit_sdk.errors import HostError, PermissionDenied

__all__ = [
    "HOST_API",
    "HOST_BASE_PATH",
    "DataApi",
    "EventsApi",
    "HostClient",
    "HttpApi",
    "HttpResponse",
    "SecretsApi",
    "StorageApi",
]

HOST_BASE_PATH = "/host/v1"

# (method, path template, permission) of every host API operation.
HOST_API: dict[str, tuple[str, str, str]] = {
    "data.get": ("GET", "/data/{collection}/{key}", "read:data"),
    "data.put": ("PUT", "/data/{collection}/{key}", "write:data"),
    "data.query": ("POST", "/data/{collection}/query", "read:data"),
    "storage.get": ("GET", "/storage/kv/{key}", "storage"),
    "storage.put": ("PUT", "/storage/kv/{key}", "storage"),
    "storage.delete": ("DELETE", "/storage/kv/{key}", "storage"),
    "storage.get_blob": ("GET", "/storage/blobs/{key}", "storage"),
    "storage.put_blob": ("PUT", "/storage/blobs/{key}", "storage"),
    "storage.delete_blob": ("DELETE", "/storage/blobs/{key}", "storage"),
    "events.publish": ("POST", "/events", "events:publish"),
    "secrets.get": ("GET", "/secrets/{name}", "secrets:read"),
    "http.request": ("POST", "/http", "network:access"),
    "invoke": ("POST", "/plugins/{plugin_id}/extensions/{point}/{name}", "plugins:invoke"),
}

MAX_HOST_CONNECTIONS = 32
_UNIX_BASE = "http://summit-host"


@dataclass(frozen=True)
class HttpResponse:
    """An answer relayed by the egress proxy."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class HostClient:
    """``data``, ``storage``, ``events``, ``secrets``, ``http`` and :meth:`invoke`."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        permissions: tuple[str, ...] | list[str] = (),
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.permissions = frozenset(permissions)
        base = url or ""
        if base.startswith("unix://"):
            # Host API over a unix socket mounted into a network-less container.
            # The orchestrator accepts a bounded number of connections per plugin (64 by
            # default) and closes the rest at once: stay under it, queueing calls beyond.
            transport = transport or httpx.HTTPTransport(
                uds=base[len("unix://") :],
                limits=httpx.Limits(max_connections=MAX_HOST_CONNECTIONS),
            )
            base = _UNIX_BASE
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base.rstrip("/") + HOST_BASE_PATH,
            headers=headers,
            transport=transport,
            timeout=timeout,
        )
        self.data = DataApi(self)
        self.storage = StorageApi(self)
        self.events = EventsApi(self)
        self.secrets = SecretsApi(self)
        self.http = HttpApi(self)

    def invoke(self, dependency_id: str, point: str, name: str, input: Any) -> Any:
        """Call an extension of a declared dependency through the host; returns its output."""
        body = self._call(
            "invoke",
            {"plugin_id": dependency_id, "point": point, "name": name},
            json={"input": input},
        )
        return body.get("output") if isinstance(body, dict) else None

    def close(self) -> None:
        self._http.close()

    def require(self, permission: str, operation: str) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(permission, operation)

    # ----------------------------------------------------------------- plumbing

    def _call(
        self,
        operation: str,
        params: dict[str, str] | None = None,
        *,
        json: Any = None,
        content: bytes | None = None,
        missing_ok: bool = False,
        raw: bool = False,
    ) -> Any:
        method, template, permission = HOST_API[operation]
        self.require(permission, operation)
        if self.url is None:
            raise HostError(f"{operation}: no host API (the plugin was not initialized with one)")
        path = template.format(**{k: quote(v, safe="") for k, v in (params or {}).items()})
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                content=content,
                headers={"content-type": "application/octet-stream"}
                if content is not None
                else None,
            )
        except httpx.HTTPError as exc:
            raise HostError(f"{operation}: host API unreachable: {exc}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise _host_error(operation, permission, response)
        if raw:
            return response.content
        if not response.content:
            return None
        return response.json()


class DataApi:
    """Shared data: JSON records in named collections (``read:data`` / ``write:data``)."""

    def __init__(self, host: HostClient) -> None:
        self._host = host

    def get(self, collection: str, key: str) -> Any:
        """The record, or None when there is none."""
        body = self._host._call("data.get", {"collection": collection, "key": key}, missing_ok=True)
        return None if body is None else body.get("value")

    def put(self, collection: str, key: str, value: Any) -> None:
        self._host._call("data.put", {"collection": collection, "key": key}, json={"value": value})

    def query(
        self,
        collection: str,
        where: dict[str, Any] | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Records whose fields equal ``where``: ``{"records": [...], "next_cursor": str|None}``."""
        body = self._host._call(
            "data.query",
            {"collection": collection},
            json={"where": where or {}, "limit": limit, "cursor": cursor},
        )
        return dict(body)


class StorageApi:
    """This plugin's own key/value store and blobs (``storage``, within ``storage_mb``)."""

    def __init__(self, host: HostClient) -> None:
        self._host = host

    def get(self, key: str) -> Any:
        body = self._host._call("storage.get", {"key": key}, missing_ok=True)
        return None if body is None else body.get("value")

    def put(self, key: str, value: Any) -> None:
        self._host._call("storage.put", {"key": key}, json={"value": value})

    def delete(self, key: str) -> None:
        self._host._call("storage.delete", {"key": key}, missing_ok=True)

    def get_blob(self, key: str) -> bytes | None:
        body: bytes | None = self._host._call(
            "storage.get_blob", {"key": key}, missing_ok=True, raw=True
        )
        return body

    def put_blob(self, key: str, content: bytes) -> None:
        self._host._call("storage.put_blob", {"key": key}, content=bytes(content))

    def delete_blob(self, key: str) -> None:
        self._host._call("storage.delete_blob", {"key": key}, missing_ok=True)


class EventsApi:
    def __init__(self, host: HostClient) -> None:
        self._host = host

    def publish(self, type: str, payload: Any = None) -> str | None:
        """Publish an event (``events:publish``); returns the id the host gave it."""
        body = self._host._call("events.publish", json={"type": type, "payload": payload})
        return body.get("id") if isinstance(body, dict) else None


class SecretsApi:
    def __init__(self, host: HostClient) -> None:
        self._host = host

    def get(self, name: str) -> str:
        """The secret's value (``secrets:read``); HostError ``not_found`` when there is none."""
        body = self._host._call("secrets.get", {"name": name})
        return str(body["value"])


class HttpApi:
    """Egress through the orchestrator's proxy (``network:access``, ``allowed_hosts`` only)."""

    def __init__(self, host: HostClient) -> None:
        self._host = host

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
    ) -> HttpResponse:
        headers = dict(headers or {})
        body: bytes | None
        if json is not None:
            body = _json_bytes(json)
            headers.setdefault("content-type", "application/json")
        elif isinstance(content, str):
            body = content.encode()
        else:
            body = content
        answer = self._host._call(
            "http.request",
            json={
                "method": method.upper(),
                "url": url,
                "headers": headers,
                "body": base64.b64encode(body).decode() if body is not None else None,
            },
        )
        return HttpResponse(
            status_code=int(answer["status"]),
            headers={str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()},
            content=base64.b64decode(answer.get("body") or ""),
        )

    def get(self, url: str, *, headers: dict[str, str] | None = None) -> HttpResponse:
        return self.request("GET", url, headers=headers)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _host_error(operation: str, permission: str, response: httpx.Response) -> HostError:
    code, message = "host_error", response.text[:200]
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    if response.status_code == 403 and code == "permission_denied":
        return PermissionDenied(permission, operation)
    return HostError(f"{operation}: {message}", code=code, status=response.status_code)
