"""Where this orchestrator reads the catalog: its own database (:class:`LocalCatalog`, the
default) or another orchestrator's catalog over HTTP (:class:`RemoteCatalog`, when
``SUMMIT_CATALOG_URL`` is set). One catalog can so serve many orchestrators.

The installer (``catalog/installer.py``) and the update notices (``services/plugins.py``)
read through a :class:`CatalogSource`: whether a plugin is there, its versions with what
resolution and installing need (image by digest, dependencies, permissions, compatibility
range, yanked, signature) and the versions of a collection. Nothing here installs: the
install pipeline still pulls each image *by digest*, scans it and verifies its signature
against this orchestrator's own trust store, and for a remote catalog the installer also
checks that the image holds the plugin version the catalog says it does, so a remote catalog
is trusted with nothing it could lie about unseen.

A remote catalog is read with a bearer token (``SUMMIT_CATALOG_TOKEN``, role viewer), with
short timeouts; version lists are cached for a few seconds (an install resolves, then plans,
then installs, and reads each list once). What the remote cannot answer is 503
``catalog_unreachable`` (no answer, or it is overloaded) or 502 ``catalog_unreachable`` (it
answered with an error or with something that is not a catalog), naming the URL. Update
notices never fail a read of a plugin: while the remote is unreachable they are left out.

The web UI's marketplace reads the same source for what a person browses: a search page
(``GET /v1/catalog/plugins``), a plugin's page, its version list, and a version's manifest (the
install dialog's config form and the hosts of ``network:access``). The local catalog answers
through :class:`CatalogService`, exactly as its REST routes do; a remote one answers what its
REST routes say, checked for the shape the pages read (502 when it is not that). A plugin's page
and its versions say ``compatible`` for *this* orchestrator's version, as the installer
resolves; a search page says it as the remote catalog computed it. Search pages are cached for
the same few seconds, for at most a few hundred queries: most queries differ (the search box
asks as one types) and the remote caches its own answers, but the marketplace's first page is
the same query for every visitor, and every person's search counts against the one token this
orchestrator reads the catalog with, under the remote's rate limit.

Which source an orchestrator uses is kept per database engine (:func:`use_source`), because
the plugin views that show update notices are built from a session and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from orchestrator import __version__
from orchestrator.catalog.search import CatalogQuery, compatible_with, newest_compatible
from orchestrator.catalog.solver import PluginVersion
from orchestrator.domain.errors import NotFound, SummitError
from orchestrator.domain.manifest import Manifest
from orchestrator.domain.versions import Version, VersionError, VersionRange
from orchestrator.store import catalog as catalog_store
from orchestrator.store import collections as collection_store
from orchestrator.store.catalog_models import CatalogVersion
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.plugin_batches import catalog_versions_of

if TYPE_CHECKING:
    from orchestrator.catalog.service import CatalogService

__all__ = [
    "CatalogEntry",
    "CatalogSource",
    "CatalogUnreachable",
    "CollectionEntry",
    "LocalCatalog",
    "RemoteCatalog",
    "source_of",
    "use_source",
]

log = logging.getLogger(__name__)

CACHE_S = 5.0
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
SEARCHES_KEPT = 256  # search pages of a remote catalog held for CACHE_S (each up to ~100 kB)


class CatalogUnreachable(SummitError):
    """The remote catalog gave no usable answer (503: none came; 502: a bad one)."""

    status_code = 503
    code = "catalog_unreachable"

    def __init__(self, message: str, *, status_code: int = 503, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.status_code = status_code


@dataclass(frozen=True)
class CatalogEntry:
    """One published plugin version, as resolution and installing read it."""

    plugin_id: str
    version: str
    image: str  # registry/name@sha256:<hex>
    digest: str
    summit_range: str
    yanked: bool
    signature: dict[str, Any] | None  # {"key_id", "envelope"}: the envelope as it was signed
    dependencies: Mapping[str, str]
    optional: frozenset[str]
    permissions: tuple[str, ...]
    published_at: datetime

    def for_solver(self, compatible: Callable[[str], bool]) -> PluginVersion:
        return PluginVersion.of(
            self.version,
            self.dependencies,
            optional=self.optional,
            yanked=self.yanked,
            compatible=compatible(self.summit_range),
        )

    @classmethod
    def from_row(cls, row: CatalogVersion) -> CatalogEntry:
        manifest = Manifest.model_validate(row.manifest)
        return cls(
            plugin_id=row.plugin_id,
            version=row.version,
            image=row.image,
            digest=row.digest,
            summit_range=row.summit_range,
            yanked=row.yanked,
            signature=row.signature,
            dependencies={d.id: d.version for d in manifest.dependencies},
            optional=frozenset(d.id for d in manifest.dependencies if d.optional),
            permissions=tuple(sorted(p.value for p in manifest.permissions)),
            published_at=row.published_at,
        )


@dataclass(frozen=True)
class CollectionEntry:
    """One published version of a collection: plugin id -> range."""

    collection_id: str
    version: str
    plugins: Mapping[str, str]
    description: str
    published_at: datetime


class CatalogSource(Protocol):
    """What the installer, the update notices and the marketplace read of a catalog."""

    @property
    def location(self) -> str:
        """``local``, or the remote catalog's URL."""
        ...

    @property
    def remote(self) -> bool: ...

    def has_plugin(self, plugin_id: str) -> bool: ...

    def versions(self, plugin_id: str) -> list[CatalogEntry]:
        """Every version, newest first; none for a plugin the catalog does not hold."""
        ...

    def collection_versions(self, collection_id: str) -> list[CollectionEntry]:
        """Every version of a collection, newest first; 404 ``not_in_catalog`` if unknown."""
        ...

    def newest(
        self, plugin_id: str, *, after: str, session: Session | None = None
    ) -> CatalogEntry | None:
        """The newest version above ``after`` this orchestrator can run (not yanked): what an
        update notice names. Never raises for an unreachable catalog."""
        ...

    def newest_of(self, installed: Mapping[str, str]) -> dict[str, CatalogEntry]:
        """:meth:`newest` for ``{plugin id: installed version}`` at once (the local catalog
        in one read); the plugins with no newer version are left out."""
        ...

    # -- what the marketplace shows (the answers of the catalog's REST routes) ------------------

    def search(self, query: CatalogQuery) -> dict[str, Any]:
        """A search page, ``{items, facets, total, next}``: ``GET /v1/catalog/plugins``."""
        ...

    def plugin_page(self, plugin_id: str) -> dict[str, Any]:
        """``GET /v1/catalog/plugins/{id}``, its ``latest_compatible`` the newest version that
        is not yanked and this orchestrator can run; 404 ``not_in_catalog`` if unknown."""
        ...

    def version_list(self, plugin_id: str) -> list[dict[str, Any]]:
        """The items of ``GET /v1/catalog/plugins/{id}/versions``, newest first, each with
        ``compatible`` for this orchestrator; 404 ``not_in_catalog`` if unknown."""
        ...

    def manifest(self, plugin_id: str, version: str) -> dict[str, Any] | None:
        """The manifest of a version as published, or None when the catalog does not say
        (then the install dialog asks for the config as JSON)."""
        ...


