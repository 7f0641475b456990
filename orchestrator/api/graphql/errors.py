"""How errors leave the GraphQL API.

A :class:`~orchestrator.domain.errors.SummitError` raised by a service is the same refusal the
REST API sends as ``{error: {code, message, details}}`` with its HTTP status; here it is a
GraphQL error with that message and ``extensions: {code, status, details}``, so a client tells
``plugin_not_found`` from ``illegal_transition`` by the same code through either door.

Any other exception raised while resolving a field is a fault of ours, not of the request: its
message is replaced by "Unexpected error." with ``extensions.code = internal_error`` unless the
orchestrator runs with ``SUMMIT_DEV`` (the REST API likewise answers a bare
``internal_error``), and it is logged with its traceback. Errors of the document itself
(syntax, validation, the limits of ``limits.py``, variables that do not fit their types) are
the client's and pass unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.types import ExecutionContext

from orchestrator.domain.errors import SummitError

__all__ = ["ErrorShapes", "log_errors"]

log = logging.getLogger("orchestrator.api.graphql")

MASKED = "Unexpected error."


def _raised_in_a_resolver(error: GraphQLError) -> bool:
    """Whether a field's resolver raised something other than a GraphQL error (those are the
    ones to translate or mask); errors of the document and its variables have no path."""
    original = error.original_error
    return (
        error.path is not None and original is not None and not isinstance(original, GraphQLError)
    )


class ErrorShapes(MaskErrors):
    """One per operation (``MaskErrors`` keeps per-operation state)."""

    def __init__(self, *, debug: bool = False) -> None:
        super().__init__(should_mask_error=_raised_in_a_resolver, error_message=MASKED)
        self.debug = debug

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        extensions: dict[str, Any]
        if isinstance(original, SummitError):
            message = original.message
            extensions = {
                "code": original.code,
                "status": original.status_code,
                "details": original.details,
            }
        else:
            message = f"{type(original).__name__}: {original}" if self.debug else MASKED
            extensions = {"code": "internal_error", "status": 500, "details": None}
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Log what the operator must see: unexpected exceptions with their traceback, and the
    refusals the REST API logs too (a 5xx ``SummitError``); a 404 or a 409 is the caller's."""
    for error in errors:
        original = error.original_error
        if isinstance(original, SummitError):
            if original.status_code >= 500:
                log.warning("%s: %s", original.code, original.message)
        elif original is not None and not isinstance(original, GraphQLError):
            log.error(
                "unexpected error in GraphQL field %s",
                ".".join(map(str, error.path or [])),
                exc_info=original,
            )
