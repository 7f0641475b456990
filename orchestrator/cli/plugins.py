"""The installed plugins: ``list``, ``show``, ``logs``, and the lifecycle commands ``enable``,
``disable``, ``reload`` and ``uninstall`` (``install`` has its own module)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text
from summit_sdk.client import OrchestratorClient

from orchestrator.cli import render
from orchestrator.cli.connection import INSTALL_TIMEOUT_S, api
from orchestrator.cli.errors import EXIT_FAILURE, CliError, handle_errors
from orchestrator.cli.options import JsonOpt, TokenOpt, UrlOpt, VerboseOpt

PluginId = Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")]


@handle_errors
def list_plugins(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only plugins in this state (e.g. ACTIVE).", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """List installed plugins."""
    params = {"state": state.upper()} if state else None
    plugins = api(ctx, url, token).get("/v1/plugins", params=params) or []
    if json_out:
        render.print_json(plugins)
        return
    if not plugins:
        render.stdout().print(
            "no plugins installed" + (f" in state {state.upper()}" if state else "")
        )
        return
    render.stdout().print(render.plugins_table(plugins))


@handle_errors
def show(
    ctx: typer.Context,
    plugin_id: PluginId,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Show one plugin: state, permissions, extensions, resources, container."""
    plugin = api(ctx, url, token).get(f"/v1/plugins/{plugin_id}")
    if json_out or not isinstance(plugin, dict):
        render.print_json(plugin)
        return
    render.stdout().print(render.plugin_details(plugin))


@handle_errors
def logs(
    ctx: typer.Context,
    plugin_id: PluginId,
    tail: Annotated[
        int, typer.Option("--tail", "-n", min=1, max=10000, help="Last N lines.")
    ] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Print the last lines of a plugin container's log."""
    answer = api(ctx, url, token).get(f"/v1/plugins/{plugin_id}/logs", params={"tail": tail})
    text = answer.get("logs", "") if isinstance(answer, dict) else str(answer or "")
    if text:
        typer.echo(text, nl=not text.endswith("\n"))


@handle_errors
def enable(
    ctx: typer.Context,
    plugin_id: PluginId,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Start a plugin (and the plugins it depends on)."""
    _lifecycle_action(api(ctx, url, token), plugin_id, "enable", "Enabling", "Enabled")


@handle_errors
def disable(
    ctx: typer.Context,
    plugin_id: PluginId,
    cascade: Annotated[
        bool, typer.Option("--cascade", help="Also disable ACTIVE plugins that depend on it.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop a plugin; its container is removed, its installation kept."""
    params = {"cascade": "true"} if cascade else None
    _lifecycle_action(
        api(ctx, url, token), plugin_id, "disable", "Disabling", "Disabled", params=params
    )


@handle_errors
def reload(
    ctx: typer.Context,
    plugin_id: PluginId,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Replace a plugin's container with a fresh one (new one healthy before the old stops)."""
    _lifecycle_action(api(ctx, url, token), plugin_id, "reload", "Reloading", "Reloaded")


def _lifecycle_action(
    client: OrchestratorClient,
    plugin_id: str,
    action: str,
    doing: str,
    done: str,
    params: dict[str, str] | None = None,
) -> None:
    plugin = render.with_spinner(
        f"{doing} {plugin_id} ...",
        lambda: client.lifecycle(plugin_id, action, params=params, timeout=INSTALL_TIMEOUT_S),
    )
    render.plugin_line(plugin, done)


def _interactive() -> bool:
    return sys.stdin.isatty()


@handle_errors
def uninstall(
    ctx: typer.Context,
    plugin_id: PluginId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove a plugin (it must be disabled first)."""
    if not yes:
        if not _interactive():
            raise CliError("confirmation_required", f"not uninstalling {plugin_id} without --yes")
        if not typer.confirm(f"Uninstall {plugin_id}?", default=False):
            typer.echo("aborted", err=True)
            raise typer.Exit(EXIT_FAILURE)
    client = api(ctx, url, token)
    render.with_spinner(
        f"Uninstalling {plugin_id} ...",
        lambda: client.delete(f"/v1/plugins/{plugin_id}", timeout=INSTALL_TIMEOUT_S),
    )
    line = Text("Uninstalled ")
    line.append(plugin_id, style="bold")
    render.stdout().print(line)
