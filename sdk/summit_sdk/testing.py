"""Test a plugin in-process, without Docker: :class:`PluginTestClient` and :class:`FakeHost`.

.. code-block:: python

    from summit_sdk.testing import PluginTestClient

    def test_notify(plugin):
        with PluginTestClient(plugin, permissions=["events:publish"]) as client:
            assert client.call("workflow", "notify", {"action": "send"})["status"] == "ok"
            assert client.host.published[0]["type"] == "notify.sent"

The plugin runs in the real runtime (``create_app``), so routing, validation, deadlines and
error answers are those of production. ``ctx.host`` talks to a :class:`FakeHost`: the host API
of ``sdk/README.md`` kept in memory, which records every call and refuses (403) what the granted
permissions do not cover, like the orchestrator does.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

with warnings.catch_warnings():
    # Starlette asks for its own HTTP client one day; httpx is what it supports today and what
    # the plugin's host client uses. Authors should not see that note on every test run.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from summit_sdk.builder import Plugin, PluginBuilder
from summit_sdk.host import HOST_API, HOST_BASE_PATH
from summit_sdk.runtime import create_app
from summit_sdk.spec import BASE_PATH

__all__ = [
    "FakeHost",
    "HostCall",
    "InvalidConfig",
    "PluginCallError",
    "PluginTestClient",
]

HOST_URL = "http://summit-host.test"
HOST_TOKEN = "test-host-token"

Dependency = Callable[[str, str, Any], Any]
"""``fn(point, name, input) -> output`` standing in for a dependency plugin."""

HttpHandler = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]
"""``fn(method, url, headers, body) -> (status, headers, body)``: the internet, faked."""


@dataclass(frozen=True)
class HostCall:
    """One request the plugin made to the host API, and how the host answered."""

    operation: str
    method: str
    path: str
    status: int
    body: Any = None


class PluginCallError(Exception):
    """The plugin answered an error: ``status``, ``code``, ``message`` and ``details``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class _HostFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeHost(httpx.BaseTransport):
    """The host API in memory, as an httpx transport (so ``ctx.host`` uses it unchanged).

    State you may set up or inspect: ``data`` (``{collection: {key: value}}``), ``kv``,
    ``blobs``, ``secrets``, ``published`` (events), ``calls`` (every :class:`HostCall`).
    ``storage_quota_bytes`` bounds kv + blobs (413 ``storage_quota_exceeded`` beyond it).
    Egress: ``allowed_hosts`` (None: any) and :meth:`add_http_response` / ``http_handler``.
    Dependencies: :meth:`add_dependency`.
    """

    def __init__(
        self,
        permissions: tuple[str, ...] | list[str] = (),
        *,
        token: str = HOST_TOKEN,
        secrets: dict[str, str] | None = None,
        storage_quota_bytes: int = 100 * 1024 * 1024,
        allowed_hosts: list[str] | None = None,
    ) -> None:
        self.permissions = set(permissions)
        self.token = token
        self.data: dict[str, dict[str, Any]] = {}
        self.kv: dict[str, Any] = {}
        self.blobs: dict[str, bytes] = {}
        self.secrets: dict[str, str] = dict(secrets or {})
        self.published: list[dict[str, Any]] = []
        self.calls: list[HostCall] = []
        self.storage_quota_bytes = storage_quota_bytes
        self.allowed_hosts = allowed_hosts
        self.http_handler: HttpHandler | None = None
        self._http_responses: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = {}
        self._dependencies: dict[str, Dependency] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- set-up helpers

    def add_dependency(self, plugin_id: str, target: Plugin | PluginBuilder | Dependency) -> None:
        """Serve ``invoke(plugin_id, ...)`` with a built plugin or a ``fn(point, name, input)``."""
        if isinstance(target, PluginBuilder):
            target = target.build()
        if isinstance(target, Plugin):
            client = PluginTestClient(target)

            def call(point: str, name: str, input: Any) -> Any:
                return client.call(point, name, input)

            self._dependencies[plugin_id] = call
        else:
            self._dependencies[plugin_id] = target

    def add_http_response(
        self,
        url: str,
        body: bytes | str | Any = b"",
        *,
        status: int = 200,
        method: str = "GET",
        content_type: str | None = None,
    ) -> None:
        """Answer ``method url`` through the egress proxy; non-bytes bodies are sent as JSON."""
        if isinstance(body, str):
            content, ctype = body.encode(), content_type or "text/plain"
        elif isinstance(body, bytes):
            content, ctype = body, content_type or "application/octet-stream"
        else:
            content, ctype = json.dumps(body).encode(), content_type or "application/json"
        self._http_responses[(method.upper(), url)] = (status, {"content-type": ctype}, content)

    def storage_used(self) -> int:
        kv = sum(len(json.dumps(v).encode()) + len(k) for k, v in self.kv.items())
        return kv + sum(len(v) + len(k) for k, v in self.blobs.items())

    # ----------------------------------------------------------------- transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # raw_path: escaped "/" in a key must not split it into two path segments.
        path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        content = request.read()
        operation, params = _route(request.method, path)
        body: Any = None
        try:
            if operation is None:
                raise _HostFailure(404, "not_found", f"no host API route {request.method} {path}")
            if request.headers.get("authorization") != f"Bearer {self.token}":
                raise _HostFailure(401, "unauthorized", "missing or wrong host token")
            permission = HOST_API[operation][2]
            if permission not in self.permissions:
                raise _HostFailure(
                    403, "permission_denied", f"{operation} needs the permission {permission!r}"
                )
            if content and request.headers.get("content-type", "").startswith("application/json"):
                body = json.loads(content)
            with self._lock:
                status, answer = self._serve(operation, params, body, content)
        except _HostFailure as exc:
            self._record(operation or "unknown", request, exc.status, body)
            return httpx.Response(
                exc.status, json={"error": {"code": exc.code, "message": exc.message}}
            )
        self._record(operation, request, status, body)
        if isinstance(answer, bytes):
            return httpx.Response(
                status, content=answer, headers={"content-type": "application/octet-stream"}
            )
        return httpx.Response(status, json=answer)

    def _record(self, operation: str, request: httpx.Request, status: int, body: Any) -> None:
        self.calls.append(HostCall(operation, request.method, request.url.path, status, body))

    def _serve(
        self, operation: str, params: dict[str, str], body: Any, content: bytes
    ) -> tuple[int, Any]:
        if operation == "data.get":
            records = self.data.get(params["collection"], {})
            if params["key"] not in records:
                raise _HostFailure(404, "not_found", "no such record")
            return 200, {"value": records[params["key"]]}
        if operation == "data.put":
            self.data.setdefault(params["collection"], {})[params["key"]] = body["value"]
            return 200, {"status": "ok"}
        if operation == "data.query":
            return 200, self._query(params["collection"], body or {})
        if operation in ("storage.get", "storage.get_blob"):
            store: dict[str, Any] = self.kv if operation == "storage.get" else self.blobs
            if params["key"] not in store:
                raise _HostFailure(404, "not_found", "no such key")
            value = store[params["key"]]
            return 200, value if isinstance(value, bytes) else {"value": value}
        if operation in ("storage.put", "storage.put_blob"):
            return self._store(operation, params["key"], body, content)
        if operation in ("storage.delete", "storage.delete_blob"):
            (self.kv if operation == "storage.delete" else self.blobs).pop(params["key"], None)
            return 200, {"status": "ok"}
        if operation == "events.publish":
            event = {
                "id": f"evt-{next(self._ids)}",
                "type": body["type"],
                "payload": body["payload"],
            }
            self.published.append(event)
            return 200, {"id": event["id"]}
        if operation == "secrets.get":
            if params["name"] not in self.secrets:
                raise _HostFailure(404, "not_found", f"no secret {params['name']!r}")
            return 200, {"name": params["name"], "value": self.secrets[params["name"]]}
        if operation == "http.request":
            return 200, self._egress(body)
        if operation == "invoke":
            dependency = self._dependencies.get(params["plugin_id"])
            if dependency is None:
                raise _HostFailure(404, "unknown_dependency", f"{params['plugin_id']} not declared")
            try:
                output = dependency(params["point"], params["name"], (body or {}).get("input"))
            except PluginCallError as exc:
                raise _HostFailure(exc.status, exc.code, exc.message) from None
            return 200, {"output": output}
        raise _HostFailure(404, "not_found", operation)

    def _query(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        where = body.get("where") or {}
        limit = int(body.get("limit") or 100)
        start = int(body.get("cursor") or 0)
        matching = [
            value
            for value in self.data.get(collection, {}).values()
            if isinstance(value, dict) and all(value.get(k) == v for k, v in where.items())
        ]
        page = matching[start : start + limit]
        more = start + limit < len(matching)
        return {"records": page, "next_cursor": str(start + limit) if more else None}

    def _store(self, operation: str, key: str, body: Any, content: bytes) -> tuple[int, Any]:
        blob = operation == "storage.put_blob"
        old = self.blobs.get(key) if blob else self.kv.get(key)
        if blob:
            self.blobs[key] = content
        else:
            self.kv[key] = body["value"]
        if self.storage_used() > self.storage_quota_bytes:
            # Roll back: a refused write leaves storage as it was.
            target: dict[str, Any] = self.blobs if blob else self.kv
            if old is None:
                target.pop(key, None)
            else:
                target[key] = old
            raise _HostFailure(
                413, "storage_quota_exceeded", f"quota of {self.storage_quota_bytes} bytes"
            )
        return 200, {"status": "ok"}

    def _egress(self, body: dict[str, Any]) -> dict[str, Any]:
        method, url = str(body["method"]).upper(), str(body["url"])
        host = urlsplit(url).hostname or ""
        if self.allowed_hosts is not None and not host_allowed(host, self.allowed_hosts):
            raise _HostFailure(403, "host_not_allowed", f"{host!r} is not in allowed_hosts")
        payload = base64.b64decode(body.get("body") or "")
        answer = self._http_responses.get((method, url))
        if answer is None and self.http_handler is not None:
            answer = self.http_handler(method, url, dict(body.get("headers") or {}), payload)
        if answer is None:
            raise _HostFailure(502, "upstream_unreachable", f"no fake answer for {method} {url}")
        status, headers, content = answer
        return {"status": status, "headers": headers, "body": base64.b64encode(content).decode()}


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """``network.allowed_hosts`` matching: exact names, and ``*.example.com`` for subdomains."""
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def _route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    if not path.startswith(HOST_BASE_PATH + "/"):
        return None, {}
    parts = path[len(HOST_BASE_PATH) :].split("/")
    for operation, (op_method, template, _) in HOST_API.items():
        pattern = template.split("/")
        if op_method != method or len(pattern) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = unquote(got)
            elif want != got:
                break
        else:
            return operation, params
    return None, {}


class PluginTestClient:
    """Run ``plugin`` in the real runtime, in-process, against a :class:`FakeHost`.

    ``permissions`` default to those the plugin requests. The plugin is initialized at once
    with ``config``; :meth:`close` (or leaving the ``with`` block) runs its shutdown.
    """

    def __init__(
        self,
        plugin: Plugin | PluginBuilder,
        *,
        config: dict[str, Any] | None = None,
        permissions: tuple[str, ...] | list[str] | None = None,
        host: FakeHost | None = None,
        secrets: dict[str, str] | None = None,
        allowed_hosts: list[str] | None = None,
        initialize: bool = True,
    ) -> None:
        if isinstance(plugin, PluginBuilder):
            plugin = plugin.build()
        self.plugin = plugin
        granted = tuple(plugin.permissions if permissions is None else permissions)
        self.permissions = granted
        self.host = host or FakeHost(granted, secrets=secrets, allowed_hosts=allowed_hosts)
        self.http = TestClient(
            create_app(plugin, host_transport=self.host), raise_server_exceptions=False
        )
        self._ids = itertools.count(1)
        self._closed = False
        if initialize:
            self.initialize(config or {})

    def initialize(self, config: dict[str, Any] | None = None) -> None:
        """Initialize the plugin. ``config`` is first checked against the plugin's config
        schema, as the orchestrator does at install (needs ``jsonschema``, which the SDK's
        ``cli`` extra installs): a config the orchestrator would refuse fails here too."""
        _check_config(self.plugin, config or {})
        body = {
            "config": config or {},
            "host": {"url": HOST_URL, "token": self.host.token},
            "permissions": list(self.permissions),
        }
        self._check(self.http.post(f"{BASE_PATH}/initialize", json=body))

    def health(self) -> Any:
        return self._check(self.http.get(f"{BASE_PATH}/health"))

    def call_raw(
        self, point: str, name: str, input: Any, *, deadline_ms: int | None = None
    ) -> httpx.Response:
        context = {"request_id": f"test-{next(self._ids)}", "deadline_ms": deadline_ms}
        return self.http.post(
            f"{BASE_PATH}/extensions/{point}/{name}", json={"input": input, "context": context}
        )

    def call(self, point: str, name: str, input: Any, *, deadline_ms: int | None = None) -> Any:
        """The extension's output; raises :class:`PluginCallError` on an error answer."""
        return self._check(self.call_raw(point, name, input, deadline_ms=deadline_ms))["output"]

    def event(self, type: str, payload: Any = None, **fields: Any) -> None:
        """Deliver an event ``{id, type, payload, ...}`` to the plugin's handlers."""
        event = {"id": f"evt-test-{next(self._ids)}", "type": type, "payload": payload, **fields}
        self._check(self.http.post(f"{BASE_PATH}/events", json={"event": event}))

    def shutdown(self) -> None:
        self._closed = True
        self._check(self.http.post(f"{BASE_PATH}/shutdown"))

    def close(self) -> None:
        if not self._closed:
            self.shutdown()
        self.http.close()

    def __enter__(self) -> PluginTestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise PluginCallError(response.status_code, "bad_response", response.text) from None
        if response.status_code >= 400 or (isinstance(body, dict) and "error" in body):
            error = (body.get("error") if isinstance(body, dict) else None) or {}
            raise PluginCallError(
                response.status_code,
                str(error.get("code", "unknown")),
                str(error.get("message", "")),
                error.get("details"),
            )
        return body


class InvalidConfig(ValueError):
    """The test's config does not match the plugin's config schema."""


def _check_config(plugin: Plugin, config: dict[str, Any]) -> None:
    if plugin.config_schema is None:
        return
    try:
        import jsonschema
    except ImportError:  # without the cli extra, only the orchestrator checks
        return
    validator = jsonschema.Draft202012Validator(dict(plugin.config_schema))
    errors = [
        "config" + "".join(f"[{p!r}]" for p in e.absolute_path) + f": {e.message}"
        for e in validator.iter_errors(config)
    ]
    if errors:
        raise InvalidConfig("; ".join(errors))
