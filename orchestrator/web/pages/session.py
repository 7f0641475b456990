"""Signing in (an API token, or the admin token, exchanged for a session) and out."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from orchestrator.api.deps import access_of
from orchestrator.security.access import ApiTokens
from orchestrator.web.guard import (
    CSRF_FIELD,
    READ_RULE,
    CsrfRefused,
    UiDep,
    UiRoute,
    page,
    safe_next,
    sessions_of,
    signed_in,
)
from orchestrator.web.guard import NotSignedIn as _NotSignedIn
from orchestrator.web.sessions import COOKIE, MAX_AGE_S

router = APIRouter(route_class=UiRoute)

# The sign-in form has no session to hold its CSRF token yet: the token is also set as a
# cookie, and the two must match (a page on another site can send neither).
SIGN_IN_COOKIE = "summit_ui_signin"
SIGN_IN_FORM_S = 60 * 60
MAX_TOKEN_CHARS = 4096


def _is_https(request: Request) -> bool:
    """Whether the cookies are Secure: as ``SUMMIT_UI_SECURE_COOKIES`` says, else when the
    request came over HTTPS (through a proxy listed in ``SUMMIT_FORWARDED_ALLOW_IPS`` too)."""
    settings = getattr(request.app.state, "settings", None)
    forced = getattr(settings, "ui_secure_cookies", None)
    return forced if forced is not None else request.url.scheme == "https"


def _sign_in_page(
    request: Request, *, next_url: str, error: str = "", status_code: int = 200
) -> Response:
    form_token = secrets.token_urlsafe(32)
    response = page(
        request,
        "sign_in.html",
        status_code,
        form_token=form_token,
        next_url=next_url,
        error=error,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        form_token,
        max_age=SIGN_IN_FORM_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    return response


@router.get("/sign-in", name="ui_sign_in")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    try:
        await signed_in(request)
        return RedirectResponse(safe_next(next), status_code=303)
    except _NotSignedIn:
        return _sign_in_page(request, next_url=safe_next(next))


async def _actor_of(request: Request, token: str) -> str:
    """How records name the one who signed in: as the API names the same credential."""
    access = access_of(request.app.state)
    if access.is_admin_token(token):
        return "admin token"
    tokens: ApiTokens | None = getattr(request.app.state, "api_tokens", None)
    if tokens is not None:
        view = await run_in_threadpool(tokens.identity, token)
        if view is not None:
            return f"{view.name} ({view.id})"
    return "auth provider"


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    next_url = safe_next(str(form.get("next") or ""))
    sent, expected = form.get(CSRF_FIELD), request.cookies.get(SIGN_IN_COOKIE)
    if (
        not isinstance(sent, str)
        or not expected
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise CsrfRefused()
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    role = None
    if token and len(token) <= MAX_TOKEN_CHARS:
        role = await access_of(request.app.state).role_of(
            token, api_key=token, method=READ_RULE[0], path=READ_RULE[1]
        )
    if role is None:
        return _sign_in_page(
            request,
            next_url=next_url,
            error="That token was not accepted: it is unknown, revoked or mistyped.",
            status_code=401,
        )
    session = sessions_of(request.app.state).create(
        token=token, actor=await _actor_of(request, token)
    )
    session.flash("ok", f"Signed in as {session.actor}, role {role.label}.")
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        sessions_of(request.app.state).cookie_value(session),
        max_age=MAX_AGE_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui")
    return response


@router.post("/sign-out")
async def sign_out(ui: UiDep) -> Response:
    await ui.form()
    sessions_of(ui.request.app.state).drop(ui.session)
    response = RedirectResponse("/ui/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
