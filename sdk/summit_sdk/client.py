"""The REST client of the orchestrator's ``/v1`` API, shared by both command lines.

``summit`` (the operator's command) and ``summit-plugin publish`` / ``dev`` (the author's) reach a
running orchestrator through :class:`OrchestratorClient`. It speaks JSON over HTTP, never imports
the orchestrator, and needs neither Typer nor Rich, so any tool or script can use it.

Every failure is one :class:`OrchestratorError`: the API's ``{"error": {"code", "message",
"details"}}`` with the HTTP status, or, when no answer came, ``status`` 0 and the code
``bad_url``, ``timeout`` or ``unreachable``. Its ``refused`` says whether asking again unchanged
is pointless (a 4xx or an unusable URL) rather than worth a retry (a 5xx, no answer).

The HTTP client underneath is built lazily by ``connect(url, token)``; tests pass a function
returning an ``httpx.Client`` on ``httpx.MockTransport``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_URL",
    "Connect",
    "OrchestratorClient",
    "OrchestratorError",
    "http_client",
]

DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_TOKEN = "dev-admin-token"  # the orchestrator's development default (SUMMIT_ADMIN_TOKEN)
REQUEST_TIMEOUT_S = 30.0
NDJSON = "application/x-ndjson"

Connect = Callable[[str, str], httpx.Client]
"""Builds the HTTP client from the base URL and the bearer token."""


class OrchestratorError(Exception):
    """The orchestrator refused or failed a call, or could not be reached (``status`` 0)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 0,
        details: Any = None,
        url: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.url = url
        self.reason = reason  # the transport's own words when no answer came

    @property
    def refused(self) -> bool:
        """Whether the same call cannot succeed later: a 4xx answer or an unusable URL."""
        return 400 <= self.status < 500 or self.code == "bad_url"


def http_client(
    url: str,
    token: str,
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
    connect_timeout_s: float | None = None,
    user_agent: str | None = None,
) -> httpx.Client:
    """The HTTP client under :class:`OrchestratorClient`: base URL, bearer token, timeouts."""
    headers = {"Authorization": f"Bearer {token}"}
    if user_agent:
        headers["User-Agent"] = user_agent
    connect = timeout_s if connect_timeout_s is None else connect_timeout_s
    return httpx.Client(
        base_url=url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect)
    )