class LocalCatalog:
    """The catalog in this orchestrator's own database.

    ``service`` is the :class:`CatalogService` its REST routes read (``app.state.catalog``):
    the marketplace's reads go through it, cache included. Resolution, installing and update
    notices need only the engine."""

    location = "local"
    remote = False

    def __init__(
        self,
        engine: Engine,
        *,
        summit_version: str = __version__,
        service: CatalogService | None = None,
    ) -> None:
        self.engine = engine
        self.summit_version = summit_version
        self.service = service

    def has_plugin(self, plugin_id: str) -> bool:
        with session_scope(self.engine) as session:
            return catalog_store.get_plugin(session, plugin_id=plugin_id) is not None

    def versions(self, plugin_id: str) -> list[CatalogEntry]:
        with session_scope(self.engine) as session:
            rows = catalog_store.list_versions(session, plugin_id=plugin_id)
            return [CatalogEntry.from_row(row) for row in rows]

    def collection_versions(self, collection_id: str) -> list[CollectionEntry]:
        with session_scope(self.engine) as session:
            if collection_store.get_collection(session, collection_id=collection_id) is None:
                raise NotFound(
                    f"collection {collection_id} is not in the catalog", code="not_in_catalog"
                )
            return [
                CollectionEntry(
                    collection_id=row.collection_id,
                    version=row.version,
                    plugins=dict(row.plugins),
                    description=row.description,
                    published_at=row.published_at,
                )
                for row in collection_store.list_collection_versions(
                    session, collection_id=collection_id
                )
            ]

    def newest(
        self, plugin_id: str, *, after: str, session: Session | None = None
    ) -> CatalogEntry | None:
        # In the caller's session when it gives one: the install pipeline shows the plugin
        # from inside the transaction that recorded it.
        if session is None:
            with session_scope(self.engine) as own:
                return self.newest(plugin_id, after=after, session=own)
        rows = catalog_store.list_versions(session, plugin_id=plugin_id)
        found = newest_compatible(rows, self.summit_version, after=after) if rows else None
        return CatalogEntry.from_row(found) if found is not None else None

    def newest_of(self, installed: Mapping[str, str]) -> dict[str, CatalogEntry]:
        with session_scope(self.engine) as session:
            rows = catalog_versions_of(session, plugin_ids=list(installed))
            found = {
                pid: newest_compatible(versions, self.summit_version, after=installed[pid])
                for pid, versions in rows.items()
            }
            return {pid: CatalogEntry.from_row(row) for pid, row in found.items() if row}

    def search(self, query: CatalogQuery) -> dict[str, Any]:
        return self._pages().search(query)

    def plugin_page(self, plugin_id: str) -> dict[str, Any]:
        return self._pages().plugin_page(plugin_id)

    def version_list(self, plugin_id: str) -> list[dict[str, Any]]:
        return list(self._pages().versions(plugin_id)["items"])

    def manifest(self, plugin_id: str, version: str) -> dict[str, Any] | None:
        with session_scope(self.engine) as session:
            row = catalog_store.get_version(session, plugin_id=plugin_id, version=version)
            return dict(row.manifest) if row is not None else None

    def _pages(self) -> CatalogService:
        if self.service is None:
            raise RuntimeError("this LocalCatalog was made without the CatalogService it reads")
        return self.service


