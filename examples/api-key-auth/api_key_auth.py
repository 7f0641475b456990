"""API Key Auth: an auth provider checking an API key or an HMAC request signature.

The shared secret is read from the host's secret store (``secrets:read``); its name comes from
the config (``secret_name``, default ``api-key``). Comparisons are constant-time.
"""

import hashlib
import hmac
import time

from summit_sdk import AuthProvider, PluginContext, auth_provider, collect
from summit_sdk.points import AuthRequest, AuthResult

PLUGIN_ID = "com.example.api-key-auth"
PLUGIN_VERSION = "1.0.0"
MAX_SKEW_S = 300


def signature(secret: str, timestamp: str, method: str, path: str, body: str) -> str:
    """Hex HMAC-SHA256 of ``timestamp\\nMETHOD\\npath\\nbody``."""
    message = "\n".join([timestamp, method.upper(), path, body]).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@auth_provider("api-key")
class ApiKeyAuth(AuthProvider):
    """``credentials.api_key``, or headers ``x-signature`` + ``x-timestamp`` over the request."""

    def authenticate(self, request: AuthRequest, ctx: PluginContext) -> AuthResult:
        secret = ctx.host.secrets.get(str(ctx.config.get("secret_name", "api-key")))
        principal = str(ctx.config.get("principal", "api-client"))
        roles = [str(ctx.config.get("role", "viewer"))]
        api_key = request.credentials.get("api_key")
        if api_key is not None:
            if hmac.compare_digest(api_key.encode(), secret.encode()):
                return AuthResult.allow(principal, roles=roles)
            return AuthResult.refuse("invalid API key")
        headers = {k.lower(): v for k, v in request.headers.items()}
        given, timestamp = headers.get("x-signature"), headers.get("x-timestamp")
        if given is None or timestamp is None:
            return AuthResult.refuse("no API key or signature")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return AuthResult.refuse("timestamp missing or too far from now")
        expected = signature(
            secret, timestamp, request.method or "", request.path or "", request.body or ""
        )
        if hmac.compare_digest(given.lower().encode(), expected.encode()):
            return AuthResult.allow(principal, roles=roles)
        return AuthResult.refuse("invalid signature")


plugin = collect(__name__, permissions=["secrets:read"])
