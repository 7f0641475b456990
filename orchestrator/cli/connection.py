"""How a client command reaches the orchestrator: the SDK's client, built from the options.

The REST client itself (requests, error mapping, the install stream) is
:class:`summit_sdk.client.OrchestratorClient`, shared with ``summit-plugin``; this module only
picks its URL and token and builds its HTTP client.
"""

from __future__ import annotations

import httpx
import typer
from summit_sdk.client import DEFAULT_TOKEN, DEFAULT_URL, OrchestratorClient, http_client

from orchestrator import __version__

REQUEST_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 600.0


def _client(url: str, token: str) -> httpx.Client:
    """The one place the CLI builds its HTTP client (tests replace it)."""
    return http_client(
        url, token, timeout_s=REQUEST_TIMEOUT_S, user_agent=f"summit-cli/{__version__}"
    )


def api(ctx: typer.Context, url: str | None, token: str | None) -> OrchestratorClient:
    """The client for this command: its own ``--url``/``--token``, else the global ones.

    It is closed when the command ends.
    """
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    client = OrchestratorClient(
        (url or obj.get("url") or DEFAULT_URL).rstrip("/"),
        token or obj.get("token") or DEFAULT_TOKEN,
        connect=_client,
    )
    ctx.call_on_close(client.close)
    return client
