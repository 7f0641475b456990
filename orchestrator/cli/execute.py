"""``summit execute``: call the providers of an extension point and print the JSON result."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from orchestrator.cli import render
from orchestrator.cli.connection import REQUEST_TIMEOUT_S, api
from orchestrator.cli.errors import handle_errors
from orchestrator.cli.options import TokenOpt, UrlOpt, VerboseOpt, json_arg


class Mode(StrEnum):
    all = "all"
    pipeline = "pipeline"
    first = "first"


@handle_errors
def execute(
    ctx: typer.Context,
    point: Annotated[str, typer.Argument(help="Extension point, e.g. analyzer or data_source.")],
    input_json: Annotated[
        str,
        typer.Option("--input", help="Input as JSON text (or @file).", show_default=False),
    ],
    mode: Annotated[Mode, typer.Option("--mode", help="How to combine the providers.")] = Mode.all,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Only this provider (repeatable).", show_default=False),
    ] = None,
    timeout_ms: Annotated[
        int | None,
        typer.Option(
            "--timeout-ms", min=1, max=600_000, help="Per-call deadline.", show_default=False
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Call the providers of an extension point and print the JSON result."""
    body: dict[str, Any] = {"input": json_arg(input_json, "--input"), "mode": mode.value}
    if plugin:
        body["plugins"] = plugin
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    wait = max(REQUEST_TIMEOUT_S, (timeout_ms or 0) / 1000 + 10)
    result = api(ctx, url, token).post(
        f"/v1/extension-points/{point}/execute", json=body, timeout=wait
    )
    render.print_json(result)