class OrchestratorClient:
    """A client of one orchestrator; ``url`` and ``token`` default to ``SUMMIT_URL`` and
    ``SUMMIT_ADMIN_TOKEN``, then to the development defaults.

    ``connect`` replaces how the HTTP client is built (and with it ``timeout_s``,
    ``connect_timeout_s`` and ``user_agent``). Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        connect_timeout_s: float | None = None,
        user_agent: str | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.url = (url or os.environ.get("SUMMIT_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("SUMMIT_ADMIN_TOKEN") or DEFAULT_TOKEN
        self._connect: Connect = connect or functools.partial(
            http_client,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            user_agent=user_agent,
        )
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ any call

    def request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Send one call; the decoded JSON answer (text if not JSON, None if empty)."""
        if timeout is not None:
            kwargs["timeout"] = timeout
        with self._transport_errors():
            response = self._session().request(method, path, **kwargs)
        return self._decode(response)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    # ------------------------------------------------------------------ plugins

    def check(self) -> None:
        """Fail now on a wrong URL or token, before any slow work."""
        self.get("/v1/plugins", params={"state": "ACTIVE"})

    def plugin(self, plugin_id: str) -> dict[str, Any] | None:
        """The installed plugin, or None when the orchestrator does not know it."""
        try:
            found: dict[str, Any] = self.get(f"/v1/plugins/{plugin_id}")
        except OrchestratorError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def install(
        self,
        *,
        image: str | None = None,
        bundle: bytes | None = None,
        bundle_name: str = "plugin.tar.gz",
        approved: list[str] | None = None,
        config: dict[str, Any] | None = None,
        signature: dict[str, Any] | None = None,
        override_reason: str | None = None,
        on_progress: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Install from an image reference or a ``.tar.gz`` bundle; the installed plugin.

        ``override_reason`` installs despite blocking scanner findings (recorded with it).
        With ``on_progress`` the build's progress lines are streamed to it as they come.
        """
        if (image is None) == (bundle is None):
            raise ValueError("install takes an image or a bundle")
        approved, config = list(approved or []), dict(config or {})
        kwargs: dict[str, Any] = {"timeout": timeout}
        if bundle is not None:
            form = {"approved_permissions": json.dumps(approved), "config": json.dumps(config)}
            if signature is not None:
                form["signature"] = json.dumps(signature)
            if override_reason is not None:
                form["allow_findings"] = "true"
                form["override_reason"] = override_reason
            kwargs["files"] = {"bundle": (bundle_name, bundle, "application/gzip")}
            kwargs["data"] = form
        else:
            body: dict[str, Any] = {
                "image": image,
                "approved_permissions": approved,
                "config": config,
            }
            if signature is not None:
                body["signature"] = signature
            if override_reason is not None:
                body["allow_findings"], body["override_reason"] = True, override_reason
            kwargs["json"] = body
        if on_progress is None:
            return self.post("/v1/plugins", **kwargs)
        return self._install_streamed(on_progress, **kwargs)

    def lifecycle(
        self,
        plugin_id: str,
        action: str,
        *,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """POST ``enable``, ``disable``, ``reload`` ...; the plugin as it is afterwards."""
        return self.post(f"/v1/plugins/{plugin_id}/{action}", params=params, timeout=timeout)

    # ------------------------------------------------------------------ plumbing

    def _session(self) -> httpx.Client:
        if self._http is None:
            self._http = self._connect(self.url, self.token)
        return self._http

    def _install_streamed(
        self, on_progress: Callable[[str], None], *, timeout: float | None, **kwargs: Any
    ) -> Any:
        if timeout is not None:
            kwargs["timeout"] = timeout
        headers = {"Accept": NDJSON}
        with (
            self._transport_errors(),
            self._session().stream("POST", "/v1/plugins", headers=headers, **kwargs) as response,
        ):
            if not response.headers.get("content-type", "").startswith(NDJSON):
                response.read()
                return self._decode(response)
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                if "progress" in item:
                    on_progress(str(item["progress"]))
                elif "plugin" in item:
                    return item["plugin"]
                elif "error" in item:
                    err = item["error"]
                    raise OrchestratorError(
                        str(err.get("code")),
                        str(err.get("message")),
                        status=int(item.get("status", 500)),
                        details=err.get("details"),
                        url=self.url,
                    )
        raise OrchestratorError(
            "incomplete",
            "the orchestrator closed the progress stream before the install finished",
            url=self.url,
        )

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise OrchestratorError(
                "bad_url",
                f"{self.url!r} is not a usable orchestrator URL: {exc}",
                url=self.url,
                reason=str(exc),
            ) from None
        except httpx.TimeoutException as exc:
            kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
            raise OrchestratorError(
                "timeout",
                f"the orchestrator at {self.url} did not answer in time ({kind} timeout)",
                url=self.url,
                reason=f"{kind} timeout",
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise OrchestratorError(
                "unreachable",
                f"cannot reach the orchestrator at {self.url}: {reason}",
                url=self.url,
                reason=reason,
            ) from None

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code < 400:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                return response.text
        code, message, details = f"http_{response.status_code}", "", None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
            details = err.get("details")
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
        if not message:
            text = response.text.strip()
            message = text[:200] if text else response.reason_phrase or "request failed"
        if code.startswith("http_"):
            message = f"{message} (HTTP {response.status_code})"
        raise OrchestratorError(
            code, message, status=response.status_code, details=details, url=self.url
        )
