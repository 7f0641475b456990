"""The few orchestrator calls the author's CLI makes (``publish`` and ``dev``).

A thin client of the orchestrator's REST API (``/v1/plugins``); it speaks JSON over HTTP and
never imports the orchestrator. Errors come back as :class:`RemoteError` carrying the API's
``{error:{code,message}}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from summit_sdk.imagebuild import pack_bundle
from summit_sdk.manifest_yaml import dump_manifest_yaml

__all__ = ["Orchestrator", "RemoteError", "bundle"]

DEFAULT_URL = "http://127.0.0.1:8700"


class RemoteError(Exception):
    """The orchestrator refused a call or cannot be reached; ``status`` is 0 for the latter."""

    def __init__(self, message: str, *, status: int = 0, code: str = "unreachable") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Orchestrator:
    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 600
    ) -> None:
        self.url = (url or os.environ.get("SUMMIT_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("SUMMIT_ADMIN_TOKEN") or "dev-admin-token"
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=5),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"the orchestrator at {self.url} cannot be reached: {exc}") from None
        if response.is_success:
            return response.json() if response.content else None
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
            details = error.get("details")
        except (ValueError, KeyError, TypeError):
            code, message, details = "http_error", response.text[:200], None
        if isinstance(details, list) and all(isinstance(d, dict) and "path" in d for d in details):
            listed = "; ".join(f"{d['path']}: {d.get('message')}" for d in details)
            message = f"{message}: {listed}" if listed else message
        raise RemoteError(message, status=response.status_code, code=code)

    def check(self) -> None:
        """Fail now on a wrong URL or token, before any slow work."""
        self._call("GET", "/v1/plugins", params={"state": "ACTIVE"})

    def get(self, plugin_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call("GET", f"/v1/plugins/{plugin_id}")
        except RemoteError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def install_image(
        self, ref: str, *, approved: list[str], config: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"image": ref, "approved_permissions": approved, "config": config}
        installed: dict[str, Any] = self._call("POST", "/v1/plugins", json=body)
        return installed

    def install_bundle(
        self, data: bytes, *, approved: list[str], config: dict[str, Any]
    ) -> dict[str, Any]:
        import json

        installed: dict[str, Any] = self._call(
            "POST",
            "/v1/plugins",
            files={"bundle": ("plugin.tar.gz", data, "application/gzip")},
            data={"approved_permissions": json.dumps(approved), "config": json.dumps(config)},
        )
        return installed

    def lifecycle(self, plugin_id: str, action: str) -> dict[str, Any]:
        done: dict[str, Any] = self._call("POST", f"/v1/plugins/{plugin_id}/{action}")
        return done


def bundle(folder: Path, manifest: dict[str, Any]) -> bytes:
    """A ``.tar.gz`` of the plugin's source with ``manifest`` as its ``plugin.yaml``.

    Reproducible (fixed times and owners) so the orchestrator's content-addressed build can
    reuse an image when only the version changed.
    """
    plugin_yaml = dump_manifest_yaml(manifest, sort_keys=False).encode()
    return pack_bundle(folder, replace={"plugin.yaml": plugin_yaml})
