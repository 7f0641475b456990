"""The plugin catalog's rows: publishers and namespaces, publishing (immutable versions, yank,
deprecation), full-text search with facets and cursor paging, and daily statistics.

One API over two full-text engines (migration ``0008`` builds them): PostgreSQL's ``tsvector``
ranked by ``ts_rank_cd``, SQLite's FTS5 ranked by ``bm25()``. Both index a plugin's *latest
visible version* (the newest stable, not yanked, version; the newest pre-release when there is
no stable one), copied onto its ``catalog_plugins`` row whenever it changes, so a search reads
one row per plugin. Filters and facets go through ``catalog_tags``, plain SQL on both.

User text never reaches either query language as syntax: a query is cut into words (letters
and digits only), each quoted as a term, the last one as a prefix (``wea`` finds ``weather``).
The two engines stem alike (Porter / ``english``); PostgreSQL also drops English stop words,
so a query made only of them (``the``) finds nothing there.

Paging is keyset paging: the cursor holds the last item's sort key and id, so a plugin
published between two pages neither repeats nor hides an item that was already due. (On
SQLite the BM25 score depends on the whole index, so a publish between pages of a *relevance*
search may shift scores a little; every other order is exact.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from orchestrator.domain.errors import Conflict, Duplicate, Forbidden, InvalidInput, NotFound
from orchestrator.domain.images import check_image_reference
from orchestrator.domain.manifest import Manifest
from orchestrator.domain.versions import Version, VersionError
from orchestrator.store.catalog_models import (
    CatalogDailyStat,
    CatalogPlugin,
    CatalogTag,
    CatalogVersion,
    Publisher,
    PublisherNamespace,
)
from orchestrator.store.models import utcnow

__all__ = [
    "MAX_PAGE",
    "SIGNATURE_STATUSES",
    "SORTS",
    "DailyStats",
    "Published",
    "SearchItem",
    "SearchPage",
    "StatsSummary",
    "add_publisher",
    "claim_namespace",
    "daily_stats",
    "delete_plugin",
    "deprecate_plugin",
    "get_plugin",
    "get_publisher",
    "get_version",
    "latest_version",
    "list_namespaces",
    "list_versions",
    "namespace_owner",
    "publish_version",
    "publisher_for_token",
    "record_stats",
    "search",
    "stats_summary",
    "undeprecate_plugin",
    "unyank_version",
    "yank_version",
]

SIGNATURE_STATUSES = ("unsigned", "verified", "unverified", "invalid")
SORTS = ("relevance", "name", "newest", "popular")
MAX_PAGE = 100
MAX_STATS_DAYS = 366

# Compatibility predicates take a version's ``compatibility.summit`` range text.
Compatible = Callable[[str], bool]

_PLUGINS = CatalogPlugin.__table__  # type: ignore[attr-defined]
_TAGS = CatalogTag.__table__  # type: ignore[attr-defined]
_VERSIONS = CatalogVersion.__table__  # type: ignore[attr-defined]
_STATS = CatalogDailyStat.__table__  # type: ignore[attr-defined]

_MAX_README = 200_000  # characters; a tsvector holds at most 1 MB
_MAX_CHANGELOG = 20_000
_MAX_TAGS = {"categories": 8, "keywords": 20}
_TAG = re.compile(r"[a-z0-9][a-z0-9._+#-]{0,47}")
_LINK_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_NAMESPACE = re.compile(r"([a-z][a-z0-9-]*\.)([a-z0-9][a-z0-9-]*\.)*")
_PUBLISHER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
_WORD = re.compile(r"[^\W_]+")
_MAX_TERMS = 8


# -- publishers and namespaces ----------------------------------------------------------------


def add_publisher(
    session: Session, *, publisher_id: str, name: str, token_id: str | None = None
) -> Publisher:
    if not _PUBLISHER_ID.fullmatch(publisher_id):
        raise InvalidInput(
            "a publisher id is lowercase letters, digits, '-' or '_' (at most 64)",
            code="invalid_publisher",
            details={"publisher": publisher_id[:80]},
        )
    if session.get(Publisher, publisher_id) is not None:
        raise Duplicate(f"publisher {publisher_id!r} already exists")
    row = Publisher(id=publisher_id, name=name[:128], token_id=token_id)
    session.add(row)
    session.flush()
    return row


def get_publisher(session: Session, *, publisher_id: str) -> Publisher | None:
    return session.get(Publisher, publisher_id)


def publisher_for_token(session: Session, *, token_id: str) -> Publisher | None:
    return session.exec(select(Publisher).where(Publisher.token_id == token_id)).first()


def claim_namespace(session: Session, *, publisher_id: str, prefix: str) -> PublisherNamespace:
    """Reserve plugin ids starting with ``prefix`` (``com.example.``) for one publisher.

    Refused when another publisher holds a namespace inside or around it, or already
    publishes a plugin under it: a claim never takes what someone else has."""
    if not _NAMESPACE.fullmatch(prefix) or len(prefix) > 128:
        raise InvalidInput(
            "a namespace is a reverse-DNS prefix ending with a dot, such as 'com.example.'",
            code="invalid_namespace",
            details={"prefix": prefix[:130]},
        )
    if session.get(Publisher, publisher_id) is None:
        raise NotFound(f"no publisher {publisher_id!r}", code="unknown_publisher")
    for other in session.exec(select(PublisherNamespace)).all():
        overlaps = other.prefix.startswith(prefix) or prefix.startswith(other.prefix)
        if overlaps and other.publisher_id != publisher_id:
            raise Conflict(
                f"{other.prefix!r} belongs to another publisher",
                code="namespace_taken",
                details={"prefix": other.prefix},
            )
        if other.prefix == prefix:
            return other
    # Plugin ids never hold '%' or '_' (the manifest's id pattern), so LIKE is a prefix test.
    foreign = session.exec(
        select(CatalogPlugin.id).where(
            col(CatalogPlugin.id).like(prefix + "%"), CatalogPlugin.publisher != publisher_id
        )
    ).first()
    if foreign is not None:
        raise Conflict(
            f"{foreign} is already published by another publisher",
            code="namespace_taken",
            details={"plugin": foreign},
        )
    row = PublisherNamespace(prefix=prefix, publisher_id=publisher_id)
    session.add(row)
    session.flush()
    return row


def list_namespaces(session: Session, *, publisher_id: str) -> list[str]:
    stmt = select(PublisherNamespace.prefix).where(PublisherNamespace.publisher_id == publisher_id)
    return sorted(session.exec(stmt).all())


def namespace_owner(session: Session, *, plugin_id: str) -> str | None:
    """The publisher whose namespace holds ``plugin_id`` (the longest prefix), if any."""
    parts = plugin_id.split(".")
    prefixes = [".".join(parts[:n]) + "." for n in range(1, len(parts))]
    if not prefixes:
        return None
    stmt = select(PublisherNamespace).where(col(PublisherNamespace.prefix).in_(prefixes))
    rows = session.exec(stmt).all()
    if not rows:
        return None
    return max(rows, key=lambda r: len(r.prefix)).publisher_id


# -- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """The stored version; ``created`` is False when the same digest was already published."""

    version: CatalogVersion
    created: bool


def publish_version(
    session: Session,
    *,
    manifest: Manifest,
    image: str,
    publisher: str,
    published_by: str,
    readme: str = "",
    categories: Sequence[str] = (),
    keywords: Sequence[str] = (),
    links: Mapping[str, str] | None = None,
    changelog: str = "",
    signature: dict[str, Any] | None = None,
    signature_status: str = "unsigned",
    scan_report: dict[str, Any] | None = None,
    scan_summary: dict[str, Any] | None = None,
    license: str | None = None,
    price: dict[str, Any] | None = None,
) -> Published:
    """Publish ``manifest``'s version of its plugin, its image named by digest.

    A version is immutable: publishing it again with the same digest changes nothing and
    answers the stored version (a retried upload succeeds); with another digest it is a 409
    ``version_immutable``. Only the plugin's publisher may publish it, and an id inside a
    namespace only by that namespace's publisher."""
    plugin_id, version = manifest.id, manifest.version
    digest = _image_digest(image)
    if session.get(Publisher, publisher) is None:
        raise NotFound(f"no publisher {publisher!r}", code="unknown_publisher")
    plugin = _plugin_for_update(session, plugin_id)
    if plugin is not None and plugin.publisher != publisher:
        raise Forbidden(
            f"{plugin_id} is published by another publisher",
            code="not_publisher",
            details={"plugin": plugin_id},
        )
    owner = namespace_owner(session, plugin_id=plugin_id)
    if owner is not None and owner != publisher:
        raise Forbidden(
            f"{plugin_id} is inside another publisher's namespace",
            code="namespace_taken",
            details={"plugin": plugin_id},
        )
    existing = session.get(CatalogVersion, (plugin_id, version))
    if existing is not None:
        if existing.digest == digest:
            return Published(existing, created=False)
        raise Conflict(
            f"{plugin_id} {version} is already published with another image; "
            "a published version never changes: publish a new version",
            code="version_immutable",
            details={"plugin": plugin_id, "version": version, "digest": existing.digest},
        )
    if len(version) > 64:
        raise InvalidInput("a version is at most 64 characters", code="invalid_version")
    if signature_status not in SIGNATURE_STATUSES:
        raise InvalidInput(
            f"signature_status is one of {', '.join(SIGNATURE_STATUSES)}",
            code="invalid_signature_status",
        )
    if signature is None and signature_status != "unsigned":
        raise InvalidInput("a version without a signature is 'unsigned'", code="invalid_signature")
    row = CatalogVersion(
        plugin_id=plugin_id,
        version=version,
        image=image,
        digest=digest,
        manifest=manifest.to_json(),
        summit_range=manifest.compatibility.get("summit", "*")[:128],
        readme=_bounded_text(readme, "readme", _MAX_README),
        categories=_tags(categories, "categories"),
        keywords=_tags(keywords, "keywords"),
        links=_links(links or {}),
        changelog=_bounded_text(changelog, "changelog", _MAX_CHANGELOG),
        license=(license or manifest.license or None),
        price=price,
        signature=signature,
        signature_status=signature_status,
        scan_report=scan_report,
        scan_summary=scan_summary,
        published_by=published_by[:160],
    )
    if row.license is not None and len(row.license) > 64:
        raise InvalidInput("a licence is at most 64 characters", code="invalid_license")
    if plugin is None:
        plugin = CatalogPlugin(id=plugin_id, publisher=publisher, name=manifest.name, sort_name="")
        _copy_latest(plugin, row)
        session.add(plugin)
        session.flush()
        session.add(row)
        _write_tags(session, plugin_id, row)
        session.flush()
    else:
        session.add(row)
        session.flush()
        _refresh_latest(session, plugin)
    return Published(row, created=True)


