"""The UI's static files, served by the orchestrator itself at ``/ui/static/`` (no CDN).

``static/`` holds our own stylesheet and script; ``static/vendor/`` the third-party browser
files (htmx and its server-sent events extension, Vega) that ``scripts/build-ui.sh`` installs
from the npm registry at set-up time, at the versions ``package-lock.json`` pins. That folder
is not in git: when it is missing the pages still work as plain links and forms, and say so
in one line (:func:`vendor_ready`).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "VENDOR", "serve_static", "vendor_ready"]

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
HTMX = ("htmx.min.js", "htmx-sse.min.js")
VEGA = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")

# StaticFiles answers ETag / If-None-Match (304) and refuses paths outside the folder.
_files = StaticFiles(directory=STATIC, check_dir=False)


def vendor_ready() -> bool:
    """Whether the third-party files were installed (``scripts/build-ui.sh``)."""
    return all((VENDOR / name).is_file() for name in HTMX)


def charts_ready() -> bool:
    return all((VENDOR / name).is_file() for name in VEGA)


async def serve_static(path: str, request: Request) -> Response:
    response = await _files.get_response(path, request.scope)
    # Revalidated on each use (a cheap 304): the files change when the orchestrator does.
    response.headers["Cache-Control"] = "no-cache"
    return response
