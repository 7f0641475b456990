"""The web UI, served by the orchestrator at ``/ui``: server-rendered pages (Jinja2) made
interactive with htmx, over the same services as the REST API.

``router`` is what the app factory mounts (``app.include_router(web.router)``). The
contract of the package (sessions, CSRF, the Content-Security-Policy, where the third-party
browser files come from) is in ``README.md`` beside this file.
"""

from orchestrator.web.router import router

__all__ = ["router"]
