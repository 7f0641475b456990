"""Field-level permissions: the REST API's roles (``security/access.py``), in its order.

Every root field names the least role that may use it: reads need ``viewer`` (as ``GET /v1/...``
does), plugin changes and ``execute`` need ``operator`` (as their REST routes do), API tokens
need ``admin``. A role below it gets the REST API's 403 refusal, ``forbidden`` with the role it
has and the one it needs, as a GraphQL error (``errors.py`` shapes it); the rest of the
operation still runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from strawberry.permission import BasePermission
from strawberry.types import Info

from orchestrator.domain.errors import Forbidden, Unauthenticated
from orchestrator.security.access import Role

from .context import GraphQLContext

__all__ = ["IsAdmin", "IsOperator", "IsViewer"]


class _RoleAtLeast(BasePermission):
    needed: ClassVar[Role]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        context: GraphQLContext = info.context
        role = context.role
        if role is None:  # a WebSocket operation before connection_init was accepted
            raise Unauthenticated("a valid bearer token is required")
        if role < self.needed:
            what = f"{info.path.typename}.{info.field_name}"
            # Raised rather than returned: the refusal carries the REST API's code and details.
            raise Forbidden(
                f"the {role.label} role may not use {what}; it needs {self.needed.label}",
                code="forbidden",
                details={"role": role.label, "required": self.needed.label},
            )
        return True


class IsViewer(_RoleAtLeast):
    needed = Role.VIEWER


class IsOperator(_RoleAtLeast):
    needed = Role.OPERATOR


class IsAdmin(_RoleAtLeast):
    needed = Role.ADMIN
