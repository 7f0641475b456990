"""The plugin protocol as the broker writes and reads it, and what each failure becomes.

Requests are put together as bytes: the caller's input goes in already encoded (a fan-out
encodes it once for every provider), so the SDK's pydantic models would only add a copy. An
answer is decoded within the JSON depth limit (``domain/jsonlimits.py``), and every way a call
can go wrong maps to one error of ``errors.py`` that names the plugin.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from orchestrator.broker.errors import (
    InvalidAnswer,
    PluginCallError,
    PluginRejected,
    PluginTimeout,
    PluginUnreachable,
    ResponseTooLarge,
)
from orchestrator.broker.limits import TooManyRequests
from orchestrator.broker.transport import BodyTooLarge
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import SummitError
from orchestrator.domain.manifest import Extension

__all__ = [
    "EVENTS_TARGET",
    "JSON_HEADERS",
    "call_failure",
    "decode_answer",
    "event_failure",
    "event_request",
    "extension_request",
    "extension_target",
    "refuse_event_answer",
]

JSON_HEADERS = [(b"content-type", b"application/json")]
EVENTS_TARGET = b"/summit/v1/events"


def extension_target(ext: Extension) -> bytes:
    return f"/summit/v1/extensions/{ext.point.value}/{ext.name}".encode()


def extension_request(payload: bytes, remaining_s: float) -> bytes:
    """The ExtensionRequest with ``payload`` (JSON) as its input and the time left to answer."""
    context = b'{"request_id":"%s","deadline_ms":%d}' % (
        uuid.uuid4().hex.encode(),
        int(remaining_s * 1000),
    )
    return b'{"input":' + payload + b',"context":' + context + b"}"


def event_request(event: dict[str, Any]) -> bytes:
    return json.dumps({"event": event}).encode()


def call_failure(plugin: str, exc: Exception, cap: int) -> SummitError:
    """What a transport's failure to answer an extension call becomes."""
    if isinstance(exc, TimeoutError):
        return PluginTimeout(
            f"plugin {plugin} did not answer within the deadline", details={"plugin": plugin}
        )
    if isinstance(exc, BodyTooLarge):
        return ResponseTooLarge(
            f"plugin {plugin} answered more than {cap} bytes",
            details={"plugin": plugin, "cap_bytes": cap},
        )
    # Connect, read and protocol errors share no base.
    return PluginUnreachable(
        f"plugin {plugin} could not be reached or broke the connection: {type(exc).__name__}",
        details={"plugin": plugin},
    )


def event_failure(plugin: str, exc: Exception) -> SummitError:
    """What a transport's failure to take an event becomes."""
    if isinstance(exc, TimeoutError):
        return PluginTimeout(
            f"plugin {plugin} did not take the event in time", details={"plugin": plugin}
        )
    return PluginCallError(
        f"plugin {plugin} could not be reached: {type(exc).__name__}", details={"plugin": plugin}
    )


def refuse_event_answer(plugin: str, status: int) -> None:
    """Raise unless the plugin took the event (2xx); its body says nothing more."""
    if not 200 <= status < 300:
        raise PluginCallError(
            f"plugin {plugin} answered {status} to an event", details={"plugin": plugin}
        )


def decode_answer(plugin: str, status: int, raw: bytes) -> Any:
    """The ``output`` of an ExtensionResponse, or the error its status and body stand for."""
    try:
        # One level more than the limit: the {"output": ...} envelope is the first.
        data = jsonlimits.decode(raw, max_depth=jsonlimits.MAX_DEPTH + 1)
    except jsonlimits.TooDeep:
        raise InvalidAnswer(
            f"plugin {plugin} answered JSON nested deeper than {jsonlimits.MAX_DEPTH} levels",
            details={"plugin": plugin, "status": status, "max_depth": jsonlimits.MAX_DEPTH},
        ) from None
    except ValueError:
        raise PluginCallError(
            f"plugin {plugin} answered a body that is not JSON (HTTP {status})",
            details={"plugin": plugin, "status": status},
        ) from None
    if status == 200 and isinstance(data, dict) and "output" in data:
        return data["output"]
    error = data.get("error") if isinstance(data, dict) else None
    message = (
        f"{error.get('code')}: {error.get('message')}"
        if isinstance(error, dict)
        else f"HTTP {status} without an error body"
    )
    details = {"plugin": plugin, "status": status, "error": error}
    if status == 200:
        raise PluginCallError(f"plugin {plugin} answered without 'output'", details=details)
    if status == 504:
        raise PluginTimeout(f"plugin {plugin} ran out of time: {message}", details=details)
    if status == 429:
        raise TooManyRequests(
            f"plugin {plugin} is busy: {message}",
            plugin_id=plugin,
            retry_after_s=1.0,
            code="plugin_busy",
        )
    if 400 <= status < 500:
        raise PluginRejected(f"plugin {plugin} refused the input: {message}", details=details)
    raise PluginCallError(f"plugin {plugin} failed: {message}", details=details)
