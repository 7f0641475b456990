"""Plain facts of the plugin protocol ``summit.plugin/v1``: its name, extension points, paths
and error codes.

Kept free of pydantic so the plugin runtime starts fast; :mod:`summit_sdk.protocol` re-exports
everything here next to the wire models, and :mod:`summit_sdk.manifest` validates manifests
against the same extension points.
"""

from enum import StrEnum
from typing import Final

PROTOCOL: Final = "summit.plugin/v1"


class ExtensionPoint(StrEnum):
    DATA_SOURCE = "data_source"
    ANALYZER = "analyzer"
    VISUALIZATION = "visualization"
    EXPORT = "export"
    AUTH_PROVIDER = "auth_provider"
    WORKFLOW = "workflow"


EXTENSION_POINTS: Final = tuple(point.value for point in ExtensionPoint)

BASE_PATH: Final = "/summit/v1"

# Error codes a plugin built with the SDK answers, with their HTTP status.
ERROR_CODES: Final = {
    "bad_request": 400,  # body is not JSON or does not match the request model
    "invalid_input": 400,  # input failed the typed extension's model (details: pydantic errors)
    "plugin_error": 400,  # default code of summit_sdk.PluginError (handlers may choose another)
    "unauthorized": 401,  # over TCP: no valid `Authorization: Bearer <SUMMIT_PLUGIN_TOKEN>`
    "permission_denied": 403,  # a host API call the plugin was not granted (PermissionDenied)
    "not_found": 404,  # no such route
    "unknown_extension": 404,  # no handler for {point}/{name}
    "method_not_allowed": 405,
    "too_many_requests": 429,  # SUMMIT_PLUGIN_CONCURRENCY calls already in flight
    "initialize_failed": 500,  # on_initialize raised
    "handler_error": 500,  # extension or event handler raised, or returned non-JSON output
    "invalid_output": 500,  # a typed extension's handler returned output its model refuses
    "shutdown_failed": 500,  # on_shutdown raised (the process still exits)
    "internal_error": 500,  # bug in the runtime itself
    "shutting_down": 503,  # call arrived after /shutdown
    "deadline_exceeded": 504,  # context.deadline_ms elapsed before the handler finished
}
