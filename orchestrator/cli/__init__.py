"""The ``summit`` command: the Typer ``app``, its global options, and the command groups.

This module holds only the app and the registration of the commands, each group in its own
module: ``serve`` (serve, worker), ``install``, ``plugins`` (list, show, logs, enable, disable,
reload, uninstall), ``execute``, ``security`` (token, trust, secret, audit) and ``webhooks``.
Beside them: ``connection`` builds the SDK's REST client (:mod:`summit_sdk.client`), ``options``
the options they share, ``render`` what they print, ``errors`` how they fail.

``summit serve`` starts the service. Every other command is an HTTP client of ``/v1``; it finds
the orchestrator through ``--url`` (``SUMMIT_URL``) and authenticates with ``--token``
(``SUMMIT_ADMIN_TOKEN``). The two options are accepted before the command
(``summit --url ... list``) or after it (``summit list --url ...``).

Failures never end in a traceback: the API's ``{"error": {"code", "message", "details"}}``
becomes one line ``error: <code>: <message>`` on stderr (details follow with ``--verbose``).
Exit status 2 means the request or the local input was refused (4xx, bad JSON, missing
directory); 1 means the orchestrator failed or could not be reached (5xx, connection errors).
Importing this package stays light: the service's modules load only inside ``serve``/``worker``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from summit_sdk.client import DEFAULT_TOKEN, DEFAULT_URL

from orchestrator.cli import catalog, execute, install, plugins, security, serve, webhooks

__all__ = ["app"]

app = typer.Typer(
    name="summit",
    help="Summit plugin orchestrator: run the service and manage its plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="SUMMIT_URL", help="Orchestrator base URL.")
    ] = DEFAULT_URL,
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="SUMMIT_ADMIN_TOKEN", help="Admin bearer token.", show_default=False
        ),
    ] = DEFAULT_TOKEN,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print error details on failure.")
    ] = False,
) -> None:
    """Summit plugin orchestrator: run the service and manage its plugins."""
    ctx.obj = {"url": url, "token": token, "verbose": verbose}


# The order here is the order of `summit --help`.
app.command()(serve.serve)
app.command()(serve.worker)
app.command()(install.install)
app.command("list")(plugins.list_plugins)
app.command()(plugins.show)
app.command()(plugins.logs)
app.command()(plugins.enable)
app.command()(plugins.disable)
app.command()(plugins.reload)
app.command()(plugins.uninstall)
app.command()(execute.execute)
app.add_typer(security.token_app, name="token")
app.add_typer(security.trust_app, name="trust")
app.add_typer(security.secret_app, name="secret")
app.add_typer(webhooks.webhook_app, name="webhook")
app.add_typer(catalog.catalog_app, name="catalog")
app.command()(security.audit)
