"""Who calls the GraphQL API and with what: built once per HTTP request (or WebSocket), from
the same credentials and the same rule as the REST API.

The caller's role comes from :class:`~orchestrator.services.extensions.AdminAccess`
(``api/deps.access_of``), the REST API's one rule for admin credentials: the bootstrap admin
token, an API token, or what the configured ``auth_provider`` plugin grants. Over HTTP the
token is the request's ``Authorization: Bearer`` header and a request without a valid one is
refused before any GraphQL is read (401, the REST API's error body). Over a WebSocket it is
the ``Authorization`` entry of the ``connection_init`` payload (or the upgrade request's
header), judged when that message arrives (``schema.GraphQLRouter.on_ws_connect``). What each
role may then do is decided per field (``permissions.py``) with the REST API's role order.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import State
from starlette.requests import HTTPConnection, Request
from strawberry.fastapi import BaseContext

from orchestrator.api.deps import access_of, batches_of, caller
from orchestrator.domain.errors import Unauthenticated
from orchestrator.security.access import Caller, Role

from .loaders import Loaders, make_loaders

__all__ = [
    "GRAPHQL_PATH",
    "GraphQLContext",
    "batches_of",
    "bearer_token",
    "connection_token",
    "context_getter",
]

GRAPHQL_PATH = "/graphql"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (FastAPI's own parsing)."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


class GraphQLContext(BaseContext):
    """``role`` is None on a WebSocket until its ``connection_init`` is accepted."""

    def __init__(
        self,
        *,
        connection: HTTPConnection,
        token: str | None,
        api_key: str | None,
        role: Role | None,
    ) -> None:
        super().__init__()
        self.connection = connection
        self.state: State = connection.app.state
        self.token = token
        self.api_key = api_key
        self.role = role
        self.loaders: Loaders = self.fresh_loaders()
        self._caller: Caller | None = None

    def fresh_loaders(self) -> Loaders:
        """New, empty DataLoaders (one set per operation: nothing is served from a cache
        that an earlier operation on the same WebSocket filled)."""
        self.loaders = make_loaders(batches_of(self.state), getattr(self.state, "usage", None))
        return self.loaders

    async def authenticate(self, token: str | None, api_key: str | None) -> Role | None:
        """Judge ``token`` (or ``api_key``, for the auth provider) with the REST API's rule."""
        role = await access_of(self.state).role_of(
            token, api_key=api_key or token, method="POST", path=GRAPHQL_PATH
        )
        if role is not None:
            self.token, self.api_key, self.role, self._caller = token, api_key, role, None
        return role

    async def caller(self) -> Caller:
        """Who makes this request, as the history and the audit log name them (the REST
        API's ``deps.caller``; one database read for an API token, so only mutations ask)."""
        if self.role is None:
            raise Unauthenticated("a valid bearer token is required")
        if self._caller is None:
            credentials = (
                HTTPAuthorizationCredentials(scheme="Bearer", credentials=self.token)
                if self.token is not None
                else None
            )
            # deps.caller reads nothing of its request but ``app.state``, which a WebSocket
            # has as well.
            self._caller = await caller(
                cast(Request, self.connection), self.role.label, credentials
            )
        return self._caller


async def context_getter(connection: HTTPConnection) -> GraphQLContext:
    """The context of one HTTP request (401 without a valid credential) or one WebSocket
    (judged later, at ``connection_init``)."""
    if connection.scope["type"] == "websocket":
        return GraphQLContext(connection=connection, token=None, api_key=None, role=None)
    token = bearer_token(connection.headers.get("authorization"))
    context = GraphQLContext(connection=connection, token=None, api_key=None, role=None)
    if await context.authenticate(token, connection.headers.get("x-api-key")) is None:
        raise Unauthenticated("a valid bearer token is required")
    return context


def connection_token(params: Any, connection: HTTPConnection) -> str | None:
    """The bearer token of a WebSocket: the ``Authorization`` entry of the ``connection_init``
    payload (browsers cannot set headers on a WebSocket), else the upgrade request's header."""
    if isinstance(params, dict):
        for key in ("Authorization", "authorization"):
            value = params.get(key)
            if isinstance(value, str):
                return bearer_token(value)
    return bearer_token(connection.headers.get("authorization"))