def yank_version(session: Session, *, plugin_id: str, version: str, reason: str) -> CatalogVersion:
    """Hide a version from resolution and search (still installable by exact version, with a
    warning). Yanking a yanked version keeps its first reason and time."""
    plugin = _require_plugin(session, plugin_id)
    row = _require_version(session, plugin_id, version)
    if not row.yanked:
        row.yanked, row.yanked_reason, row.yanked_at = True, reason[:2000], utcnow()
        session.add(row)
        session.flush()
        _refresh_latest(session, plugin)
    return row


def unyank_version(session: Session, *, plugin_id: str, version: str) -> CatalogVersion:
    plugin = _require_plugin(session, plugin_id)
    row = _require_version(session, plugin_id, version)
    if row.yanked:
        row.yanked, row.yanked_reason, row.yanked_at = False, None, None
        session.add(row)
        session.flush()
        _refresh_latest(session, plugin)
    return row


def deprecate_plugin(
    session: Session, *, plugin_id: str, reason: str, successor_id: str | None = None
) -> CatalogPlugin:
    """Mark a plugin deprecated, naming its successor (a plugin of the catalog) if any. It
    stays installable and searchable, after every plugin that is not deprecated."""
    plugin = _require_plugin(session, plugin_id)
    if successor_id is not None:
        if successor_id == plugin_id:
            raise InvalidInput("a plugin cannot succeed itself", code="invalid_successor")
        if session.get(CatalogPlugin, successor_id) is None:
            raise InvalidInput(
                f"the successor {successor_id} is not in the catalog",
                code="invalid_successor",
                details={"successor": successor_id},
            )
    plugin.deprecated, plugin.deprecation_reason = True, reason[:2000]
    plugin.successor_id, plugin.updated_at = successor_id, utcnow()
    session.add(plugin)
    session.flush()
    return plugin


