"""What one GraphQL operation may ask of the orchestrator, checked before any field runs.

* depth: fields nested at most ``graphql_max_depth`` levels (Strawberry's
  ``QueryDepthLimiter``; introspection fields do not count);
* aliases: at most ``graphql_max_aliases`` (``MaxAliasesLimiter``, fragments expanded), since
  each alias runs its field again;
* tokens: a document of at most ``graphql_max_tokens`` lexical tokens (``MaxTokensLimiter``:
  the parser stops there, so a huge document costs no more than a small one);
* cost: at most ``graphql_max_complexity`` (:class:`QueryCost`): every field costs 1, and the
  fields under a field with a ``limit`` argument (a list, or a page whose items are the list)
  cost once per item it may hold: that ``limit`` as written, from the operation's variables, or
  its default; a list without one counts :data:`ASSUMED_LIST_SIZE` items.
  ``plugins(limit: 1000) { history(limit: 1000) { items { id } } }`` is refused before it
  reads a row;
* introspection: only when ``graphql_introspection`` says so (default: with ``SUMMIT_DEV``).
  Without it the schema also stops suggesting field names in its errors.

Every refusal is an ordinary GraphQL error of the document (``data: null``, HTTP 200).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    is_interface_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from orchestrator.config import Settings

__all__ = ["ASSUMED_LIST_SIZE", "Limits", "QueryCost", "operation_cost"]

# Items assumed in a list field without a ``limit`` argument (a plugin's versions, a point's
# providers): small in practice, and never unbounded in cost.
ASSUMED_LIST_SIZE = 10
# The cost walk stops this deep; the depth limit refuses such a document anyway.
_WALK_DEPTH = 64


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 5000
    max_complexity: int = 10_000
    introspection: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """From ``SUMMIT_GRAPHQL_*`` settings; introspection follows ``SUMMIT_DEV`` unless
        ``graphql_introspection`` is set."""
        introspection = settings.graphql_introspection
        if introspection is None:
            introspection = settings.dev
        return cls(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_tokens=settings.graphql_max_tokens,
            max_complexity=settings.graphql_max_complexity,
            introspection=bool(introspection),
        )

    def extensions(self) -> list[Callable[[], SchemaExtension]]:
        """Schema extension factories (one instance per operation)."""
        out: list[Callable[[], SchemaExtension]] = [
            functools.partial(MaxTokensLimiter, max_token_count=self.max_tokens),
            functools.partial(QueryDepthLimiter, max_depth=self.max_depth),
            functools.partial(MaxAliasesLimiter, max_alias_count=self.max_aliases),
            functools.partial(QueryCost, max_cost=self.max_complexity),
        ]
        if not self.introspection:
            out.append(DisableIntrospection)
        return out


class QueryCost(SchemaExtension):
    """Refuses an operation whose :func:`operation_cost` is over ``max_cost``. A rule made
    per operation, because a ``limit`` may come from the operation's variables."""

    def __init__(self, *, max_cost: int) -> None:
        self.max_cost = max_cost

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        rule = _cost_rule(self.max_cost, dict(ctx.variables or {}), ctx.operation_name)
        ctx.validation_rules = (*ctx.validation_rules, rule)
        yield


def _cost_rule(
    max_cost: int, variables: Mapping[str, Any], operation_name: str | None
) -> type[ValidationRule]:
    class CostRule(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            cost = operation_cost(
                context.schema, context.document, variables, operation_name=operation_name
            )
            if cost > max_cost:
                context.report_error(
                    GraphQLError(
                        f"the operation costs {cost}; at most {max_cost} is allowed (ask for "
                        "fewer items with 'limit', or fewer fields under lists)",
                        extensions={
                            "code": "query_too_complex",
                            "details": {"cost": cost, "max_cost": max_cost},
                        },
                    )
                )

    return CostRule


@dataclass(frozen=True)
class _Walk:
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any],
    *,
    operation_name: str | None = None,
) -> int:
    """The cost of the operation ``operation_name`` (the costliest, when it is not given):
    fields cost 1 each, times the items of every list above them."""
    walk = _Walk(
        fragments={
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        },
        variables=variables,
    )
    worst = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is not None and (
            definition.name is None or definition.name.value != operation_name
        ):
            continue
        root = schema.get_root_type(definition.operation)
        if root is not None:
            cost = _selection_cost(definition.selection_set, root, walk, (), 0, False)
            worst = max(worst, cost)
    return worst


def _selection_cost(
    selection_set: SelectionSetNode | None,
    parent: Any,
    walk: _Walk,
    spread: tuple[str, ...],
    depth: int,
    paged: bool,
) -> int:
    if selection_set is None or depth > _WALK_DEPTH:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            total += _field_cost(selection, parent, walk, spread, depth, paged)
        elif isinstance(selection, InlineFragmentNode):
            total += _selection_cost(selection.selection_set, parent, walk, spread, depth, paged)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = walk.fragments.get(name)
            if fragment is not None and name not in spread:  # a cycle is validation's to refuse
                total += _selection_cost(
                    fragment.selection_set, parent, walk, (*spread, name), depth, paged
                )
    return total


def _field_cost(
    node: FieldNode, parent: Any, walk: _Walk, spread: tuple[str, ...], depth: int, paged: bool
) -> int:
    """1, plus the cost of the fields under it times the items it may hold. A field with a
    ``limit`` holds that many (a list, or a page whose list is its items: ``paged``); a list
    without one holds :data:`ASSUMED_LIST_SIZE`, unless it is the items of such a page."""
    name = node.name.value
    if name.startswith("__"):
        return 0  # __typename, and introspection (off unless allowed)
    field: GraphQLField | None = (
        parent.fields.get(name) if is_object_type(parent) or is_interface_type(parent) else None
    )
    if field is None:
        return 1  # an unknown field: validation refuses it
    kind = field.type.of_type if is_non_null_type(field.type) else field.type
    listed = is_list_type(kind)
    limit = _limit(node, field, walk.variables)
    if limit is not None:
        items, page = limit, not listed
    elif listed:
        items, page = (1 if paged else ASSUMED_LIST_SIZE), False
    else:
        items, page = 1, False
    children = _selection_cost(
        node.selection_set, get_named_type(field.type), walk, spread, depth + 1, page
    )
    return 1 + items * children


def _limit(node: FieldNode, field: GraphQLField, variables: Mapping[str, Any]) -> int | None:
    """The field's ``limit``: as written, from a variable, or its default (None: it has no
    such argument)."""
    declared = field.args.get("limit")
    if declared is None:
        return None
    for argument in node.arguments or ():
        if argument.name.value != "limit":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return max(0, int(value.value))
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            if isinstance(given, int):
                return max(0, given)
    default = declared.default_value
    return default if isinstance(default, int) else ASSUMED_LIST_SIZE
