"""Errors that carry their own API code and HTTP status, so every layer can raise them."""

from __future__ import annotations

from typing import Any, ClassVar


class SummitError(Exception):
    """Base of every error the API turns into ``{error: {code, message, details}}``."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class BadRequest(SummitError):
    status_code = 400
    code = "bad_request"


class NotFound(SummitError):
    status_code = 404
    code = "not_found"


class Conflict(SummitError):
    status_code = 409
    code = "conflict"


class InvalidInput(SummitError):
    status_code = 422
    code = "invalid"


class ServiceUnavailable(SummitError):
    status_code = 503
    code = "unavailable"


class RuntimeUnavailable(ServiceUnavailable):
    """The container engine cannot be reached; nothing was changed."""

    code = "runtime_unavailable"


class RuntimeFailure(SummitError):
    """The container engine answered, but refused or failed the operation."""

    status_code = 502
    code = "runtime_error"


class Unauthorized(SummitError):
    status_code = 401
    code = "unauthorized"


class Forbidden(SummitError):
    status_code = 403
    code = "permission_denied"


class TooLarge(SummitError):
    status_code = 413
    code = "too_large"


class InvalidValue(SummitError):
    """The database refused a value that validation let through (a NUL character in a
    PostgreSQL text field, a number past an INTEGER column): the value is at fault."""

    status_code = 422
    code = "invalid_value"


class Duplicate(Conflict):
    """A row with the same key (or another unique value) is already stored."""

    code = "duplicate"


class Unauthenticated(Unauthorized):
    """No valid credential for the admin API; the answer asks for a bearer token."""

    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}
