"""Entry point of ``summit-plugin``: the author CLI needs the ``cli`` extra, and without it
the command says so in one line (exit 2) instead of an ImportError traceback."""

from __future__ import annotations

import sys

INSTALL_HINT = "pip install 'summit-plugin-sdk[cli]'"


def main() -> None:
    try:
        from summit_sdk.cli import app
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"error: summit-plugin needs {exc.name or 'a module'} from the 'cli' extra: "
            f"{INSTALL_HINT}\n"
        )
        raise SystemExit(2) from None
    app()
