"""How a ``summit`` command fails: one line and an exit status, never a traceback.

A :class:`CliError` raised anywhere in a command, and the SDK client's
:class:`~summit_sdk.client.OrchestratorError`, become ``error: <code>: <message>`` on stderr;
details follow with ``--verbose``. Exit status 2 means the request or the local input was
refused (4xx, bad JSON, missing directory); 1 means the orchestrator failed or could not be
reached (5xx, connection errors).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from summit_sdk.client import OrchestratorError

from orchestrator.cli.render import one_line

EXIT_FAILURE = 1  # the orchestrator failed or could not be reached
EXIT_REFUSED = 2  # the request or the local input was refused

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A failure reported as one ``error: code: message`` line and an exit status."""

    def __init__(
        self, code: str, message: str, *, exit_code: int = EXIT_REFUSED, details: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.details = details

    @classmethod
    def from_api(cls, err: OrchestratorError) -> CliError:
        """The client's failure in the CLI's words (``--url`` is an option here)."""
        message = err.message
        if err.code == "bad_url":
            message = f"--url {err.url!r} is not usable: {err.reason}"
        exit_code = EXIT_REFUSED if err.refused else EXIT_FAILURE
        return cls(err.code, message, exit_code=exit_code, details=err.details)


def fail(err: CliError, *, verbose: bool) -> NoReturn:
    typer.echo(f"error: {one_line(err.code)}: {one_line(err.message)}", err=True)
    if verbose and err.details not in (None, "", [], {}):
        if isinstance(err.details, list):
            for item in err.details:
                if isinstance(item, dict) and {"path", "message"} <= item.keys():
                    typer.echo(f"  {item['path']}: {item['message']}", err=True)
                else:
                    typer.echo(f"  {json.dumps(item, default=str)}", err=True)
        else:
            text = json.dumps(err.details, indent=2, default=str)
            typer.echo("\n".join("  " + line for line in text.splitlines()), err=True)
    raise typer.Exit(err.exit_code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a failure raised anywhere in a command into a line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (CliError, OrchestratorError) as exc:
            err = CliError.from_api(exc) if isinstance(exc, OrchestratorError) else exc
            verbose = bool(kwargs.get("verbose"))
            obj = getattr(kwargs.get("ctx"), "obj", None)
            if isinstance(obj, dict):
                verbose = verbose or bool(obj.get("verbose"))
            fail(err, verbose=verbose)

    return wrapper
