"""How a ``summit-plugin`` command fails: one line ``error: <message>`` on stderr, never a
traceback. The exit status is 2 for bad input (arguments, files, manifests, a call the
orchestrator refused) and 1 for failures (a build, a failed check, Docker, an orchestrator that
failed or cannot be reached)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer

from summit_sdk.cli.render import err
from summit_sdk.client import OrchestratorError

BAD_INPUT = 2
FAILURE = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(message.split())
    err.print(f"error: {one_line}", markup=False)
    raise typer.Exit(code)


def describe(exc: Exception) -> str:
    """The failure in the author's words; an orchestrator's answer names what it refused."""
    if not isinstance(exc, OrchestratorError):
        return str(exc)
    if not exc.status:
        if exc.code == "unreachable":
            return f"the orchestrator at {exc.url} cannot be reached: {exc.reason}"
        return exc.message
    message = exc.message
    details = exc.details
    if isinstance(details, list) and all(isinstance(d, dict) and "path" in d for d in details):
        listed = "; ".join(f"{d['path']}: {d.get('message')}" for d in details)
        message = f"{message}: {listed}" if listed else message
    return f"the orchestrator refused: {message} ({exc.code})"


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Report what fails in the block as one line with its exit status."""
    from summit_sdk.cli.docker_ops import DockerError
    from summit_sdk.cli.introspect import IntrospectionError
    from summit_sdk.cli.manifest import ManifestError

    try:
        yield
    except CliError as exc:
        fail(str(exc), exc.code)
    except (ManifestError, IntrospectionError) as exc:
        fail(str(exc), BAD_INPUT)
    except DockerError as exc:
        fail(str(exc), FAILURE)
    except OrchestratorError as exc:
        fail(describe(exc), BAD_INPUT if exc.refused else FAILURE)
