"""Catalog discovery as the API offers it: the query parameters of
``GET /v1/catalog/plugins`` checked and turned into one :func:`orchestrator.store.catalog.search`
call, and its page as the JSON the route answers (``{items, facets, total, next}``).

Also the one place that decides whether a catalog version is *compatible* with this
orchestrator (its ``compatibility.summit`` range admits our version), used by the search's
``compatible`` filter and by anything listing versions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from orchestrator import __version__
from orchestrator.domain.errors import InvalidInput
from orchestrator.domain.manifest import ExtensionPoint, Permission
from orchestrator.domain.versions import Version, VersionError, VersionRange
from orchestrator.store import catalog as catalog_store
from orchestrator.store.db import Session

__all__ = ["CatalogQuery", "compatible_with", "item_json", "newest_compatible", "search_catalog"]

_MAX_QUERY = 200


@functools.cache
def compatible_with(summit_version: str = __version__) -> Callable[[str], bool]:
    """A predicate over ``compatibility.summit`` range texts: does it admit ``summit_version``?
    A range that does not parse admits nothing (the manifest check should have refused it)."""

    @functools.cache
    def admits(range_text: str) -> bool:
        try:
            return VersionRange.parse(range_text).admits(summit_version)
        except VersionError:
            return False

    return admits


@dataclass(frozen=True)
class CatalogQuery:
    """The search's parameters, refused here (422 ``invalid``) when a value cannot mean
    anything: an unknown extension point, permission or sort, a limit out of range."""

    q: str | None = None
    point: str | None = None
    category: str | None = None
    permission: str | None = None
    signed: bool | None = None
    compatible: bool = False
    sort: str | None = None
    cursor: str | None = None
    limit: int = 20

    def __post_init__(self) -> None:
        if self.q is not None and len(self.q) > _MAX_QUERY:
            raise InvalidInput(f"q is at most {_MAX_QUERY} characters", code="invalid_query")
        _one_of("point", self.point, [p.value for p in ExtensionPoint])
        _one_of("permission", self.permission, [p.value for p in Permission])
        _one_of("sort", self.sort, list(catalog_store.SORTS))
        if not 1 <= self.limit <= catalog_store.MAX_PAGE:
            raise InvalidInput(
                f"limit is between 1 and {catalog_store.MAX_PAGE}", code="invalid_limit"
            )
        if self.category is not None:
            # Categories are stored lower-cased; "Data-Viz" finds "data-viz".
            object.__setattr__(self, "category", self.category.strip().lower() or None)


def _one_of(name: str, value: str | None, allowed: list[str]) -> None:
    if value is not None and value not in allowed:
        raise InvalidInput(
            f"{name} is one of {', '.join(allowed)}",
            code=f"invalid_{name}",
            details={name: value[:80]},
        )


def search_catalog(
    session: Session, query: CatalogQuery, *, summit_version: str = __version__
) -> dict[str, Any]:
    page = catalog_store.search(
        session,
        q=query.q,
        point=query.point,
        category=query.category,
        permission=query.permission,
        signed=query.signed,
        compatible=compatible_with(summit_version) if query.compatible else None,
        sort=query.sort,
        cursor=query.cursor,
        limit=query.limit,
    )
    return {
        "items": [item_json(item) for item in page.items],
        "facets": page.facets,
        "total": page.total,
        "next": page.next,
    }


def item_json(item: catalog_store.SearchItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "publisher": item.publisher,
        "description": item.description,
        "latest_version": item.latest_version,
        "compatible_version": item.compatible_version,
        "published_at": item.latest_published_at.isoformat(),
        "categories": item.categories,
        "keywords": item.keywords,
        "points": item.points,
        "permissions": item.permissions,
        "signed": item.signed,
        "deprecated": item.deprecated,
        "successor": item.successor_id,
        "installs": item.installs,
        "active_installs": item.active_installs,
        "score": item.score,
    }


class Published(Protocol):
    """A published version as the rule below reads it: a catalog row, or a remote catalog's
    entry."""

    @property
    def version(self) -> str: ...
    @property
    def summit_range(self) -> str: ...
    @property
    def yanked(self) -> bool: ...


Row = TypeVar("Row", bound=Published)


def newest_compatible(
    rows: Sequence[Row], summit_version: str = __version__, after: str | None = None
) -> Row | None:
    """The newest version that is not yanked, that this orchestrator can run, and (with
    ``after``) newer than that version: what an update notice names. The one rule for the
    local catalog and a remote one (whose version that is not semver is passed over)."""
    admits = compatible_with(summit_version)
    floor = Version.parse(after) if after else None
    best: tuple[Version, Row] | None = None
    for row in rows:
        if row.yanked or not admits(row.summit_range):
            continue
        try:
            version = Version.parse(row.version)
        except VersionError:
            continue
        if floor is not None and not floor < version:
            continue
        if best is None or best[0] < version:
            best = (version, row)
    return best[1] if best is not None else None
