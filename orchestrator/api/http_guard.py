"""HTTP/1.1 with limits a hostile client cannot talk its way around, for every listener.

Hand-written because uvicorn (0.55) with httptools has none of them: it reads a request head
of any size for as long as the client keeps sending it, it never closes a connection that has
not sent a request yet (its keep-alive timer starts only after a first response, and any byte
received stops it), and it caps nothing per listener (``limit_concurrency`` answers 503 to
requests but keeps every connection and its file descriptor). Its one head limit,
``h11_max_incomplete_event_size``, applies to the pure-Python h11 protocol only.

:class:`GuardedHttpToolsProtocol` is uvicorn's httptools protocol with three additions:

* a cap on the request head (request line and headers): the bytes received while a head is
  incomplete are counted, and a head over the cap is answered 431 and the connection closed;
* a deadline for a complete head, from the connection's start and from the first byte that
  arrives when no request is in flight (the next head, or what is left of a body the app
  answered without reading): then 408 if a head was begun, and the connection is closed.
  An idle connection between requests gets uvicorn's keep-alive timeout;
* a cap on the open connections of one listener: one more is closed as soon as it is
  accepted, before anything is read from it.

The limits are bound per listener by :meth:`HttpLimits.protocol` (a subclass per call), so the
admin port and each plugin's host socket carry their own values and counters. The common path
costs little: one timer per connection (none per request when a head arrives in one read),
a few more Python calls per request, and the head is measured from its parsed parts only when
the bytes received could hold more than the cap.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from orchestrator.config import Settings

__all__ = ["GuardedHttpToolsProtocol", "HttpLimits", "raise_open_files_limit"]

log = logging.getLogger(__name__)

DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEAD_TIMEOUT_S = 5.0
DEFAULT_KEEP_ALIVE_S = 5
# One warning per listener per this many seconds, however hard it is hammered.
INCIDENT_LOG_INTERVAL_S = 60.0

_REASONS = {
    408: b"Request head not received in time.",
    431: b"Request head too large.",
}


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools where it stands."""


class _Incidents:
    """Counts what one listener refused and logs it, at most once per interval."""

    def __init__(self, listener: str, interval_s: float = INCIDENT_LOG_INTERVAL_S) -> None:
        self.listener = listener
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self.logged_at: float | None = None

    def note(self, what: str, now: float) -> None:
        self.counts[what] += 1
        if self.logged_at is None or now - self.logged_at >= self.interval_s:
            summary = ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items()))
            log.warning("%s refused: %s", self.listener, summary)
            self.counts.clear()
            self.logged_at = now


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head cap, a head deadline and a connection cap.

    Use a subclass from :meth:`HttpLimits.protocol`; the class attributes are its limits.
    """

    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEAD_BYTES
    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S
    max_connections: ClassVar[int | None] = None
    incidents: ClassVar[_Incidents] = _Incidents("HTTP listener")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A head is "open" from the end of the previous message (or the connection's start)
        # to its headers-complete. ``_head_bytes`` counts the reads that arrived while it was
        # open; ``_head_exact`` is False when the head began inside a read that was not counted
        # (pipelining), so its size is then measured from the parsed head instead.
        self._head_open = True
        self._head_bytes = 0
        self._head_exact = True
        self._read_counted = True
        self._head_timer: asyncio.TimerHandle | None = None

    # -- connections ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self.max_connections
        if cap is not None and len(self.connections) >= cap:
            # Not registered with the server, never read from; its fd goes on the next turn.
            self.transport = transport
            transport.close()
            self.incidents.note(f"connections over the cap of {cap}", self.loop.time())
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    # -- reading --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, plus the head accounting: its error handling cannot be
        # reused, as it answers 400 to every parser error, ours included.
        self._unset_keepalive_if_required()
        self._read_counted = self._head_open
        if self._head_open:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.transport.is_closing():
            return
        if self._head_open and self._head_bytes > self.max_head_bytes:
            self._refuse(431)
        elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            # No request in flight, so these bytes are (part of) the next head, or the rest of
            # a body the app answered without reading: either way the next head has to be
            # complete in time. While a request is in flight uvicorn's keep-alive timer starts
            # once it is answered.
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._read_counted:
            self._head_exact = False

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_head_timer()
        over = self._head_bytes > self.max_head_bytes or not self._head_exact
        if over and self._parsed_head_size() > self.max_head_bytes:
            raise _HeadTooLarge
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next head starts here, inside a read that was counted (if at all) for this one.
        self._head_open = True
        self._head_bytes = 0
        self._head_exact = True
        self._read_counted = False

    def _parsed_head_size(self) -> int:
        # Request line and header lines as sent, give or take optional whitespace.
        size = len(self.parser.get_method()) + len(self.url) + len(b"  HTTP/1.1\r\n\r\n")
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    # -- refusing -------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_open and self._head_bytes:
            self._refuse(408)
        else:
            self.transport.close()  # no request begun: there is nothing to answer

    def _refuse(self, status: int) -> None:
        self._cancel_head_timer()
        self.incidents.note(f"requests answered {status}", self.loop.time())
        if self.cycle is None or self.cycle.response_complete:
            reason = _REASONS[status]
            parts = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                parts += [name, b": ", value, b"\r\n"]
            parts += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(reason),
                b"connection: close\r\n\r\n",
                reason,
            ]
            self.transport.write(b"".join(parts))
        # else a response is still going out on this connection: ours would corrupt it.
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one listener; ``uvicorn_options`` gives what uvicorn.Config needs."""

    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    max_connections: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, max_connections: int | None) -> HttpLimits:
        return cls(
            max_head_bytes=settings.http_max_head_bytes,
            head_timeout_s=settings.http_head_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
            max_connections=max_connections,
        )

    def protocol(self, listener: str) -> type[GuardedHttpToolsProtocol]:
        """A protocol class bound to these limits, with its own incident log for ``listener``."""
        limits = self

        class Bound(GuardedHttpToolsProtocol):
            max_head_bytes = limits.max_head_bytes
            head_timeout_s = limits.head_timeout_s
            max_connections = limits.max_connections
            incidents = _Incidents(listener)

        Bound.__qualname__ = Bound.__name__ = "GuardedHttpToolsProtocol"
        return Bound

    def uvicorn_options(self, listener: str) -> dict[str, Any]:
        return {"http": self.protocol(listener), "timeout_keep_alive": self.keep_alive_s}


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft open-files limit to its hard limit: (soft before, soft now).

    Every plugin container gets a lower limit of its own (``SUMMIT_NOFILE_LIMIT``), and each
    plugin's connections to the host API are capped, so no plugin can use up what the others
    and the admin API need.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("open-files limit stays at %d (hard limit %d): %s", soft, hard, exc)
        return soft, soft
    return soft, hard
