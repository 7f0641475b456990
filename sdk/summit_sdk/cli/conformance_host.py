"""A stand-in host API for ``summit-plugin verify``, served on a unix socket.

Plugins that call the host (secrets, events, egress, storage, ...) must be verifiable without
an orchestrator. This serves :class:`summit_sdk.testing.FakeHost` (the in-memory host API the
SDK's tests use, which enforces the granted permissions) on ``host.sock`` in the sandbox's
socket folder, the folder already mounted at ``/run/summit`` in the container. Every secret
exists with a sample value, egress to an allowed host answers ``200 []`` (JSON), and every
call is recorded so the report can say what the plugin asked for.
"""

from __future__ import annotations

import contextlib
import secrets
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from summit_sdk.sandbox import HOST_SOCKET_NAME, PLUGIN_USER, SOCKET_MOUNT
from summit_sdk.testing import FakeHost
from summit_sdk.unixsock import hand_over

__all__ = ["SAMPLE_SECRET", "ConformanceHost", "serving"]

SAMPLE_SECRET = "summit-conformance-secret"
PLUGIN_UID, PLUGIN_GID = (int(n) for n in PLUGIN_USER.split(":"))


class _SampleSecrets(dict[str, str]):
    """Every name is present, with the same sample value."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return SAMPLE_SECRET


class ConformanceHost(FakeHost):
    def __init__(self, manifest: dict[str, Any]) -> None:
        network = manifest.get("network") or {}
        super().__init__(
            list(manifest.get("permissions") or []),
            token=secrets.token_urlsafe(24),
            allowed_hosts=list(network.get("allowed_hosts") or []),
        )
        self.secrets = _SampleSecrets()
        self.http_handler = lambda method, url, headers, body: (
            200,
            {"content-type": "application/json"},
            b"[]",
        )


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    host: FakeHost


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = httpx.Request(
            self.command,
            f"http://host{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "host"],
            content=body,
        )
        response = self.server.host.handle_request(request)
        content = response.read()
        self.send_response(response.status_code)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # calls are recorded on the host; no noise on the author's terminal

    def address_string(self) -> str:
        return "plugin"  # a unix socket has no client address


@contextlib.contextmanager
def serving(host: FakeHost, socket_dir: Path) -> Iterator[str]:
    """Serve ``host`` on ``socket_dir/host.sock``; yields the URL the plugin is given."""
    path = socket_dir / HOST_SOCKET_NAME
    server = _Server(str(path), _Handler)
    server.host = host
    hand_over(path, PLUGIN_UID, PLUGIN_GID)  # the plugin runs as another user
    thread = threading.Thread(target=server.serve_forever, name="conformance-host", daemon=True)
    thread.start()
    try:
        yield f"unix://{SOCKET_MOUNT}/{HOST_SOCKET_NAME}"
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
