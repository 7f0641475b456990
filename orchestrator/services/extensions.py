"""Extension points: who provides them, calling them (now or queued), and the admin API's one
authorization path, whose last resort is an ``auth_provider`` extension.

The ``execute`` route, the broker's fast path (``api/fastpath.py``) and the ``authorize``
dependency (``api/deps.py``) all come here, so a call is executed and a caller is judged by
the same rules whichever door it came in by.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Literal, Protocol

from starlette.concurrency import run_in_threadpool

from orchestrator.broker import Broker
from orchestrator.domain.errors import Conflict, Forbidden, NotFound, SummitError, Unauthenticated
from orchestrator.domain.manifest import ExtensionPoint
from orchestrator.jobs.queue import JobQueue
from orchestrator.jobs.worker import EXECUTE, ExecutePayload
from orchestrator.security.access import Role, required_role

__all__ = ["AdminAccess", "ExtensionService"]

log = logging.getLogger(__name__)

AUTH_PROVIDER_POINT = "auth_provider"
AUTH_PROVIDER_TIMEOUT_MS = 5000
JOBS_PREFIX = "/v1/jobs"


class _Plugins(Protocol):
    def get(self, plugin_id: str) -> Any:
        """The plugin's view; :class:`NotFound` when it is not installed."""


class _Tokens(Protocol):
    def role_of(self, token: str) -> Role | None: ...

    def cached_role(self, token: str) -> Role | None: ...


class ExtensionService:
    """Providers of each extension point, and calls into them through the broker."""

    def __init__(
        self,
        *,
        broker: Broker,
        plugins: _Plugins | None = None,
        jobs: JobQueue | None = None,
        job_max_attempts: int = 3,
    ) -> None:
        self.broker = broker
        self.plugins = plugins
        self.jobs = jobs
        self.job_max_attempts = job_max_attempts

    def providers(self) -> list[dict[str, Any]]:
        """Every extension point with the ACTIVE providers of it, in the broker's order."""
        out = []
        for point in ExtensionPoint:
            providers = [
                {
                    "plugin": route.plugin_id,
                    "version": route.version,
                    "name": ext.name,
                    "priority": ext.priority,
                    "idempotent": ext.idempotent,
                    "input_schema": ext.input_schema,
                    "output_schema": ext.output_schema,
                    "breaker": self.broker.breakers.describe(route.plugin_id),
                }
                for route, ext in self.broker.providers(point.value)
            ]
            out.append({"point": point.value, "providers": providers})
        return out

    async def execute(
        self,
        point: str,
        payload: Any,
        *,
        mode: Literal["all", "pipeline", "first"] = "all",
        plugins: list[str] | None = None,
        timeout_ms: int | None = None,
        explain: bool = True,
    ) -> Any:
        """Call the providers of ``point``: ``all`` at once, a ``pipeline``, or the ``first``
        that succeeds.

        The broker refuses plugins that are not ACTIVE (409 ``not_active``) before it calls
        any; with ``explain`` a plugin that is not installed at all is told apart (404), which
        costs a database read, so the fast path leaves it to the route.
        """
        try:
            return await self.broker.execute(
                point, payload, mode=mode, plugins=plugins, timeout_ms=timeout_ms
            )
        except Conflict as exc:
            if explain and exc.code == "not_active" and self.plugins is not None:
                for plugin_id in exc.details["plugins"]:
                    await run_in_threadpool(self.plugins.get, plugin_id)  # 404 when not installed
            raise

    async def submit(self, payload: ExecutePayload) -> dict[str, Any]:
        """Queue an execute call: the job's id, status and links (202 of ``async: true``)."""
        if payload.point not in {p.value for p in ExtensionPoint}:
            raise NotFound(f"unknown extension point {payload.point!r}", code="unknown_point")
        if self.jobs is None:
            raise SummitError("no job queue is configured")
        job = await run_in_threadpool(
            self.jobs.submit,
            EXECUTE,
            payload.model_dump(mode="json"),
            max_attempts=self.job_max_attempts,
        )
        return {"job_id": job.id, "status": job.status.value, "links": job_links(job.id)}

    async def ask_auth_provider(
        self, provider: str, *, api_key: str, method: str, path: str
    ) -> Role | None:
        """The role an ``auth_provider`` plugin (``<plugin id>[/<name>]``) grants to
        credentials Summit does not know (an API key); None when it grants none, is not
        ACTIVE, or fails."""
        plugin_id, _, name = provider.partition("/")
        route = self.broker.route(plugin_id)
        ext = next(
            (
                e
                for e in (route.extensions if route else ())
                if e.point.value == AUTH_PROVIDER_POINT and (not name or e.name == name)
            ),
            None,
        )
        if route is None or ext is None:
            log.warning("auth provider %s is not ACTIVE; only Summit tokens are accepted", provider)
            return None
        payload = {
            "credentials": {"api_key": api_key},
            "headers": {},
            "method": method,
            "path": path,
        }
        try:
            result = await self.broker.call(
                route, ext, payload, timeout_ms=AUTH_PROVIDER_TIMEOUT_MS
            )
        except SummitError as exc:
            log.warning("auth provider %s failed: %s", provider, exc.message)
            return None
        if not isinstance(result, dict) or result.get("authenticated") is not True:
            return None
        roles = ((result.get("principal") or {}).get("roles")) or []
        granted = [
            Role[r.upper()] for r in roles if isinstance(r, str) and r.upper() in Role.__members__
        ]
        return max(granted) if granted else None


