"""The catalog's store on real SQLite (FTS5) and PostgreSQL (tsvector): publishing and its
immutability, yank and deprecation, full-text search with prefixes, filters, facets, ranking
and cursor paging, hostile query text, daily statistics, and the migration's way back."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from summit_sdk.manifest import Manifest, parse_manifest

from orchestrator.catalog.search import CatalogQuery, compatible_with, search_catalog
from orchestrator.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from orchestrator.store import catalog
from orchestrator.store.db import MIGRATIONS, migrate, session_scope

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)

PUBLISHER = "acme"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def manifest(
    plugin_id: str,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str = "",
    points: Sequence[str] = ("analyzer",),
    permissions: Sequence[str] = (),
    summit: str | None = None,
) -> Manifest:
    data: dict[str, Any] = {
        "schema_version": 1,
        "id": plugin_id,
        "name": name or plugin_id.rsplit(".", 1)[-1],
        "version": version,
        "description": description,
        "runtime": {"image": f"registry.example.com/{plugin_id}"},
        "extensions": [{"point": p, "name": f"ext-{i}"} for i, p in enumerate(points)],
        "permissions": list(permissions),
    }
    if summit is not None:
        data["compatibility"] = {"summit": summit}
    return parse_manifest(data)


def publish(
    engine: Engine,
    plugin_id: str,
    *,
    version: str = "1.0.0",
    image_seed: str | None = None,
    publisher: str = PUBLISHER,
    **fields: Any,
) -> catalog.Published:
    manifest_fields = {
        k: fields.pop(k)
        for k in ("name", "description", "points", "permissions", "summit")
        if k in fields
    }
    with session_scope(engine) as s:
        return catalog.publish_version(
            s,
            manifest=manifest(plugin_id, version=version, **manifest_fields),
            image=f"registry.example.com/{plugin_id}@{digest(image_seed or plugin_id + version)}",
            publisher=publisher,
            published_by="tester",
            **fields,
        )


@pytest.fixture
def db(engine: Engine) -> Engine:
    """A migrated database (fresh per test, dropped after it) with one publisher."""
    with session_scope(engine) as s:
        catalog.add_publisher(s, publisher_id=PUBLISHER, name="Acme Ltd")
        catalog.claim_namespace(s, publisher_id=PUBLISHER, prefix="com.acme.")
    return engine


def search(engine: Engine, **kwargs: Any) -> catalog.SearchPage:
    with session_scope(engine) as s:
        return catalog.search(s, **kwargs)


def ids(page: catalog.SearchPage) -> list[str]:
    return [item.id for item in page.items]


# -- publishing -------------------------------------------------------------------------------


def test_publish_stores_the_version_and_makes_it_the_plugins_latest(db: Engine) -> None:
    published = publish(
        db,
        "com.acme.weather",
        name="Weather Station",
        description="Forecasts for any city",
        points=["data_source", "visualization"],
        permissions=["network:access"],
        readme="# Weather\nReads forecasts.",
        categories=["Weather", "weather", "data"],
        keywords=["forecast"],
        links={"source": "https://example.com/src"},
        changelog="First release",
        signature={"key_id": "k1", "value": "c2ln"},
        signature_status="verified",
        scan_summary={"high": 0, "medium": 1},
    )
    assert published.created
    with session_scope(db) as s:
        plugin = catalog.get_plugin(s, plugin_id="com.acme.weather")
        assert plugin is not None
        assert (plugin.name, plugin.publisher, plugin.latest_version) == (
            "Weather Station",
            PUBLISHER,
            "1.0.0",
        )
        assert plugin.points == ["data_source", "visualization"]
        assert plugin.permissions == ["network:access"]
        assert plugin.categories == ["weather", "data"]  # lower-cased, deduplicated
        assert plugin.signed is True
        version = catalog.get_version(s, plugin_id="com.acme.weather", version="1.0.0")
        assert version is not None
        assert version.digest == digest("com.acme.weather1.0.0")
        assert version.manifest["name"] == "Weather Station"
        assert version.links == {"source": "https://example.com/src"}
        assert version.scan_summary == {"high": 0, "medium": 1}
        assert version.published_at.tzinfo is not None


def test_a_published_version_is_immutable_and_republishing_it_is_idempotent(
    db: Engine,
) -> None:
    first = publish(db, "com.acme.weather", image_seed="one", readme="first")
    again = publish(db, "com.acme.weather", image_seed="one", readme="changed text")
    assert first.created and not again.created
    assert again.version.readme == "first"  # the stored version, untouched
    with pytest.raises(Conflict) as refused:
        publish(db, "com.acme.weather", image_seed="two")
    assert refused.value.code == "version_immutable"
    assert refused.value.details["digest"] == digest("one")
    with session_scope(db) as s:
        [version] = catalog.list_versions(s, plugin_id="com.acme.weather")
        assert version.digest == digest("one")


def test_publishing_needs_an_image_by_digest_and_the_right_publisher(db: Engine) -> None:
    with pytest.raises(InvalidInput) as refused, session_scope(db) as s:
        catalog.publish_version(
            s,
            manifest=manifest("com.acme.weather"),
            image="registry.example.com/weather:1.0.0",
            publisher=PUBLISHER,
            published_by="tester",
        )
    assert refused.value.code == "image_not_by_digest"
    with session_scope(db) as s:
        catalog.add_publisher(s, publisher_id="rival", name="Rival")
    # Inside another publisher's namespace.
    with pytest.raises(Forbidden) as taken:
        publish(db, "com.acme.weather", publisher="rival")
    assert taken.value.code == "namespace_taken"
    # Outside any namespace, the first publisher of an id keeps it.
    publish(db, "org.free.tool", publisher="rival")
    with pytest.raises(Forbidden) as other:
        publish(db, "org.free.tool", version="1.1.0", publisher=PUBLISHER)
    assert other.value.code == "not_publisher"
    # A namespace cannot be claimed around a plugin someone else publishes.
    with pytest.raises(Conflict), session_scope(db) as s:
        catalog.claim_namespace(s, publisher_id=PUBLISHER, prefix="org.free.")
    with pytest.raises(Conflict), session_scope(db) as s:
        catalog.claim_namespace(s, publisher_id="rival", prefix="com.")
    with session_scope(db) as s:
        assert catalog.namespace_owner(s, plugin_id="com.acme.x.y") == PUBLISHER
        assert catalog.namespace_owner(s, plugin_id="org.free.tool") is None
        assert catalog.search(s).total == 1  # the refused publishes left nothing behind


def test_yanked_versions_are_not_latest_but_stay_readable(db: Engine) -> None:
    publish(db, "com.acme.weather", version="1.0.0", readme="old words")
    publish(db, "com.acme.weather", version="2.0.0", readme="brand new words")
    publish(db, "com.acme.weather", version="3.0.0-beta.1", readme="beta words")
    with session_scope(db) as s:
        plugin = catalog.get_plugin(s, plugin_id="com.acme.weather")
        assert plugin is not None and plugin.latest_version == "2.0.0"  # not the pre-release
        catalog.yank_version(
            s, plugin_id="com.acme.weather", version="2.0.0", reason="leaks tokens"
        )
    with session_scope(db) as s:
        plugin = catalog.get_plugin(s, plugin_id="com.acme.weather")
        assert plugin is not None and plugin.latest_version == "1.0.0"
        latest = catalog.latest_version(s, plugin_id="com.acme.weather")
        assert latest is not None and latest.version == "1.0.0"
        yanked = catalog.get_version(s, plugin_id="com.acme.weather", version="2.0.0")
        assert yanked is not None and yanked.yanked and yanked.yanked_reason == "leaks tokens"
        assert [v.version for v in catalog.list_versions(s, plugin_id="com.acme.weather")] == [
            "3.0.0-beta.1",
            "2.0.0",
            "1.0.0",
        ]
    # The search document follows the latest visible version.
    assert ids(search(db, q="brand")) == []
    assert ids(search(db, q="old")) == ["com.acme.weather"]
    with session_scope(db) as s:
        catalog.yank_version(s, plugin_id="com.acme.weather", version="1.0.0", reason="old")
    # Only a pre-release is left: it becomes latest.
    assert [i.latest_version for i in search(db).items] == ["3.0.0-beta.1"]
    with session_scope(db) as s:
        catalog.yank_version(s, plugin_id="com.acme.weather", version="3.0.0-beta.1", reason="x")
    assert search(db).total == 0  # nothing visible: out of search, still on its page
    with session_scope(db) as s:
        assert catalog.get_plugin(s, plugin_id="com.acme.weather") is not None
        catalog.unyank_version(s, plugin_id="com.acme.weather", version="2.0.0")
    assert [i.latest_version for i in search(db, q="brand").items] == ["2.0.0"]


def test_deprecated_plugins_name_a_successor_and_sort_after_the_others(db: Engine) -> None:
    publish(db, "com.acme.alpha", name="Alpha Weather")
    publish(db, "com.acme.beta", name="Beta Weather")
    with pytest.raises(InvalidInput), session_scope(db) as s:
        catalog.deprecate_plugin(s, plugin_id="com.acme.alpha", reason="x", successor_id="no.such")
    with session_scope(db) as s:
        catalog.deprecate_plugin(
            s, plugin_id="com.acme.alpha", reason="use beta", successor_id="com.acme.beta"
        )
    for sort in ("name", "relevance", "popular", "newest"):
        page = search(db, q="weather", sort=sort)
        assert ids(page) == ["com.acme.beta", "com.acme.alpha"], sort
    alpha = search(db, q="alpha").items[0]
    assert alpha.deprecated and alpha.successor_id == "com.acme.beta"
    with session_scope(db) as s:
        catalog.undeprecate_plugin(s, plugin_id="com.acme.alpha")
    assert ids(search(db, sort="name")) == ["com.acme.alpha", "com.acme.beta"]
    with pytest.raises(NotFound), session_scope(db) as s:
        catalog.deprecate_plugin(s, plugin_id="com.acme.nothing", reason="x")


def test_a_taken_down_plugin_leaves_no_rows_and_no_search_entry(db: Engine) -> None:
    publish(db, "com.acme.weather", name="Weather")
    publish(db, "com.acme.maps", name="Maps")
    with session_scope(db) as s:
        catalog.record_stats(s, plugin_id="com.acme.weather", version="1.0.0", installs=1)
        assert catalog.delete_plugin(s, plugin_id="com.acme.weather")
        assert not catalog.delete_plugin(s, plugin_id="com.acme.weather")
    assert ids(search(db, q="weather")) == []
    with db.connect() as conn:
        for table in ("catalog_versions", "catalog_tags", "catalog_daily_stats"):
            count = conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE plugin_id = 'com.acme.weather'")
            ).scalar_one()
            assert count == 0, table
    publish(db, "com.acme.weather", name="Weather")  # the id can be published afresh
    assert ids(search(db, q="weather")) == ["com.acme.weather"]


# -- search -----------------------------------------------------------------------------------


def test_search_finds_words_in_every_field_and_the_last_word_as_a_prefix(db: Engine) -> None:
    publish(db, "com.acme.weather-station", name="Weather Station", description="Forecasts")
    publish(db, "com.acme.tiles", name="Map Tiles", keywords=["cartography"])
    publish(db, "com.acme.csv", name="CSV Export", readme="Writes spreadsheets for accountants.")
    assert ids(search(db, q="weather")) == ["com.acme.weather-station"]
    assert ids(search(db, q="wea")) == ["com.acme.weather-station"]  # typing, not done yet
    assert ids(search(db, q="forecast")) == ["com.acme.weather-station"]  # stemmed
    assert ids(search(db, q="cartograph")) == ["com.acme.tiles"]  # keyword, prefix
    assert ids(search(db, q="spreadsheet")) == ["com.acme.csv"]  # readme
    assert ids(search(db, q="station weather")) == ["com.acme.weather-station"]  # any order
    assert ids(search(db, q="weather tiles")) == []  # every word must match
    assert ids(search(db, q="tiles")) == ["com.acme.tiles"]
    assert ids(search(db, q="WEATHER")) == ["com.acme.weather-station"]
    assert search(db, q="weather").items[0].score > 0  # type: ignore[operator]
    assert search(db).total == 3  # no words: everything


def test_a_name_match_ranks_above_a_readme_only_match(db: Engine) -> None:
    publish(db, "com.acme.maps", name="Map Tiles", readme="Can overlay weather data on a map.")
    publish(db, "com.acme.sky", name="Weather", description="Current conditions")
    publish(db, "com.acme.sea", name="Tides", readme="Weather, weather and more weather notes.")
    page = search(db, q="weather")
    assert ids(page)[0] == "com.acme.sky"
    assert set(ids(page)) == {"com.acme.maps", "com.acme.sky", "com.acme.sea"}
    scores = [item.score for item in page.items]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


def test_filters_narrow_by_point_category_permission_and_signature(db: Engine) -> None:
    publish(
        db,
        "com.acme.a",
        points=["analyzer"],
        categories=["text"],
        permissions=["read:data"],
        signature={"k": "v"},
        signature_status="verified",
    )
    publish(db, "com.acme.b", points=["analyzer", "export"], categories=["files"])
    publish(
        db,
        "com.acme.c",
        points=["export"],
        categories=["files", "text"],
        permissions=["read:data", "network:access"],
        signature={"k": "v"},
        signature_status="invalid",
    )
    assert sorted(ids(search(db, point="analyzer"))) == ["com.acme.a", "com.acme.b"]
    assert sorted(ids(search(db, point="export"))) == ["com.acme.b", "com.acme.c"]
    assert sorted(ids(search(db, category="text"))) == ["com.acme.a", "com.acme.c"]
    assert sorted(ids(search(db, permission="read:data"))) == ["com.acme.a", "com.acme.c"]
    assert ids(search(db, permission="network:access")) == ["com.acme.c"]
    assert ids(search(db, signed=True)) == ["com.acme.a"]  # "invalid" is not signed
    assert sorted(ids(search(db, signed=False))) == ["com.acme.b", "com.acme.c"]
    assert ids(search(db, point="export", category="text")) == ["com.acme.c"]
    assert ids(search(db, point="workflow")) == []


def test_facets_count_the_whole_filtered_result_before_paging(db: Engine) -> None:
    for i in range(5):
        publish(db, f"com.acme.text{i}", name=f"Text {i}", points=["analyzer"], categories=["text"])
    for i in range(3):
        publish(
            db,
            f"com.acme.chart{i}",
            name=f"Chart {i}",
            points=["visualization", "export"],
            categories=["charts", "text"],
        )
    publish(db, "com.acme.other", name="Other", points=["workflow"], categories=["ops"])
    page = search(db, limit=2)
    assert len(page.items) == 2 and page.total == 9
    assert page.facets == {
        "point": {"analyzer": 5, "export": 3, "visualization": 3, "workflow": 1},
        "category": {"text": 8, "charts": 3, "ops": 1},
    }
    narrowed = search(db, category="charts", limit=1)
    assert narrowed.total == 3
    assert narrowed.facets == {
        "point": {"export": 3, "visualization": 3},
        "category": {"charts": 3, "text": 3},
    }
    worded = search(db, q="chart", limit=1)
    assert worded.facets["point"] == {"export": 3, "visualization": 3}


def _all_pages(engine: Engine, limit: int, between: Any = None, **kwargs: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for page_number in range(100):
        page = search(engine, limit=limit, cursor=cursor, **kwargs)
        assert len(page.items) <= limit
        seen += ids(page)
        if page.next is None:
            return seen
        if between is not None:
            between(page_number)
        cursor = page.next
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", ["name", "newest", "popular", "relevance"])
def test_cursor_paging_visits_every_match_once_in_order(db: Engine, sort: str) -> None:
    expected = []
    for i in range(23):
        plugin_id = f"com.acme.p{i:02d}"
        # Repeated words and install counts give ties, which the id must break.
        publish(
            db,
            plugin_id,
            name=f"Plugin {i % 4}",
            description="weather " * (1 + i % 3),
        )
        with session_scope(db) as s:
            catalog.record_stats(s, plugin_id=plugin_id, version="1.0.0", installs=i % 5)
        expected.append(plugin_id)
    with session_scope(db) as s:
        catalog.deprecate_plugin(s, plugin_id="com.acme.p05", reason="old")
    whole = ids(search(db, q="weather", sort=sort, limit=100))
    assert sorted(whole) == sorted(expected) and whole[-1] == "com.acme.p05"
    assert _all_pages(db, 5, q="weather", sort=sort) == whole


def test_paging_is_stable_while_plugins_are_published(db: Engine) -> None:
    for i in range(12):
        publish(db, f"com.acme.m{i:02d}", name=f"Middle {i:02d}")
    before = ids(search(db, sort="name", limit=100))

    def publish_around(page_number: int) -> None:
        # One sorts before every page already read, one after: neither shifts what is due.
        publish(db, f"com.acme.a{page_number}", name=f"Aardvark {page_number}")
        publish(db, f"com.acme.z{page_number}", name=f"Zebra {page_number}")

    seen = _all_pages(db, 4, between=publish_around, sort="name")
    assert len(seen) == len(set(seen))  # no duplicates
    assert [i for i in seen if i.startswith("com.acme.m")] == before  # no gaps
    assert "com.acme.z0" in seen and "com.acme.a0" not in seen


def test_a_cursor_from_another_query_or_forged_is_refused(db: Engine) -> None:
    for i in range(3):
        publish(db, f"com.acme.p{i}")
    page = search(db, sort="name", limit=1)
    assert page.next is not None
    for bad in ("not-a-cursor!", "e30", page.next[:-3]):
        with pytest.raises(InvalidInput) as refused:
            search(db, sort="name", limit=1, cursor=bad)
        assert refused.value.code == "invalid_cursor"
    with pytest.raises(InvalidInput):
        search(db, sort="popular", limit=1, cursor=page.next)
    with pytest.raises(InvalidInput):
        search(db, sort="name", point="export", limit=1, cursor=page.next)
    with pytest.raises(InvalidInput):
        search(db, sort="sideways")
    with pytest.raises(InvalidInput):
        search(db, limit=0)


WEATHER = ["com.acme.weather-station"]
EVERYTHING = ["com.acme.tiles", "com.acme.weather-station"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"', EVERYTHING),  # no words at all: no text condition
        ("OR AND (", []),  # the words "or" and "and", which nothing holds
        ("NEAR(weather station", []),  # "near" is a word like any other
        ("weather*", WEATHER),
        ("*", EVERYTHING),
        ("name:weather", []),  # not a column filter: "name" is a word
        ("-weather", WEATHER),  # not a negation
        ("^weather", WEATHER),
        ("'; DROP TABLE catalog_plugins; --", []),
        ("weather & ! | :* <-> ()", WEATHER),
        ("a\"b'c\\d", []),
        ("\x00weather", WEATHER),
        ("%_", EVERYTHING),
        ("   ", EVERYTHING),
        ("station)) OR ((tiles", []),
        ("w" * 600, []),
    ],
)
def test_query_syntax_in_user_text_never_errors(
    db: Engine, query: str, expected: list[str]
) -> None:
    publish(db, "com.acme.weather-station", name="Weather Station")
    publish(db, "com.acme.tiles", name="Map Tiles")
    # The words in it search; the punctuation around them means nothing.
    assert sorted(ids(search(db, q=query))) == expected
    with session_scope(db) as s:
        assert catalog.search(s).total == 2


def test_the_compatible_filter_names_the_newest_version_this_orchestrator_runs(
    db: Engine,
) -> None:
    publish(db, "com.acme.old", version="1.0.0", summit=">=0.1,<1")
    publish(db, "com.acme.old", version="2.0.0", summit=">=5")
    publish(db, "com.acme.future", summit=">=9")
    publish(db, "com.acme.any")
    admits = compatible_with("0.4.0")
    page = search(db, compatible=admits, sort="name")
    assert ids(page) == ["com.acme.any", "com.acme.old"]
    by_id = {item.id: item for item in page.items}
    assert by_id["com.acme.old"].latest_version == "2.0.0"
    assert by_id["com.acme.old"].compatible_version == "1.0.0"
    assert by_id["com.acme.any"].compatible_version == "1.0.0"
    assert search(db, sort="name").total == 3
    with session_scope(db) as s:
        chosen = catalog.latest_version(s, plugin_id="com.acme.old", compatible=admits)
        assert chosen is not None and chosen.version == "1.0.0"
        catalog.yank_version(s, plugin_id="com.acme.old", version="1.0.0", reason="bug")
    assert ids(search(db, compatible=admits)) == ["com.acme.any"]
    assert ids(search(db, compatible=lambda _range: False)) == []


def test_the_api_layer_answers_items_facets_and_next(db: Engine) -> None:
    publish(db, "com.acme.weather", name="Weather", categories=["Weather"])
    publish(db, "com.acme.wind", name="Wind", categories=["weather"])
    with session_scope(db) as s:
        body = search_catalog(
            s, CatalogQuery(q="w", category="WEATHER", sort="name", limit=1, compatible=True)
        )
    assert [i["id"] for i in body["items"]] == ["com.acme.weather"]
    assert body["items"][0]["compatible_version"] == "1.0.0"
    assert body["facets"]["category"] == {"weather": 2}
    assert body["next"] is not None and body["total"] == 2
    with pytest.raises(InvalidInput):
        CatalogQuery(point="nowhere")
    with pytest.raises(InvalidInput):
        CatalogQuery(permission="root")


# -- statistics -------------------------------------------------------------------------------


def test_statistics_add_up_by_day_and_carry_active_installs(db: Engine) -> None:
    publish(db, "com.acme.weather", version="1.0.0")
    publish(db, "com.acme.weather", version="1.1.0")
    publish(db, "com.acme.other")
    d1, d2, d3 = date(2030, 1, 1), date(2030, 1, 2), date(2030, 1, 3)
    with session_scope(db) as s:
        catalog.record_stats(s, plugin_id="com.acme.weather", version="1.0.0", day=d1, installs=5)
        catalog.record_stats(
            s,
            plugin_id="com.acme.weather",
            version="1.0.0",
            day=d1,
            calls=100,
            errors=2,
            latencies_ms=[10.0] * 90 + [200.0] * 10,
        )
        catalog.record_stats(s, plugin_id="com.acme.weather", version="1.0.0", day=d3, uninstalls=2)
        catalog.record_stats(
            s,
            plugin_id="com.acme.weather",
            version="1.1.0",
            day=d3,
            installs=1,
            calls=10,
            latencies_ms=[1000.0] * 10,
        )
        catalog.record_stats(s, plugin_id="com.acme.other", version="1.0.0", day=d1, installs=3)
    with session_scope(db) as s:
        days = catalog.daily_stats(s, plugin_id="com.acme.weather", since=d1, until=d3)
        assert [d.day for d in days] == [d1, d2, d3]
        assert [d.installs for d in days] == [5, 0, 1]
        assert [d.uninstalls for d in days] == [0, 0, 2]
        assert [d.active_installs for d in days] == [5, 5, 4]  # carried over the quiet day
        assert [d.calls for d in days] == [100, 0, 10]
        assert days[0].errors == 2
        assert days[0].latency_p50_ms == pytest.approx(10, rel=0.06)
        assert days[0].latency_p99_ms == pytest.approx(200, rel=0.06)
        assert days[1].latency_p50_ms is None
        assert days[2].latency_p50_ms == pytest.approx(1000, rel=0.06)
        one = catalog.daily_stats(
            s, plugin_id="com.acme.weather", version="1.1.0", since=d2, until=d3
        )
        assert [d.active_installs for d in one] == [0, 1]
        summary = catalog.stats_summary(s, plugin_id="com.acme.weather", since=d1, until=d3)
        assert (summary.installs, summary.active_installs, summary.calls) == (6, 4, 110)
        assert summary.by_version == {"1.0.0": 100, "1.1.0": 10}
        assert summary.latency_p95_ms == pytest.approx(1000, rel=0.06)
        plugin = catalog.get_plugin(s, plugin_id="com.acme.weather")
        assert plugin is not None and (plugin.installs, plugin.active_installs) == (6, 4)
        with pytest.raises(InvalidInput):
            catalog.record_stats(s, plugin_id="com.acme.weather", version="1.0.0", installs=-1)
        with pytest.raises(NotFound):
            catalog.record_stats(s, plugin_id="com.acme.weather", version="9.9.9", calls=1)
        with pytest.raises(InvalidInput):
            catalog.daily_stats(s, plugin_id="com.acme.weather", since=d3, until=d1)
    # Popular means installed most.
    assert ids(search(db, sort="popular")) == ["com.acme.weather", "com.acme.other"]


def test_concurrent_writers_of_one_day_lose_nothing(db: Engine) -> None:
    publish(db, "com.acme.weather")
    day = date(2030, 3, 1)

    def report(worker: int) -> None:
        for _ in range(15):
            with session_scope(db) as s:
                catalog.record_stats(
                    s,
                    plugin_id="com.acme.weather",
                    version="1.0.0",
                    day=day,
                    installs=1,
                    calls=10,
                    latencies_ms=[5.0 * (worker + 1)] * 10,
                )

    workers = [threading.Thread(target=report, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with session_scope(db) as s:
        [stats] = catalog.daily_stats(s, plugin_id="com.acme.weather", since=day, until=day)
        assert (stats.installs, stats.active_installs, stats.calls) == (60, 60, 600)
        summary = catalog.stats_summary(s, plugin_id="com.acme.weather", since=day, until=day)
        # 600 samples, 150 at each of 5, 10, 15 and 20 ms: every one of them was merged.
        assert summary.latency_p50_ms == pytest.approx(10, rel=0.06)
        assert summary.latency_mean_ms == pytest.approx(12.5)


def test_a_reported_level_of_active_installs_replaces_the_running_count(db: Engine) -> None:
    publish(db, "com.acme.weather")
    day = date(2030, 2, 1)
    with session_scope(db) as s:
        catalog.record_stats(s, plugin_id="com.acme.weather", version="1.0.0", day=day, installs=3)
        catalog.record_stats(
            s, plugin_id="com.acme.weather", version="1.0.0", day=day, active_installs=40
        )
        catalog.record_stats(
            s,
            plugin_id="com.acme.weather",
            version="1.0.0",
            day=day + timedelta(days=1),
            uninstalls=50,
        )
    with session_scope(db) as s:
        days = catalog.daily_stats(
            s, plugin_id="com.acme.weather", since=day, until=day + timedelta(days=1)
        )
        assert [d.active_installs for d in days] == [40, 0]  # never below zero


# -- the migration ----------------------------------------------------------------------------


def test_the_catalog_migration_goes_down_and_up_again(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    catalog_tables = {
        "catalog_publishers",
        "catalog_namespaces",
        "catalog_plugins",
        "catalog_tags",
        "catalog_versions",
        "catalog_daily_stats",
    }
    assert set(sa.inspect(engine).get_table_names()) >= catalog_tables
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    left = set(sa.inspect(engine).get_table_names())
    assert not left & catalog_tables
    assert not {name for name in left if name.startswith("catalog_fts")}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
    migrate(engine)
    with session_scope(engine) as s:
        catalog.add_publisher(s, publisher_id=PUBLISHER, name="Acme")
    publish(engine, "com.acme.weather", name="Weather")
    assert ids(search(engine, q="weath")) == ["com.acme.weather"]
