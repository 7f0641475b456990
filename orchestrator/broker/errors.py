"""What a call into a plugin fails with, and which of those failures count against it.

Every error is a :class:`SummitError`, so the API answers it with its own status and code;
``details`` always names the plugin. Refusals of the broker's own guards (circuit open, rate
and concurrency limits) are in ``breaker.py`` and ``limits.py``.
"""

from __future__ import annotations

from orchestrator.domain.errors import SummitError

__all__ = [
    "InvalidAnswer",
    "InvalidOutput",
    "PluginCallError",
    "PluginRejected",
    "PluginTimeout",
    "PluginUnreachable",
    "ResponseTooLarge",
    "counts_against_plugin",
    "retryable",
]


class PluginCallError(SummitError):
    """The plugin could not be reached, broke the connection or failed (HTTP 5xx)."""

    status_code = 502
    code = "plugin_error"


class PluginUnreachable(PluginCallError):
    """The call did not get an answer: no connection, or the connection broke. The same 502
    for the caller; the broker asks whether the route is stale before it says so."""


class PluginTimeout(SummitError):
    status_code = 504
    code = "plugin_timeout"


class ResponseTooLarge(PluginCallError):
    code = "response_too_large"


class InvalidOutput(PluginCallError):
    code = "invalid_output"


class InvalidAnswer(PluginCallError):
    """The answer is JSON the broker will not take (nested deeper than the limit)."""

    code = "invalid_answer"


class PluginRejected(SummitError):
    """The plugin refused the input (it answered 4xx): the caller's problem, not a failure."""

    status_code = 422
    code = "plugin_rejected_input"


def counts_against_plugin(exc: BaseException) -> bool:
    """Failures that say the plugin is unwell (not the caller's fault, not our refusal): the
    ones its circuit breaker counts."""
    return isinstance(exc, PluginTimeout | PluginCallError)


def retryable(exc: BaseException) -> bool:
    """Failures worth another attempt of an idempotent extension: an answer that was too big
    or malformed would be again."""
    return counts_against_plugin(exc) and not isinstance(
        exc, ResponseTooLarge | InvalidOutput | InvalidAnswer
    )