# What the marketplace's pages read of a remote catalog's answers, checked before a page is
# drawn with it: a key the templates read that is missing or of another type would otherwise
# be a 500 in the middle of a page. Keys beyond these are kept as they came.
class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class _SearchItem(_Shape):
    id: str
    name: str
    publisher: str
    description: str
    latest_version: str
    compatible_version: str | None
    categories: list[str]
    points: list[str]
    permissions: list[str]
    signed: bool
    deprecated: bool
    installs: int
    active_installs: int


class _SearchPage(_Shape):
    items: list[_SearchItem]
    facets: dict[str, dict[str, int]]
    total: int
    next: str | None


class _Publisher(_Shape):
    id: str
    name: str


class _Stats(_Shape):
    installs: int
    active_installs: int
    calls: int
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class _PluginPage(_Shape):
    id: str
    name: str
    description: str
    publisher: _Publisher
    signed: bool
    deprecated: bool
    deprecation_reason: str | None
    successor: str | None
    stats: _Stats


class _Scan(_Shape):
    summary: dict[str, int] | None = None
    blocking: list[Any] = []


class _ListedVersion(_Shape):
    version: str
    image: str
    summit_range: str
    permissions: list[str]
    resources: dict[str, Any]
    dependencies: list[dict[str, Any]]
    changelog: str | None
    signature_status: str
    signature: dict[str, Any] | None
    scan: _Scan
    published_at: str
    published_by: str
    yanked: bool
    yanked_reason: str | None


_SEARCH_PAGE: TypeAdapter[_SearchPage] = TypeAdapter(_SearchPage)
_PLUGIN_PAGE: TypeAdapter[_PluginPage] = TypeAdapter(_PluginPage)
_VERSION_LIST: TypeAdapter[list[_ListedVersion]] = TypeAdapter(list[_ListedVersion])


@dataclass(frozen=True)
class _Listed:
    """A plugin's versions as one read of the remote gave them: checked entries for
    resolution, and the items as listed (same order, newest first) for the pages."""

    entries: list[CatalogEntry]
    items: list[Any]


