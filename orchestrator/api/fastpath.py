"""The broker's hot path, ahead of everything of FastAPI's own.

``POST /v1/extension-points/{point}/execute`` from a caller whose ``Bearer`` credential is the
bootstrap admin token or an operator's API token verified in the last
``SUMMIT_API_TOKEN_CACHE_S`` seconds, with a valid synchronous body, goes straight to
``ExtensionService.execute``, the service the route calls. The credential is judged by
``AdminAccess``, the route's own rule, asked only what it knows without I/O. Routing,
dependency solving and the response model took about a third of the orchestrator's CPU per
brokered call (measured with py-spy on ``bench/broker.py``); FastAPI's per-request telemetry
check and the middleware stack took another tenth, so :class:`FastPathAPI` runs the fast path
before ``FastAPI.__call__`` rather than as a middleware inside it.

Everything else falls through to the FastAPI route, which has the full rules, with the body
replayed: other credentials (or another spelling of the scheme), ``async: true``, an
oversized or invalid body, a query string, and a ``not_active`` refusal (the route tells an
unknown plugin apart from one that is not ACTIVE). Answers and errors here are the same bytes
the route would send.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.deps import access_of, extensions_of
from orchestrator.api.errors import error_body
from orchestrator.api.routes.extensions import ExecuteBody
from orchestrator.domain.errors import SummitError

__all__ = ["ExecuteFastPath", "FastPathAPI"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"/v1/extension-points/([a-z_]+)/execute")


class ExecuteFastPath:
    """ASGI: the fast path, then ``app`` for everything else.

    ``state`` is the app's state (``settings``, ``broker``, ``api_tokens``, ...); without it,
    the state of ``scope["app"]`` (as when installed as a Starlette middleware).
    """

    def __init__(self, app: ASGIApp, state: State | None = None) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("query_string")
            or (match := _PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        state = self.state if self.state is not None else scope["app"].state
        settings = state.settings
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if not _may_execute(state, scope["path"], headers.get(b"authorization", b"")) or (
            declared.isdigit() and int(declared) > settings.max_request_bytes
        ):
            await self.app(scope, receive, send)
            return
        body, complete = await _read(receive, settings.max_request_bytes)
        replay = _replayer(body, complete, receive)
        if not complete:
            await self.app(scope, replay, send)
            return
        try:
            request = ExecuteBody.model_validate_json(body or b"{}")
        except ValidationError:
            await self.app(scope, replay, send)
            return
        if request.run_async:
            await self.app(scope, replay, send)
            return
        try:
            result = await extensions_of(state).execute(
                match.group(1),
                request.input,
                mode=request.mode,
                plugins=request.plugins,
                timeout_ms=request.timeout_ms,
                explain=False,
            )
        except SummitError as exc:
            if exc.code == "not_active":  # raised before any call: the route may redo it
                await self.app(scope, replay, send)
                return
            if exc.status_code >= 500:
                log.warning("%s: %s", exc.code, exc.message)
            extra = getattr(exc, "headers", None) or {}
            await _respond(
                send, exc.status_code, error_body(exc.code, exc.message, exc.details), extra
            )
            return
        except Exception as exc:  # as the app's catch-all handler answers
            log.exception("unexpected error")
            failure = error_body("internal_error", f"unexpected {type(exc).__name__}")
            await _respond(send, 500, failure, {})
            return
        await _respond(send, 200, result, {})


def _may_execute(state: State, path: str, credential: bytes) -> bool:
    """A ``Bearer`` credential whose role :meth:`AdminAccess.authorize_now` knows without I/O
    and that may execute; anything else takes the route."""
    scheme, _, token = credential.partition(b" ")
    if scheme != b"Bearer":
        return False
    role = access_of(state).authorize_now(token.decode("latin-1"), method="POST", path=path)
    return role is not None


class FastPathAPI(FastAPI):
    """FastAPI with :class:`ExecuteFastPath` in front of its whole middleware stack."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.__dict__.get("_fast_path")
        if fast is None:
            fast = self.__dict__["_fast_path"] = ExecuteFastPath(super().__call__, self.state)
        await fast(scope, receive, send)


async def _read(receive: Receive, cap: int) -> tuple[bytes, bool]:
    """The body, or what was read of it when it passed ``cap`` (then ``complete`` is False)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replayer(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands the route what was already read, then the rest."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay


async def _respond(send: Send, status: int, content: Any, headers: dict[str, str]) -> None:
    # JSONResponse's own rendering, so the bytes match the route's.
    raw = json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    out = [
        (b"content-length", str(len(raw)).encode()),
        (b"content-type", b"application/json"),
        *((k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw})