def undeprecate_plugin(session: Session, *, plugin_id: str) -> CatalogPlugin:
    plugin = _require_plugin(session, plugin_id)
    plugin.deprecated, plugin.deprecation_reason, plugin.successor_id = False, None, None
    plugin.updated_at = utcnow()
    session.add(plugin)
    session.flush()
    return plugin


def delete_plugin(session: Session, *, plugin_id: str) -> bool:
    """Take a plugin down (a catalog operator's act): every version, tag and statistic goes
    with it (the database cascades); False if there was no such plugin."""
    result = session.execute(sa.delete(_PLUGINS).where(_PLUGINS.c.id == plugin_id))
    return bool(getattr(result, "rowcount", 0))


def get_plugin(session: Session, *, plugin_id: str) -> CatalogPlugin | None:
    return session.get(CatalogPlugin, plugin_id)


def get_version(session: Session, *, plugin_id: str, version: str) -> CatalogVersion | None:
    """A version by its exact number, yanked or not (installing a yanked one is allowed)."""
    return session.get(CatalogVersion, (plugin_id, version))


def list_versions(
    session: Session, *, plugin_id: str, include_yanked: bool = True
) -> list[CatalogVersion]:
    """A plugin's versions, newest first (semantic version order)."""
    stmt = select(CatalogVersion).where(CatalogVersion.plugin_id == plugin_id)
    if not include_yanked:
        stmt = stmt.where(col(CatalogVersion.yanked).is_(False))
    return sorted(session.exec(stmt).all(), key=lambda v: _semver(v.version), reverse=True)


def latest_version(
    session: Session, *, plugin_id: str, compatible: Compatible | None = None
) -> CatalogVersion | None:
    """The version resolution picks: the newest stable one that is not yanked (a pre-release
    only when there is no stable one), among those ``compatible`` admits when given."""
    versions = list_versions(session, plugin_id=plugin_id, include_yanked=False)
    if compatible is not None:
        versions = [v for v in versions if compatible(v.summit_range)]
    chosen = _pick_latest([v.version for v in versions])
    return next((v for v in versions if v.version == chosen), None)


def _require_plugin(session: Session, plugin_id: str) -> CatalogPlugin:
    plugin = _plugin_for_update(session, plugin_id)
    if plugin is None:
        raise NotFound(f"no plugin {plugin_id} in the catalog", code="plugin_not_found")
    return plugin


def _require_version(session: Session, plugin_id: str, version: str) -> CatalogVersion:
    row = session.get(CatalogVersion, (plugin_id, version))
    if row is None:
        raise NotFound(
            f"{plugin_id} has no version {version} in the catalog", code="version_not_found"
        )
    return row


def _plugin_for_update(session: Session, plugin_id: str) -> CatalogPlugin | None:
    # The row lock serialises publishers and yankers of one plugin on PostgreSQL (SQLite has
    # one writer at a time anyway), so two of them never both pick the "latest" version.
    stmt = select(CatalogPlugin).where(CatalogPlugin.id == plugin_id).with_for_update()
    return session.exec(stmt).first()


def _image_digest(image: str) -> str:
    check_image_reference(image)
    match = _DIGEST.search(image)
    if match is None:
        raise InvalidInput(
            "a published image is named by digest (registry/name@sha256:<64 hex>), so what "
            "is installed is what was published",
            code="image_not_by_digest",
            details={"image": image[:300]},
        )
    return match.group(1)


def _bounded_text(text: str, what: str, limit: int) -> str:
    if len(text) > limit:
        raise InvalidInput(
            f"the {what} is {len(text)} characters long; at most {limit} are allowed",
            code="too_long",
            details={"field": what},
        )
    return text


