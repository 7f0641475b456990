"""Exceptions a handler raises or meets; each becomes an ``{error:{code,message}}`` answer.

Kept free of heavy imports: the runtime imports this module on its cold path.
"""

from __future__ import annotations

from typing import Any


class PluginError(Exception):
    """Raise from a handler to answer with a chosen error code instead of ``handler_error``.

    The message (and ``details``) are sent to the caller, so they must not contain secrets.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "plugin_error",
        status: int = 400,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.details = details


class HostError(PluginError):
    """The host API refused or failed a call; ``code`` is the host's error code."""

    def __init__(self, message: str, *, code: str = "host_error", status: int = 502) -> None:
        super().__init__(message, code=code, status=status)


class PermissionDenied(HostError):
    """The plugin called a host method its granted permissions do not cover.

    Raised before any request leaves the plugin; the runtime answers 403 ``permission_denied``.
    """

    def __init__(self, permission: str, operation: str) -> None:
        super().__init__(
            f"{operation} needs the permission {permission!r}, which this plugin was not granted",
            code="permission_denied",
            status=403,
        )
        self.permission = permission
        self.operation = operation