class RemoteCatalog:
    """Another orchestrator's catalog, read over its REST API (``<url>/v1/catalog/...``).

    ``client`` replaces the HTTP client (tests: an in-process app's or a mock transport's);
    it is used with paths relative to ``url``."""

    remote = True

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        summit_version: str = __version__,
        cache_s: float = CACHE_S,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.summit_version = summit_version
        self.cache_s = cache_s
        self.clock = clock
        headers = {"Accept": "application/json", "User-Agent": f"summit/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if client is None:
            client = httpx.Client(
                base_url=self.url,
                timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                follow_redirects=False,
            )
        client.headers.update(headers)
        self._client = client
        self._lock = threading.Lock()
        # plugin id -> (expiry, its versions, or None for a plugin the catalog does not hold)
        self._versions: dict[str, tuple[float, _Listed | None]] = {}
        self._collections: dict[str, tuple[float, list[CollectionEntry] | None]] = {}
        self._pages: dict[str, tuple[float, Any]] = {}  # plugin id -> its page as answered
        self._searches: dict[str, tuple[float, Any]] = {}  # query string -> the answer
        self._down_until = 0.0  # update notices skip the remote until then

    @property
    def location(self) -> str:
        return self.url

    def close(self) -> None:
        self._client.close()

    # -- reading ---------------------------------------------------------------------------------

    def has_plugin(self, plugin_id: str) -> bool:
        return self._plugin_versions(plugin_id) is not None

    def versions(self, plugin_id: str) -> list[CatalogEntry]:
        listed = self._plugin_versions(plugin_id)
        return list(listed.entries) if listed is not None else []

    def collection_versions(self, collection_id: str) -> list[CollectionEntry]:
        found = self._cached(
            self._collections,
            collection_id,
            lambda: self._read_collection(collection_id),
        )
        if found is None:
            raise NotFound(
                f"collection {collection_id} is not in the catalog at {self.url}",
                code="not_in_catalog",
            )
        return list(found)

    def newest(
        self, plugin_id: str, *, after: str, session: Session | None = None
    ) -> CatalogEntry | None:
        if self.clock() < self._down_until:
            return None
        try:
            entries = self.versions(plugin_id)
        except CatalogUnreachable as exc:
            log.warning("update notices left out: %s", exc.message)
            return None
        return newest_compatible(entries, self.summit_version, after=after)

    def newest_of(self, installed: Mapping[str, str]) -> dict[str, CatalogEntry]:
        found = {pid: self.newest(pid, after=version) for pid, version in installed.items()}
        return {pid: entry for pid, entry in found.items() if entry is not None}

    # -- what the marketplace shows ------------------------------------------------------------

    def search(self, query: CatalogQuery) -> dict[str, Any]:
        params: dict[str, str] = {"limit": str(query.limit)}
        for name in ("q", "point", "category", "permission", "sort", "cursor"):
            value = getattr(query, name)
            if value is not None:
                params[name] = str(value)
        if query.signed is not None:
            params["signed"] = "true" if query.signed else "false"
        if query.compatible:
            # Judged by the remote against its own version: the search has no parameter for
            # the asker's. A plugin's page says it for this orchestrator.
            params["compatible"] = "true"
        body = self._cached(
            self._searches,
            "&".join(f"{k}={v}" for k, v in sorted(params.items())),
            lambda: self._get("/v1/catalog/plugins", params=params),
            bound=SEARCHES_KEPT,
        )
        if body is None:
            raise self._bad("it has no catalog search (GET /v1/catalog/plugins answered 404)")
        return dict(self._shaped(_SEARCH_PAGE, body, "its search page"))

    def plugin_page(self, plugin_id: str) -> dict[str, Any]:
        body = self._cached(
            self._pages,
            plugin_id,
            lambda: self._get(f"/v1/catalog/plugins/{quote(plugin_id, safe='')}"),
        )
        if body is None:
            raise self._not_held(plugin_id)
        page = dict(self._shaped(_PLUGIN_PAGE, body, f"the page of {plugin_id}"))
        # The remote names the newest version *it* can run; this orchestrator installs the
        # newest one it can run itself, so that is the one the page shows.
        page["latest_compatible"] = next(
            (v for v in self.version_list(plugin_id) if v["compatible"] and not v["yanked"]),
            None,
        )
        return page

    def version_list(self, plugin_id: str) -> list[dict[str, Any]]:
        listed = self._plugin_versions(plugin_id)
        if listed is None:
            raise self._not_held(plugin_id)
        admits = compatible_with(self.summit_version)
        items = self._shaped(_VERSION_LIST, listed.items, f"the versions of {plugin_id}")
        return [{**item, "compatible": admits(item["summit_range"])} for item in items]

    def manifest(self, plugin_id: str, version: str) -> dict[str, Any] | None:
        """The version's ``manifest`` when the remote lists it with one, checked to be a
        manifest of this plugin and version. (The install pipeline validates the config and
        the permissions again against the manifest the image itself holds.)"""
        listed = self._plugin_versions(plugin_id)
        items = listed.items if listed is not None else []
        raw = next(
            (i.get("manifest") for i in items if str(i["version"]) == version),
            None,
        )
        if not isinstance(raw, dict):
            return None
        try:
            held = Manifest.model_validate(raw)
        except ValidationError:
            log.warning(
                "the catalog at %s lists %s %s with an invalid manifest",
                self.url,
                plugin_id,
                version,
            )
            return None
        if (held.id, held.version) != (plugin_id, version):
            log.warning(
                "the catalog at %s lists %s %s with the manifest of %s %s",
                self.url,
                plugin_id,
                version,
                held.id,
                held.version,
            )
            return None
        return dict(raw)

    def _shaped(self, adapter: TypeAdapter[Any], body: Any, what: str) -> Any:
        try:
            return adapter.dump_python(adapter.validate_python(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])[:120]
            raise self._bad(
                f"{what} is not what a catalog answers ({where}: {first['msg']})"
            ) from None

    def _not_held(self, plugin_id: str) -> NotFound:
        return NotFound(
            f"{plugin_id} is not in the catalog at {self.url}",
            code="not_in_catalog",
            details={"catalog": self.url},
        )

    def _plugin_versions(self, plugin_id: str) -> _Listed | None:
        return self._cached(self._versions, plugin_id, lambda: self._read_versions(plugin_id))

    def _cached(
        self,
        cache: dict[str, tuple[float, Any]],
        key: str,
        read: Callable[[], Any],
        *,
        bound: int = 10_000,
    ) -> Any:
        now = self.clock()
        with self._lock:
            hit = cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = read()
        with self._lock:
            if len(cache) > bound:
                cache.clear()
            cache[key] = (self.clock() + self.cache_s, value)
        return value

    def _read_versions(self, plugin_id: str) -> _Listed | None:
        body = self._get(f"/v1/catalog/plugins/{quote(plugin_id, safe='')}/versions")
        if body is None:
            return None
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise self._bad("its version list has no items")
        pairs = [(self._entry(plugin_id, item), item) for item in items]
        pairs.sort(key=lambda p: _version(p[0].version) or Version(0, 0, 0), reverse=True)
        return _Listed(entries=[e for e, _ in pairs], items=[i for _, i in pairs])

    def _read_collection(self, collection_id: str) -> list[CollectionEntry] | None:
        body = self._get(f"/v1/catalog/collections/{quote(collection_id, safe='')}")
        if body is None:
            return None
        items = body.get("versions") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise self._bad("its collection has no versions")
        out = []
        for item in items:
            try:
                plugins = item["plugins"]
                if not isinstance(plugins, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in plugins.items()
                ):
                    raise TypeError("plugins")
                for text in plugins.values():
                    VersionRange.parse(text)
                out.append(
                    CollectionEntry(
                        collection_id=collection_id,
                        version=str(item["version"]),
                        plugins=dict(plugins),
                        description=str(item.get("description") or ""),
                        published_at=datetime.fromisoformat(str(item["published_at"])),
                    )
                )
            except (KeyError, TypeError, ValueError, VersionError):
                raise self._bad("a collection version it lists is not readable") from None
        out.sort(key=lambda e: _version(e.version) or Version(0, 0, 0), reverse=True)
        return out

    def _entry(self, plugin_id: str, item: Any) -> CatalogEntry:
        """A version as the remote lists it (``service.py: _version_json``), checked: an image
        that is not pinned by the digest the entry names is refused, not installed."""
        try:
            image, digest = str(item["image"]), str(item["digest"])
            dependencies = item.get("dependencies") or []
            signature = item.get("signature")
            entry = CatalogEntry(
                plugin_id=plugin_id,
                version=str(item["version"]),
                image=image,
                digest=digest,
                summit_range=str(item.get("summit_range") or "*"),
                yanked=bool(item.get("yanked", False)),
                signature=signature if isinstance(signature, dict) else None,
                dependencies={str(d["id"]): str(d.get("version") or "*") for d in dependencies},
                optional=frozenset(str(d["id"]) for d in dependencies if d.get("optional")),
                permissions=tuple(sorted(str(p) for p in item.get("permissions") or [])),
                published_at=datetime.fromisoformat(str(item["published_at"])),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._bad(f"a version of {plugin_id} it lists is not readable") from None
        if not digest.startswith("sha256:") or not image.endswith(f"@{digest}"):
            raise CatalogUnreachable(
                f"the catalog at {self.url} lists {plugin_id} {entry.version} with an image "
                "that is not pinned by its digest; it is not installed",
                status_code=502,
                details={"url": self.url, "plugin": plugin_id, "image": image[:600]},
            )
        return entry

    # -- install reports -------------------------------------------------------------------------

    def report(self, plugin_id: str, version: str, *, event: str, orchestrator: str) -> bool:
        """Report an install or uninstall. True: recorded (or known already); False: the
        catalog refused it for good (the version is not there, the token may not report).
        Raises :class:`CatalogUnreachable` when it is worth sending again later."""
        path = (
            f"/v1/catalog/plugins/{quote(plugin_id, safe='')}/versions/"
            f"{quote(version, safe='')}/installs"
        )
        try:
            response = self._client.post(path, json={"event": event, "orchestrator": orchestrator})
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code in (200, 201):
            return True
        if response.status_code == 429 or response.status_code >= 500:
            raise self._refused(response)
        log.warning(
            "the catalog at %s refused the %s report of %s %s: %s",
            self.url,
            event,
            plugin_id,
            version,
            _error_text(response),
        )
        return False

    # -- HTTP ------------------------------------------------------------------------------------

    def _get(self, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        """The JSON answer, None for a 404."""
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            self._down_until = self.clock() + self.cache_s
            raise self._unreachable(exc) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            self._down_until = self.clock() + self.cache_s
            raise self._refused(response)
        try:
            return response.json()
        except ValueError:
            raise self._bad("it answered something that is not JSON") from None

    def _unreachable(self, exc: httpx.HTTPError) -> CatalogUnreachable:
        return CatalogUnreachable(
            f"the catalog at {self.url} cannot be reached: {type(exc).__name__}: {exc}",
            details={"url": self.url},
        )

    def _refused(self, response: httpx.Response) -> CatalogUnreachable:
        status = response.status_code
        if status in (401, 403):
            why = "refused this orchestrator's token (SUMMIT_CATALOG_TOKEN)"
        elif status == 429:
            why = "is rate limiting this orchestrator"
        else:
            why = f"answered {status}"
        details: dict[str, Any] = {"url": self.url, "status": status, "error": _error(response)}
        if status == 429:
            details["retry_after"] = response.headers.get("retry-after")
        return CatalogUnreachable(
            f"the catalog at {self.url} {why}",
            status_code=503 if status in (429, 502, 503, 504) else 502,
            details=details,
        )

    def _bad(self, why: str) -> CatalogUnreachable:
        return CatalogUnreachable(
            f"the catalog at {self.url} is not usable: {why}",
            status_code=502,
            details={"url": self.url},
        )


def _version(text: str) -> Version | None:
    try:
        return Version.parse(text)
    except VersionError:
        return None


def _error(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return body.get("error", body) if isinstance(body, dict) else body


def _error_text(response: httpx.Response) -> str:
    error = _error(response)
    if isinstance(error, dict):
        return f"{response.status_code} {error.get('code')}: {error.get('message')}"
    return f"{response.status_code} {error}"


# -- which source an orchestrator reads ----------------------------------------------------------

_SOURCES: weakref.WeakKeyDictionary[Any, CatalogSource] = weakref.WeakKeyDictionary()


def use_source(engine: Engine, source: CatalogSource | None) -> None:
    """Make ``source`` the catalog of the orchestrator on ``engine`` (None: its own again)."""
    if source is None:
        _SOURCES.pop(engine, None)
    else:
        _SOURCES[engine] = source


def source_of(bind: Any) -> CatalogSource:
    """The catalog of the orchestrator whose database ``bind`` is (a session's bind)."""
    found = _SOURCES.get(bind)
    if found is not None:
        return found
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    if engine is not None and engine in _SOURCES:
        return _SOURCES[engine]
    return LocalCatalog(engine if engine is not None else bind)