def _tags(values: Iterable[str], what: str) -> list[str]:
    """Lower-cased, deduplicated in order; each a short word (``data-viz``, ``c++``)."""
    out: list[str] = []
    for raw in values:
        value = raw.strip().lower().replace(" ", "-")
        if not _TAG.fullmatch(value):
            raise InvalidInput(
                f"{raw[:60]!r} is not a valid entry of {what}: letters, digits and . _ + # - "
                "(at most 48)",
                code="invalid_tag",
                details={"field": what, "value": raw[:60]},
            )
        if value not in out:
            out.append(value)
    if len(out) > _MAX_TAGS[what]:
        raise InvalidInput(
            f"at most {_MAX_TAGS[what]} {what} are allowed",
            code="too_many",
            details={"field": what},
        )
    return out


def _links(links: Mapping[str, str]) -> dict[str, str]:
    if len(links) > 10:
        raise InvalidInput("at most 10 links are allowed", code="too_many")
    for name, url in links.items():
        if not _LINK_NAME.fullmatch(name) or not url.startswith(("https://", "http://")):
            raise InvalidInput(
                "a link is a short lowercase name and an http(s) URL",
                code="invalid_link",
                details={"link": name[:40]},
            )
        if len(url) > 2048:
            raise InvalidInput("a link is at most 2048 characters", code="invalid_link")
    return dict(links)


def _semver(text: str) -> Version:
    try:
        return Version.parse(text)
    except VersionError:  # only valid versions are published; sort anything else first
        return Version(0, 0, 0, ("0",))


def _pick_latest(versions: Iterable[str]) -> str | None:
    parsed = [(_semver(v), v) for v in versions]
    stable = [p for p in parsed if not p[0].prerelease]
    pool = stable or parsed
    return max(pool)[1] if pool else None


def _refresh_latest(session: Session, plugin: CatalogPlugin) -> None:
    """Point ``plugin`` at its latest visible version and copy that version's searchable
    fields and facet tags, if it changed."""
    stmt = select(CatalogVersion.version).where(
        CatalogVersion.plugin_id == plugin.id, col(CatalogVersion.yanked).is_(False)
    )
    chosen = _pick_latest(session.exec(stmt).all())
    if chosen == plugin.latest_version:
        return
    if chosen is None:
        plugin.latest_version, plugin.latest_published_at = None, None
        session.execute(sa.delete(_TAGS).where(_TAGS.c.plugin_id == plugin.id))
    else:
        row = session.get(CatalogVersion, (plugin.id, chosen))
        assert row is not None
        _copy_latest(plugin, row)
        _write_tags(session, plugin.id, row)
    plugin.updated_at = utcnow()
    session.add(plugin)
    session.flush()


def _copy_latest(plugin: CatalogPlugin, row: CatalogVersion) -> None:
    manifest = row.manifest
    plugin.name = str(manifest.get("name") or plugin.id)
    plugin.sort_name = plugin.name.casefold()[:100]
    plugin.description = str(manifest.get("description") or "")
    plugin.latest_version, plugin.latest_published_at = row.version, row.published_at
    plugin.readme = row.readme
    plugin.keywords, plugin.categories = list(row.keywords), list(row.categories)
    plugin.points = sorted({str(e["point"]) for e in manifest.get("extensions", [])})
    plugin.permissions = sorted({str(p) for p in manifest.get("permissions", [])})
    plugin.search_tags = " ".join([*row.keywords, *row.categories])
    plugin.signed = row.signature_status == "verified"


def _write_tags(session: Session, plugin_id: str, row: CatalogVersion) -> None:
    session.execute(sa.delete(_TAGS).where(_TAGS.c.plugin_id == plugin_id))
    manifest = row.manifest
    tags = {("category", c) for c in row.categories}
    tags |= {("point", str(e["point"])) for e in manifest.get("extensions", [])}
    tags |= {("permission", str(p)) for p in manifest.get("permissions", [])}
    if tags:
        session.execute(
            sa.insert(_TAGS),
            [{"plugin_id": plugin_id, "kind": k, "value": v} for k, v in sorted(tags)],
        )


# -- search -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchItem:
    id: str
    name: str
    publisher: str
    description: str
    latest_version: str
    latest_published_at: datetime
    categories: list[str]
    keywords: list[str]
    points: list[str]
    permissions: list[str]
    signed: bool
    deprecated: bool
    successor_id: str | None
    installs: int
    active_installs: int
    # Higher is better on both databases; None unless the search had words.
    score: float | None = None
    # The newest version the ``compatible`` predicate admits (None without a predicate).
    compatible_version: str | None = None


@dataclass(frozen=True)
class SearchPage:
    items: list[SearchItem]
    # {"point": {value: count}, "category": {value: count}} over every match, before paging.
    facets: dict[str, dict[str, int]]
    total: int
    next: str | None


_ITEM_COLUMNS = (
    "id",
    "name",
    "publisher",
    "description",
    "latest_version",
    "latest_published_at",
    "categories",
    "keywords",
    "points",
    "permissions",
    "signed",
    "deprecated",
    "successor_id",
    "installs",
    "active_installs",
    "sort_name",
)


