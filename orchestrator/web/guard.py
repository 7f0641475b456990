"""What every UI response carries and how every UI request is judged.

- :class:`UiRoute`, the route class of every UI route: each response gets the security
  headers (a strict Content-Security-Policy without ``'unsafe-inline'`` or ``'unsafe-eval'``,
  no framing, no sniffing, no caching of pages), and errors become pages rather than the
  API's JSON: a request without a live session goes to the sign-in page; a refusal by role,
  a CSRF refusal, a missing plugin, an illegal transition show their message with their
  status. What a request changed in its session (a sign-in, a message, a sign-out) is written
  once its page is made, in the thread pool (``sessions.collect_writes``).
- :class:`UiContext`, what a signed-in page handler declares (``UiDep``): the session, the
  caller's role, and the checks. Roles are the API's: :meth:`UiContext.require` asks
  :class:`~orchestrator.services.extensions.AdminAccess` about the REST request a UI action
  stands for (the same method and path, so the same rule in ``security/access.py``), and
  :meth:`UiContext.can` decides which buttons a page shows by the same table.
- CSRF: every state-changing form carries the session's token, compared in constant time
  (:meth:`UiContext.form`); the session cookie is also ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import Response

from orchestrator.api.deps import access_of
from orchestrator.domain.errors import Forbidden, SummitError, Unauthenticated
from orchestrator.security.access import Role, required_role
from orchestrator.services.extensions import AdminAccess
from orchestrator.web.assets import vendor_ready
from orchestrator.web.sessions import (
    COOKIE,
    SessionStore,
    UiSession,
    collect_writes,
    write_collected,
)
from orchestrator.web.templating import templates

__all__ = ["CSP", "CsrfRefused", "UiContext", "UiDep", "UiRoute", "safe_next", "sessions_of"]

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CSRF_FIELD = "csrf_token"
# The REST request whose rule decides whether a session may read the UI at all.
READ_RULE = ("GET", "/v1/plugins")


class NotSignedIn(Exception):
    """No live session: the browser is sent to the sign-in page."""


class CsrfRefused(Forbidden):
    code = "csrf_refused"

    def __init__(self) -> None:
        super().__init__(
            "this form is out of date or did not come from this page; reload it and try again"
        )


def sessions_of(state: Any) -> SessionStore:
    """The app's UI sessions (made on first use): in the orchestrator's database under its
    secrets key, shared by every replica. An app whose state lacks ``engine`` or ``settings``
    (the lifespan sets both; a unit test's app may not) gets a private store in memory."""
    store: SessionStore | None = getattr(state, "ui_sessions", None)
    if store is None:
        engine = getattr(state, "engine", None)
        settings = getattr(state, "settings", None)
        if engine is not None and settings is not None:
            store = SessionStore.from_settings(
                engine, secrets_key=settings.secrets_key, state_dir=settings.state_dir
            )
        else:
            store = SessionStore()
        state.ui_sessions = store
    return store


def safe_next(target: str | None, default: str = "/ui/plugins") -> str:
    """A place inside the UI to return to; anything else (another site, ``//host``, a
    scheme) becomes ``default``."""
    if (
        not target
        or not target.startswith("/ui")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return default
    return target


@dataclass
class UiContext:
    request: Request
    session: UiSession
    role: Role
    access: AdminAccess

    @property
    def principal(self) -> str:
        """The role's name, as the install pipeline records who asked."""
        return self.role.label

    @property
    def actor(self) -> str:
        """How the history and the audit log name this caller (as the API names it)."""
        return self.session.actor

    def can(self, method: str, path: str) -> bool:
        """Whether this role may make that REST request (the buttons a page shows)."""
        return self.role >= required_role(method, path)

    async def require(self, method: str, path: str) -> Role:
        """Refuse (403, or 401 for a token revoked meanwhile) unless the session's token may
        make that REST request: the API's own check, with the API's own message."""
        token = self.session.token
        return await self.access.authorize(token, api_key=token, method=method, path=path)

    async def form(self) -> FormData:
        """The submitted form, once its CSRF token is the session's."""
        form = await self.request.form()
        sent = form.get(CSRF_FIELD)
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), self.session.csrf.encode()
        ):
            raise CsrfRefused()
        return form

    def flash(self, kind: str, message: str) -> None:
        self.session.flash(kind, message)

    def render(self, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        return page(self.request, name, status_code, ui=self, **values)

    def back(self, fallback: str, form: FormData | None = None) -> RedirectResponse:
        """After a form: to where it came from (its ``next`` field), else ``fallback``."""
        target = form.get("next") if form is not None else None
        return RedirectResponse(
            safe_next(target if isinstance(target, str) else None, fallback), status_code=303
        )


def page(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A full page (``base.html`` around ``name``), with what every page shows."""
    ui: UiContext | None = values.pop("ui", None)
    # A part of a page that htmx fetches on its own (a poll, a search) leaves the messages
    # for the next whole page: only navigation (plain, or boosted by htmx) shows them.
    partial = bool(request.headers.get("hx-request")) and not request.headers.get("hx-boosted")
    context = {
        "ui": ui,
        "flashes": ui.session.take_flashes() if ui is not None and not partial else [],
        "csrf": ui.session.csrf if ui is not None else "",
        "csrf_field": CSRF_FIELD,
        "vendor_ready": vendor_ready(),
        "path": request.url.path,
        "here": _here(request),
        **values,
    }
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def signed_in(request: Request) -> UiContext:
    """The caller's session and role; :class:`NotSignedIn` without a live session or when
    its token no longer passes (revoked, or the auth provider says no)."""
    store = sessions_of(request.app.state)
    session = await run_in_threadpool(store.get, request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn()
    access = access_of(request.app.state)
    role = await access.role_of(
        session.token, api_key=session.token, method=READ_RULE[0], path=READ_RULE[1]
    )
    if role is None:
        store.drop(session)
        raise NotSignedIn()
    ui = UiContext(request=request, session=session, role=role, access=access)
    request.state.ui = ui
    return ui


UiDep = Annotated[UiContext, Depends(signed_in)]


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _to_sign_in(request: Request) -> Response:
    target = "/ui/sign-in"
    if request.method == "GET" and request.url.path not in ("/ui", "/ui/", target):
        target += "?next=" + quote(_here(request), safe="/")
    if request.headers.get("hx-request"):
        # htmx would put the sign-in page inside the current one; HX-Redirect loads it whole.
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _error_page(request: Request, exc: Exception) -> Response:
    ui: UiContext | None = getattr(request.state, "ui", None)
    if isinstance(exc, NotSignedIn | Unauthenticated):
        if ui is not None:
            sessions_of(request.app.state).drop(ui.session)
        return _to_sign_in(request)
    if isinstance(exc, SummitError):
        status, title, message, details = exc.status_code, exc.code, exc.message, exc.details
    elif isinstance(exc, RequestValidationError):
        status, title = 422, "invalid_request"
        message = "the request is not valid"
        details = [
            {"path": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
    elif isinstance(exc, HTTPException):
        status, title, message, details = exc.status_code, "http_error", str(exc.detail), None
    else:
        log.exception("UI page %s failed", request.url.path, exc_info=exc)
        status, title = 500, "internal_error"
        message, details = f"unexpected {type(exc).__name__}; the log has the details", None
    return page(
        request,
        "error.html",
        status,
        ui=ui,
        status=status,
        title=title,
        message=message,
        details=details,
    )


class UiRoute(APIRoute):
    """A UI route: its errors are pages, and every response has the security headers. A page
    answers HEAD as it answers GET (link checkers and monitors ask it; the server sends no
    body)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods and "GET" in self.methods:
            self.methods.add("HEAD")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            # What the request changed in sessions (a sign-in, messages, a sign-out) is
            # written once the page is made, in the thread pool: not on the event loop.
            with collect_writes() as changed:
                try:
                    response = await handler(request)
                except Exception as exc:
                    response = _error_page(request, exc)
            if changed:
                await run_in_threadpool(write_collected, changed)
            return secure(response)

        return guarded
