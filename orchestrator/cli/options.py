"""The options every client command takes, and the parsing of JSON given on the line.

``--url``, ``--token``, ``--verbose`` and ``--json`` are accepted after the command as well as
before it; given after it they win (``summit --url A list --url B`` talks to B).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.errors import CliError

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Orchestrator base URL (env SUMMIT_URL).", show_default=False),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help="Admin bearer token (env SUMMIT_ADMIN_TOKEN).", show_default=False
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print error details on failure.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


def json_arg(raw: str, option: str) -> Any:
    """Parse JSON text given on the command line; ``@path`` reads it from a file."""
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError("bad_input", f"{option}: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError("bad_input", f"{option} is not valid JSON: {exc}") from None


def json_option(value: str | None, what: str) -> Any:
    """Parse an optional JSON option (no ``@file``); None when it was not given."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CliError("bad_input", f"{what} is not JSON: {exc}") from None