def search(
    session: Session,
    *,
    q: str | None = None,
    point: str | None = None,
    category: str | None = None,
    permission: str | None = None,
    signed: bool | None = None,
    compatible: Compatible | None = None,
    sort: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> SearchPage:
    """Plugins matching words and filters, one page in ``sort`` order, with facet counts.

    ``sort`` is ``relevance`` (the default with words), ``popular`` (installs; the default
    without), ``name`` or ``newest``; deprecated plugins come after the others in every
    order. ``compatible`` keeps plugins with a visible version whose range it admits and
    names that version on each item. ``cursor`` is a previous page's ``next``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit is between 1 and {MAX_PAGE}", code="invalid_limit")
    terms = _terms(q)
    sort = sort or ("relevance" if terms else "popular")
    if sort not in SORTS:
        raise InvalidInput(f"sort is one of {', '.join(SORTS)}", code="invalid_sort")
    if sort == "relevance" and not terms:
        sort = "popular"  # nothing to be relevant to
    dialect = session.get_bind().dialect.name
    source, conditions, score, score_desc = _text_match(dialect, terms)
    conditions.append(_PLUGINS.c.latest_version.is_not(None))
    for kind, value in (("point", point), ("category", category), ("permission", permission)):
        if value is not None:
            # An alias of its own, so that it can never be correlated with the catalog_tags
            # the facet query reads around these conditions.
            tag = _TAGS.alias(f"{kind}_tag")
            conditions.append(
                sa.exists().where(
                    tag.c.plugin_id == _PLUGINS.c.id, tag.c.kind == kind, tag.c.value == value
                )
            )
    if signed is not None:
        conditions.append(_PLUGINS.c.signed == signed)
    admitted: set[str] = set()
    if compatible is not None:
        admitted = _admitted_ranges(session, compatible)
        conditions.append(
            sa.exists().where(
                _VERSIONS.c.plugin_id == _PLUGINS.c.id,
                _VERSIONS.c.yanked == sa.false(),
                _VERSIONS.c.summit_range.in_(sorted(admitted)),
            )
            if admitted
            else sa.false()
        )

    fingerprint = _fingerprint(terms, point, category, permission, signed, compatible, sort)
    keys = _sort_keys(sort, score, score_desc)
    stmt = (
        sa.select(*(_PLUGINS.c[name] for name in _ITEM_COLUMNS), score.label("score"))
        .select_from(source)
        .where(*conditions)
    )
    if cursor:
        after = _read_cursor(cursor, fingerprint, sort)
        stmt = stmt.where(_after(keys, after))
    stmt = stmt.order_by(*(expr.desc() if desc else expr.asc() for _, expr, desc in keys))
    rows = session.execute(stmt.limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]

    compatible_versions = (
        _compatible_versions(session, [r["id"] for r in rows], admitted) if compatible else {}
    )
    items = [
        SearchItem(
            id=r["id"],
            name=r["name"],
            publisher=r["publisher"],
            description=r["description"],
            latest_version=r["latest_version"],
            latest_published_at=_aware(r["latest_published_at"]),
            categories=list(r["categories"]),
            keywords=list(r["keywords"]),
            points=list(r["points"]),
            permissions=list(r["permissions"]),
            signed=bool(r["signed"]),
            deprecated=bool(r["deprecated"]),
            successor_id=r["successor_id"],
            installs=int(r["installs"]),
            active_installs=int(r["active_installs"]),
            score=_public_score(r["score"], dialect) if terms else None,
            compatible_version=compatible_versions.get(r["id"]),
        )
        for r in rows
    ]
    next_cursor = (
        _write_cursor(fingerprint, sort, [_cursor_value(rows[-1], name) for name, _, _ in keys])
        if more and rows
        else None
    )
    facets, total = _facets_and_total(
        session, sa.select(_PLUGINS.c.id).select_from(source).where(*conditions)
    )
    return SearchPage(items=items, facets=facets, total=total, next=next_cursor)


def _terms(q: str | None) -> list[str]:
    """The words of a query: letters and digits only, so nothing in it is query syntax."""
    if not q:
        return []
    return [w.lower()[:64] for w in _WORD.findall(q[:512])][:_MAX_TERMS]


def _text_match(
    dialect: str, terms: list[str]
) -> tuple[sa.FromClause, list[sa.ColumnElement[bool]], sa.ColumnElement[Any], bool]:
    """The FROM clause, conditions and score (and whether higher is better) of a search."""
    if not terms:
        return _PLUGINS, [], sa.literal(0.0), True
    if dialect == "postgresql":
        expression = " & ".join([*terms[:-1], f"{terms[-1]}:*"])
        query = sa.func.to_tsquery(
            sa.literal_column("'english'::regconfig"), sa.bindparam("ts_query", expression)
        )
        document: sa.ColumnElement[Any] = sa.literal_column("catalog_plugins.search")
        return (
            _PLUGINS,
            [document.op("@@")(query)],
            # As double precision: a real travels to Python as its shortest text ("0.2"),
            # which read back as a double no longer equals the real, and the cursor compares
            # scores for equality.
            sa.cast(sa.func.ts_rank_cd(document, query), sa.Double()),
            True,
        )
    # FTS5: each word a quoted string (a double quote doubled inside one), the last a prefix.
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    expression = " ".join(quoted) + "*"
    fts = sa.table("catalog_fts", sa.column("rowid"))
    docs = sa.table("catalog_fts_docs", sa.column("rowid"), sa.column("plugin_id"))
    # Through the small row-id table rather than the index's own plugin_id column: reading
    # that column fetches the index's stored copy of the whole document.
    source = fts.join(docs, docs.c.rowid == fts.c.rowid).join(
        _PLUGINS, _PLUGINS.c.id == docs.c.plugin_id
    )
    # Column weights follow PostgreSQL's A-D: id (unindexed), name, tags, description, readme.
    return (
        source,
        [sa.literal_column("catalog_fts").op("MATCH")(sa.bindparam("fts_query", expression))],
        sa.literal_column("bm25(catalog_fts, 0.0, 10.0, 4.0, 2.0, 1.0)"),
        False,  # BM25 in FTS5 is negative, more negative is better
    )


def _public_score(value: Any, dialect: str) -> float:
    score = float(value or 0.0)
    return score if dialect == "postgresql" else -score


_Key = tuple[str, sa.ColumnElement[Any], bool]  # cursor field, expression, descending


def _sort_keys(sort: str, score: sa.ColumnElement[Any], score_desc: bool) -> list[_Key]:
    keys: list[_Key] = [("deprecated", _PLUGINS.c.deprecated, False)]
    if sort == "relevance":
        keys.append(("score", score, score_desc))
    elif sort == "name":
        keys.append(("sort_name", _PLUGINS.c.sort_name, False))
    elif sort == "newest":
        keys.append(("latest_published_at", _PLUGINS.c.latest_published_at, True))
    else:
        keys.append(("installs", _PLUGINS.c.installs, True))
    keys.append(("id", _PLUGINS.c.id, False))
    return keys


def _after(keys: list[_Key], values: list[Any]) -> sa.ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys``: (a, b, c) > (x, y, z) spelled
    out, since row-value comparison cannot mix ascending and descending keys."""
    # Bound with each column's own type: a boolean compared with '>' (SQLAlchemy refuses a
    # bare True there) and a time written as the column stores it (text, on SQLite).
    bound = [
        value if isinstance(expr.type, sa.types.NullType) else sa.literal(value, expr.type)
        for (_, expr, _), value in zip(keys, values, strict=True)
    ]
    alternatives = []
    for i, (_, expr, desc) in enumerate(keys):
        equal = [keys[j][1] == bound[j] for j in range(i)]
        beyond = expr < bound[i] if desc else expr > bound[i]
        alternatives.append(sa.and_(*equal, beyond))
    return sa.or_(*alternatives)


def _cursor_value(row: sa.RowMapping, name: str) -> Any:
    value = row[name]
    if name == "latest_published_at":
        return _aware(value).isoformat()
    if name == "deprecated":
        return bool(value)
    if name == "score":
        return float(value)
    return value


def _fingerprint(
    terms: list[str],
    point: str | None,
    category: str | None,
    permission: str | None,
    signed: bool | None,
    compatible: Compatible | None,
    sort: str,
) -> str:
    shape = [terms, point, category, permission, signed, compatible is not None, sort]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def _write_cursor(fingerprint: str, sort: str, values: list[Any]) -> str:
    text = json.dumps({"f": fingerprint, "s": sort, "k": values}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_cursor(cursor: str, fingerprint: str, sort: str) -> list[Any]:
    def refuse(why: str) -> InvalidInput:
        return InvalidInput(f"the cursor is not valid here: {why}", code="invalid_cursor")

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise refuse("it is not one this catalog issued") from None
    if not isinstance(data, dict) or not isinstance(data.get("k"), list) or len(data["k"]) != 3:
        raise refuse("it is not one this catalog issued")
    if data.get("f") != fingerprint or data.get("s") != sort:
        raise refuse("it belongs to another query; start again without it")
    deprecated, key, last_id = data["k"]
    expected: dict[str, type | tuple[type, ...]] = {
        "relevance": (int, float),
        "name": str,
        "newest": str,
        "popular": int,
    }
    if (
        not isinstance(deprecated, bool)
        or not isinstance(last_id, str)
        or isinstance(key, bool)
        or not isinstance(key, expected[sort])
    ):
        raise refuse("it is not one this catalog issued")
    if sort == "newest":
        try:
            key = datetime.fromisoformat(str(key))
        except ValueError:
            raise refuse("it is not one this catalog issued") from None
    return [deprecated, key, last_id]


def _admitted_ranges(session: Session, compatible: Compatible) -> set[str]:
    # A catalog holds few distinct ranges, however many versions: ask the predicate once each.
    stmt = sa.select(_VERSIONS.c.summit_range).where(_VERSIONS.c.yanked == sa.false()).distinct()
    return {r for (r,) in session.execute(stmt).all() if compatible(r)}


def _compatible_versions(
    session: Session, plugin_ids: list[str], admitted: set[str]
) -> dict[str, str]:
    if not plugin_ids or not admitted:
        return {}
    stmt = sa.select(_VERSIONS.c.plugin_id, _VERSIONS.c.version).where(
        _VERSIONS.c.plugin_id.in_(plugin_ids),
        _VERSIONS.c.yanked == sa.false(),
        _VERSIONS.c.summit_range.in_(sorted(admitted)),
    )
    by_plugin: dict[str, list[str]] = {}
    for plugin_id, version in session.execute(stmt).all():
        by_plugin.setdefault(plugin_id, []).append(version)
    out = {}
    for plugin_id, versions in by_plugin.items():
        chosen = _pick_latest(versions)
        if chosen is not None:
            out[plugin_id] = chosen
    return out


def _facets_and_total(
    session: Session, matched: sa.Select[Any]
) -> tuple[dict[str, dict[str, int]], int]:
    """Facet counts and the number of matches in one statement: the matches are a common
    table expression read twice, which both databases then evaluate once (the full-text
    match is most of a broad search's cost)."""
    ids = matched.cte("matched")
    facets = (
        sa.select(_TAGS.c.kind, _TAGS.c.value, sa.func.count())
        .join(ids, ids.c.id == _TAGS.c.plugin_id)
        .where(_TAGS.c.kind.in_(("point", "category")))
        .group_by(_TAGS.c.kind, _TAGS.c.value)
    )
    total = sa.select(sa.literal("total"), sa.literal(""), sa.func.count()).select_from(ids)
    counted: dict[str, list[tuple[str, int]]] = {"point": [], "category": []}
    matches = 0
    for kind, value, count in session.execute(sa.union_all(facets, total)).all():
        if kind == "total":
            matches = int(count)
        else:
            counted[kind].append((value, int(count)))
    # Most frequent first, then by name: the order a sidebar shows them in.
    ordered = {
        kind: dict(sorted(pairs, key=lambda p: (-p[1], p[0]))) for kind, pairs in counted.items()
    }
    return ordered, matches


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- statistics -------------------------------------------------------------------------------

# Latency histogram buckets grow by 10% from 0.1 ms: bucket i holds (0.1*1.1^(i-1),
# 0.1*1.1^i] ms, and a percentile read from it is within 5% of the true sample's value.
_LATENCY_FLOOR_MS = 0.1
_LATENCY_GROWTH = 1.1


def _latency_bucket(ms: float) -> int:
    if not ms > _LATENCY_FLOOR_MS:  # also catches NaN
        return 0
    return max(0, math.ceil(math.log(ms / _LATENCY_FLOOR_MS) / math.log(_LATENCY_GROWTH)))


def _bucket_ms(bucket: int) -> float:
    if bucket <= 0:
        return _LATENCY_FLOOR_MS
    upper = _LATENCY_FLOOR_MS * _LATENCY_GROWTH**bucket
    return upper / math.sqrt(_LATENCY_GROWTH)  # the bucket's geometric middle


def _merge_histograms(into: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    merged = dict(into)
    for bucket, count in more.items():
        merged[bucket] = merged.get(bucket, 0) + int(count)
    return merged


def _percentile(histogram: Mapping[str, int], q: float) -> float | None:
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q / 100.0 * total))
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= rank:
            return round(_bucket_ms(int(bucket)), 3)
    return round(_bucket_ms(max(int(b) for b in histogram)), 3)


def record_stats(
    session: Session,
    *,
    plugin_id: str,
    version: str,
    day: date | None = None,
    installs: int = 0,
    uninstalls: int = 0,
    calls: int = 0,
    errors: int = 0,
    latencies_ms: Iterable[float] = (),
    active_installs: int | None = None,
) -> None:
    """Add to one version's counters of one day (today, UTC, by default).

    Installs add to and uninstalls take from its active installs, which carry over from the
    version's previous day; ``active_installs`` sets the level instead (a fleet's report).
    Concurrent writers add up: the counters are one INSERT ... ON CONFLICT DO UPDATE, and the
    latency histogram is merged under that row's lock."""
    counts = {"installs": installs, "uninstalls": uninstalls, "calls": calls, "errors": errors}
    if any(v < 0 for v in counts.values()) or (active_installs or 0) < 0:
        raise InvalidInput("statistics only count up", code="invalid_stats")
    known = sa.select(_VERSIONS.c.version).where(
        _VERSIONS.c.plugin_id == plugin_id, _VERSIONS.c.version == version
    )
    if session.execute(known).first() is None:  # (not the whole row: README, manifest)
        raise NotFound(
            f"{plugin_id} has no version {version} in the catalog", code="version_not_found"
        )
    day = day or utcnow().date()
    samples = [float(ms) for ms in latencies_ms]
    histogram: dict[str, int] = {}
    for ms in samples:
        key = str(_latency_bucket(ms))
        histogram[key] = histogram.get(key, 0) + 1
    latency_sum = sum(ms for ms in samples if math.isfinite(ms) and ms > 0)

    delta = installs - uninstalls
    carried = (
        sa.select(_STATS.c.active_installs)
        .where(
            _STATS.c.plugin_id == plugin_id,
            _STATS.c.version == version,
            _STATS.c.day < day,
        )
        .order_by(_STATS.c.day.desc())
        .limit(1)
        .scalar_subquery()
    )
    first_level: sa.ColumnElement[Any] = (
        sa.literal(active_installs)
        if active_installs is not None
        else _floor_zero(sa.func.coalesce(carried, 0) + delta)
    )
    dialect = session.get_bind().dialect.name
    insert = pg_insert(_STATS) if dialect == "postgresql" else sqlite_insert(_STATS)
    level = _STATS.c.active_installs
    statement = insert.values(
        plugin_id=plugin_id,
        version=version,
        day=day,
        active_installs=first_level,
        latency={},  # merged below, the same way on both paths
        latency_sum_ms=latency_sum,
        **counts,
    ).on_conflict_do_update(
        index_elements=["plugin_id", "version", "day"],
        set_={
            **{name: _STATS.c[name] + value for name, value in counts.items()},
            "active_installs": (
                sa.literal(active_installs)
                if active_installs is not None
                else _floor_zero(level + delta)
            ),
            "latency_sum_ms": _STATS.c.latency_sum_ms + latency_sum,
        },
    )
    session.execute(statement)
    if histogram:
        row_key = (
            _STATS.c.plugin_id == plugin_id,
            _STATS.c.version == version,
            _STATS.c.day == day,
        )
        # The upsert above holds the row's lock (and SQLite's write lock) until commit, so
        # this read-merge-write cannot interleave with another writer's.
        current = session.execute(sa.select(_STATS.c.latency).where(*row_key)).scalar_one()
        merged = _merge_histograms(dict(current or {}), histogram)
        session.execute(sa.update(_STATS).where(*row_key).values(latency=merged))
    if installs or uninstalls or active_installs is not None:
        _refresh_install_totals(session, plugin_id=plugin_id, installs=installs)


def _floor_zero(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.case((value < 0, 0), else_=value)


def _refresh_install_totals(session: Session, *, plugin_id: str, installs: int) -> None:
    """Keep the plugin's running totals (the ``popular`` sort) in step with its days: installs
    add up, active installs are the sum of each version's latest level."""
    newer = _STATS.alias("newer")
    latest_rows = sa.select(sa.func.coalesce(sa.func.sum(_STATS.c.active_installs), 0)).where(
        _STATS.c.plugin_id == plugin_id,
        ~sa.exists().where(
            newer.c.plugin_id == _STATS.c.plugin_id,
            newer.c.version == _STATS.c.version,
            newer.c.day > _STATS.c.day,
        ),
    )
    active = int(session.execute(latest_rows).scalar_one())
    session.execute(
        sa.update(CatalogPlugin)
        .where(col(CatalogPlugin.id) == plugin_id)
        .values(installs=col(CatalogPlugin.installs) + installs, active_installs=active)
        .execution_options(synchronize_session="fetch")
    )


@dataclass(frozen=True)
class DailyStats:
    day: date
    installs: int = 0
    uninstalls: int = 0
    active_installs: int = 0
    calls: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None


@dataclass(frozen=True)
class StatsSummary:
    since: date
    until: date
    installs: int
    uninstalls: int
    active_installs: int
    calls: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_mean_ms: float | None
    by_version: dict[str, int] = field(default_factory=dict)  # calls per version


def _check_window(since: date, until: date) -> None:
    if until < since:
        raise InvalidInput("the window ends before it starts", code="invalid_window")
    if (until - since).days >= MAX_STATS_DAYS:
        raise InvalidInput(
            f"a statistics window is at most {MAX_STATS_DAYS} days", code="invalid_window"
        )


def _stat_rows(
    session: Session, plugin_id: str, version: str | None, since: date, until: date
) -> Sequence[CatalogDailyStat]:
    stmt = select(CatalogDailyStat).where(
        CatalogDailyStat.plugin_id == plugin_id,
        col(CatalogDailyStat.day) >= since,
        col(CatalogDailyStat.day) <= until,
    )
    if version is not None:
        stmt = stmt.where(CatalogDailyStat.version == version)
    return session.exec(stmt).all()


def _levels_before(
    session: Session, plugin_id: str, version: str | None, day: date
) -> dict[str, int]:
    """Each version's active installs at the end of its last day before ``day``."""
    newer = _STATS.alias("newer")
    stmt = sa.select(_STATS.c.version, _STATS.c.active_installs).where(
        _STATS.c.plugin_id == plugin_id,
        _STATS.c.day < day,
        ~sa.exists().where(
            newer.c.plugin_id == _STATS.c.plugin_id,
            newer.c.version == _STATS.c.version,
            newer.c.day > _STATS.c.day,
            newer.c.day < day,
        ),
    )
    if version is not None:
        stmt = stmt.where(_STATS.c.version == version)
    return {v: int(level) for v, level in session.execute(stmt).all()}


def daily_stats(
    session: Session,
    *,
    plugin_id: str,
    since: date,
    until: date,
    version: str | None = None,
) -> list[DailyStats]:
    """One entry per day from ``since`` to ``until`` (inclusive, at most a year), of one
    version or of all of them: counters summed, latency percentiles from the merged
    histograms, active installs summed over versions (each carried from its last report)."""
    _check_window(since, until)
    by_day: dict[date, list[CatalogDailyStat]] = {}
    for row in _stat_rows(session, plugin_id, version, since, until):
        by_day.setdefault(row.day, []).append(row)
    levels = _levels_before(session, plugin_id, version, since)
    out = []
    day = since
    while day <= until:
        rows = by_day.get(day, [])
        histogram: dict[str, int] = {}
        for row in rows:
            levels[row.version] = row.active_installs
            histogram = _merge_histograms(histogram, row.latency)
        out.append(
            DailyStats(
                day=day,
                installs=sum(r.installs for r in rows),
                uninstalls=sum(r.uninstalls for r in rows),
                active_installs=sum(levels.values()),
                calls=sum(r.calls for r in rows),
                errors=sum(r.errors for r in rows),
                latency_p50_ms=_percentile(histogram, 50),
                latency_p95_ms=_percentile(histogram, 95),
                latency_p99_ms=_percentile(histogram, 99),
            )
        )
        day += timedelta(days=1)
    return out


def stats_summary(
    session: Session,
    *,
    plugin_id: str,
    since: date | None = None,
    until: date | None = None,
    version: str | None = None,
) -> StatsSummary:
    """Totals over a window (the last 30 days by default) for a plugin page."""
    until = until or utcnow().date()
    since = since or until - timedelta(days=29)
    _check_window(since, until)
    rows = _stat_rows(session, plugin_id, version, since, until)
    histogram: dict[str, int] = {}
    by_version: dict[str, int] = {}
    for row in rows:
        histogram = _merge_histograms(histogram, row.latency)
        by_version[row.version] = by_version.get(row.version, 0) + row.calls
    levels = _levels_before(session, plugin_id, version, until + timedelta(days=1))
    samples = sum(histogram.values())
    latency_sum = sum(r.latency_sum_ms for r in rows)
    return StatsSummary(
        since=since,
        until=until,
        installs=sum(r.installs for r in rows),
        uninstalls=sum(r.uninstalls for r in rows),
        active_installs=sum(levels.values()),
        calls=sum(r.calls for r in rows),
        errors=sum(r.errors for r in rows),
        latency_p50_ms=_percentile(histogram, 50),
        latency_p95_ms=_percentile(histogram, 95),
        latency_p99_ms=_percentile(histogram, 99),
        latency_mean_ms=round(latency_sum / samples, 3) if samples else None,
        by_version=by_version,
    )
