"""The GraphQL API at ``/graphql``: the REST API's services, roles and rules behind a second
door (``schema.py`` says how). ``make_graphql_router(settings)`` is what the app mounts."""

from .schema import make_graphql_router, make_schema

__all__ = ["make_graphql_router", "make_schema"]