def job_links(job_id: str) -> dict[str, str]:
    return {"self": f"{JOBS_PREFIX}/{job_id}"}


class AdminAccess:
    """Who may make a request of the admin API: the bootstrap admin token, an API token, or
    (with ``SUMMIT_AUTH_PROVIDER``) whatever the ``auth_provider`` plugin accepts; then the
    role table (:func:`required_role`) decides whether that role may make this request."""

    def __init__(
        self,
        *,
        admin_token: str,
        tokens: _Tokens | None,
        auth_provider: str | None = None,
        extensions: ExtensionService | None = None,
    ) -> None:
        self._admin_token = admin_token.encode()
        self.tokens = tokens
        self.auth_provider = auth_provider
        self.extensions = extensions

    def _is_admin_token(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._admin_token)

    def is_admin_token(self, token: str) -> bool:
        """Whether ``token`` is the bootstrap admin token (compared in constant time)."""
        return self._is_admin_token(token)

    def known_role(self, token: str) -> Role | None:
        """The role of the bootstrap admin token, or of an API token verified in the last
        ``SUMMIT_API_TOKEN_CACHE_S`` seconds; no I/O (the fast path's question)."""
        if self._is_admin_token(token):
            return Role.ADMIN
        return self.tokens.cached_role(token) if self.tokens is not None else None

    async def role_of(
        self, token: str | None, *, api_key: str | None, method: str, path: str
    ) -> Role | None:
        """The caller's role: the bootstrap admin token (no database round trip on the hot
        path), an API token looked up, else what the auth provider grants ``api_key``."""
        role: Role | None = None
        if token is not None:
            if self._is_admin_token(token):
                role = Role.ADMIN
            elif self.tokens is not None:
                role = await run_in_threadpool(self.tokens.role_of, token)
        if role is None and self.auth_provider and api_key and self.extensions is not None:
            role = await self.extensions.ask_auth_provider(
                self.auth_provider, api_key=api_key, method=method, path=path
            )
        return role

    async def authorize(
        self, token: str | None, *, api_key: str | None, method: str, path: str
    ) -> Role:
        """The caller's role if it may make this request; 401 or 403 otherwise."""
        role = await self.role_of(token, api_key=api_key, method=method, path=path)
        if role is None:
            raise Unauthenticated("a valid bearer token is required")
        needed = required_role(method, path)
        if role < needed:
            raise Forbidden(
                f"the {role.label} role may not {method} {path}; it needs {needed.label}",
                code="forbidden",
                details={"role": role.label, "required": needed.label},
            )
        return role

    def authorize_now(self, token: str, *, method: str, path: str) -> Role | None:
        """The caller's role if it is known without I/O (:meth:`known_role`) and may make this
        request; None leaves the decision to :meth:`authorize`."""
        role = self.known_role(token)
        if role is None or role < required_role(method, path):
            return None
        return role
