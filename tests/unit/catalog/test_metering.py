"""Metering for billing over a real usage series and catalog (SQLite): which plugins are the
catalog's and whose, what their calls and CPU time cost, which tier is read and which buckets
count, and a CSV that a spreadsheet opens without running anything."""

from __future__ import annotations

import csv
import hashlib
import io
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from summit_sdk.manifest import parse_manifest

from orchestrator.catalog.metering import (
    CSV_COLUMNS,
    MeteredPrice,
    MeteringService,
    amount_due,
    metered_price,
    metering_tier,
    report_csv,
    spreadsheet_safe,
)
from orchestrator.domain.errors import InvalidInput
from orchestrator.monitor.series import FINE, HOUR, MINUTE, UsageSeries
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store import usage as usage_store
from orchestrator.store.db import session_scope
from tests.unit.monitor.conftest import FakeClock

T0 = 1_700_002_800.0  # a whole hour
assert T0 % 3600 == 0
DAY = 86400


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def publish(
    engine: Engine,
    plugin_id: str,
    *,
    version: str = "1.0.0",
    publisher: str = "acme",
    **fields: Any,
) -> str:
    """Publish a version; its image reference (by digest)."""
    image = f"registry.example.com/{plugin_id}@{digest(plugin_id + version)}"
    manifest = parse_manifest(
        {
            "schema_version": 1,
            "id": plugin_id,
            "name": plugin_id.rsplit(".", 1)[-1],
            "version": version,
            "runtime": {"image": image},
            "license": "MIT",
        }
    )
    with session_scope(engine) as s:
        catalog_store.publish_version(
            s,
            manifest=manifest,
            image=image,
            publisher=publisher,
            published_by="tester",
            **fields,
        )
    return image


def install(
    engine: Engine,
    plugin_id: str,
    *,
    version: str = "1.0.0",
    image: str | None = None,
    license: str | None = "Apache-2.0",
) -> None:
    """Record an installed plugin: by ``image`` (a pull) or, without one, built from a bundle."""
    manifest: dict[str, Any] = {"id": plugin_id, "version": version, "name": plugin_id}
    if license is not None:
        manifest["license"] = license
    with session_scope(engine) as s:
        crud.add_plugin(
            s, plugin_id=plugin_id, version=version, state="ACTIVE", config={}, resources={}
        )
        crud.add_version(
            s,
            plugin_id=plugin_id,
            version=version,
            manifest=manifest,
            image=image or f"summit/{plugin_id}:{version}",
            image_id=digest("built" + plugin_id),
            source="image" if image else "bundle",
            source_digest=None if image else digest("source" + plugin_id),
        )


def sample(plugin_id: str, *, calls: int = 0, cpu_usec: int = 0) -> dict[str, Any]:
    return {"plugin_id": plugin_id, "calls": calls, "cpu_usec": cpu_usec}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def db(engine: Engine) -> Engine:
    with session_scope(engine) as s:
        catalog_store.add_publisher(s, publisher_id="acme", name="Acme Ltd")
        catalog_store.add_publisher(s, publisher_id="globex", name="Globex")
    return engine


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["plugin_id"]: row for row in report["plugins"]}


# -- the report ---------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_calls_and_cpu_are_priced_per_plugin_and_totalled_per_publisher_and_currency(
    db: Engine, clock: FakeClock
) -> None:
    paid = publish(
        db,
        "com.acme.paid",
        price={"per_1000_calls": "0.50", "per_cpu_hour": 2, "currency": "eur"},
        license="LicenseRef-Acme-Commercial",
    )
    per_call = publish(db, "com.acme.per-call", price={"per_1000_calls": 1, "currency": "EUR"})
    dollars = publish(
        db, "com.acme.dollars", price={"per_cpu_hour": 0.36, "currency": "USD"}, license=None
    )
    free = publish(db, "com.globex.free", publisher="globex")
    odd = publish(
        db, "com.globex.odd", publisher="globex", price={"monthly": 10, "currency": "EUR"}
    )
    publish(db, "com.acme.rebuilt")  # in the catalog, but installed from a local bundle
    install(db, "com.acme.paid", image=paid)
    install(db, "com.acme.per-call", image=per_call)
    install(db, "com.acme.dollars", image=dollars)
    install(db, "com.globex.free", image=free)
    install(db, "com.globex.odd", image=odd)
    install(db, "com.acme.rebuilt")
    install(db, "com.local.tool", license=None)
    install(db, "com.local.idle")
    series = UsageSeries(db, clock=clock)
    for i in range(60):  # ten minutes of samples, every 10 s
        series.record(
            [
                sample("com.acme.paid", calls=3, cpu_usec=1_500_000),
                sample("com.acme.per-call", calls=5),
                sample("com.acme.dollars", cpu_usec=10_000_000),
                sample("com.globex.free", calls=1, cpu_usec=1),
                sample("com.globex.odd", calls=2),
                sample("com.acme.rebuilt", calls=7),
                sample("com.local.tool", calls=4, cpu_usec=250_000),
            ],
            at=T0 + 10 * i,
        )
    clock.now = T0 + 1800

    report = MeteringService(engine=db, clock=clock).compute(since=T0, until=T0 + 600)

    assert report["resolution_s"] == FINE.step_s and report["complete"] is True
    assert report["period"] == {"start": "2023-11-14T23:00:00Z", "end": "2023-11-14T23:10:00Z"}
    assert report["per_version"] is False
    rows = by_id(report)
    assert list(rows) == sorted(rows)
    paid_row = rows["com.acme.paid"]
    assert paid_row["version"] == "1.0.0" and paid_row["source"] == "catalog"
    assert (paid_row["publisher_id"], paid_row["publisher_name"]) == ("acme", "Acme Ltd")
    assert paid_row["license"] == "LicenseRef-Acme-Commercial"
    assert paid_row["calls"] == 180 and paid_row["cpu_seconds"] == 90.0
    # 180 calls at 0.50 per 1000 (0.09) + 90 CPU seconds at 2 per hour (0.05)
    assert paid_row["pricing"] == "metered" and paid_row["currency"] == "EUR"
    assert paid_row["amount_due"] == "0.140000"
    assert rows["com.acme.per-call"]["amount_due"] == "0.300000"  # 300 calls at 1 per 1000
    assert rows["com.acme.dollars"]["amount_due"] == "0.060000"  # 600 CPU s at 0.36 an hour
    assert rows["com.acme.dollars"]["license"] == "MIT"  # the manifest's, where none was given
    assert rows["com.globex.free"]["pricing"] == "free"
    assert rows["com.globex.free"]["amount_due"] is None
    assert rows["com.globex.free"]["cpu_seconds"] == 0.00006
    odd_row = rows["com.globex.odd"]
    assert odd_row["pricing"] == "unsupported" and odd_row["amount_due"] is None
    assert odd_row["price"] == {"monthly": 10, "currency": "EUR"}
    for local in ("com.acme.rebuilt", "com.local.tool"):
        assert rows[local]["source"] == "local"
        assert rows[local]["publisher_id"] is None and rows[local]["price"] is None
    assert rows["com.acme.rebuilt"]["calls"] == 420
    assert rows["com.acme.rebuilt"]["license"] == "Apache-2.0"  # the installed manifest's
    assert rows["com.local.tool"]["license"] is None
    assert rows["com.local.idle"]["calls"] == 0 and rows["com.local.idle"]["samples"] == 0

    totals = {(t["publisher_id"], t["currency"]): t for t in report["totals"]}
    assert set(totals) == {
        (None, None),
        ("acme", "EUR"),
        ("acme", "USD"),
        ("globex", None),
    }
    assert totals[("acme", "EUR")]["amount_due"] == "0.440000"
    assert totals[("acme", "EUR")]["plugins"] == 2 and totals[("acme", "EUR")]["calls"] == 480
    assert totals[("acme", "USD")]["amount_due"] == "0.060000"
    assert totals[("globex", None)]["amount_due"] is None
    assert totals[("globex", None)]["calls"] == 180
    assert totals[("globex", None)]["publisher_name"] == "Globex"
    local_total = totals[(None, None)]
    assert local_total["plugins"] == 3 and local_total["calls"] == 420 + 240
    assert local_total["cpu_seconds"] == 15.0


def test_consecutive_windows_count_every_bucket_once(db: Engine, clock: FakeClock) -> None:
    install(db, "com.local.tool")
    series = UsageSeries(db, clock=clock)
    for i in range(60):
        series.record([sample("com.local.tool", calls=i + 1)], at=T0 + 10 * i + 3)
    clock.now = T0 + 1200
    metering = MeteringService(engine=db, clock=clock)

    def calls(since: float, until: float) -> int:
        return int(by_id(metering.compute(since=since, until=until))["com.local.tool"]["calls"])

    whole = calls(T0, T0 + 600)
    assert whole == sum(range(1, 61))
    # Edges inside buckets: each bucket goes to the window its start lies in.
    assert calls(T0, T0 + 305) + calls(T0 + 305, T0 + 600) == whole
    assert calls(T0 + 7, T0 + 123) + calls(T0 + 123, T0 + 600) == whole
    first = metering.compute(since=T0, until=T0 + 305)
    assert first["period"]["end"] == "2023-11-14T23:05:00Z"  # T0 + 300: floor(until)
    assert calls(T0, T0 + 300) == sum(range(1, 31))


def test_rolled_up_tiers_count_every_call_once(db: Engine, clock: FakeClock) -> None:
    install(db, "com.local.tool")
    series = UsageSeries(db, clock=clock)
    recorded = 0
    for i in range(2 * 360):  # two hours every 10 s, rolled up every minute as the sampler does
        clock.now = T0 + 10 * i
        series.record([sample("com.local.tool", calls=1 + i % 3, cpu_usec=1000)])
        recorded += 1 + i % 3
        if i % 6 == 5:
            series.maintain()
    clock.now = T0 + 7200 + 5  # the fine tier no longer holds the first hour

    report = MeteringService(engine=db, clock=clock).compute(since=T0, until=T0 + 7200)

    assert report["resolution_s"] == MINUTE.step_s and report["complete"] is True
    row = by_id(report)["com.local.tool"]
    assert row["calls"] == recorded and row["samples"] == 720
    assert row["cpu_seconds"] == 0.72


def test_the_coarse_tier_is_filled_from_finer_ones_where_it_is_not_rolled_up_yet(
    db: Engine, clock: FakeClock
) -> None:
    install(db, "com.local.tool")

    def point(step_s: int, at: float, calls: int) -> dict[str, Any]:
        return {
            "plugin_id": "com.local.tool",
            "step_s": step_s,
            "at": int(at),
            "samples": 1,
            "calls": calls,
            "cpu_usec": None,
        }

    with session_scope(db) as s:
        usage_store.save_points(
            s,
            points=[
                point(HOUR.step_s, T0, 100),
                point(MINUTE.step_s, T0 + 1800, 1000),  # inside the hour above: not again
                *(point(MINUTE.step_s, T0 + 3600 + 60 * k, 10) for k in range(3)),
                point(FINE.step_s, T0 + 3660, 1000),  # inside a minute above: not again
                point(FINE.step_s, T0 + 3780, 1),
                point(FINE.step_s, T0 + 3790, 1),
                point(FINE.step_s, T0 + 7200, 1000),  # the bucket of until: the next window's
            ],
        )
    clock.now = T0 + 2 * DAY

    report = MeteringService(engine=db, clock=clock).compute(since=T0, until=T0 + 7200)

    assert report["resolution_s"] == HOUR.step_s
    assert by_id(report)["com.local.tool"]["calls"] == 100 + 30 + 2


def test_the_finest_tier_that_still_holds_the_start_is_chosen() -> None:
    now = T0 + 100 * DAY
    assert metering_tier(now - 30 * 60, now) == (FINE, True)
    # An hour ago the fine tier's prune may take the first bucket at any moment.
    assert metering_tier(now - 3600, now) == (MINUTE, True)
    assert metering_tier(now - 12 * 3600, now) == (MINUTE, True)
    assert metering_tier(now - 2 * DAY, now) == (HOUR, True)
    assert metering_tier(now - 31 * DAY, now) == (HOUR, False)


def test_a_window_older_than_the_series_or_still_open_is_not_complete(
    db: Engine, clock: FakeClock
) -> None:
    metering = MeteringService(engine=db, clock=clock)
    old = metering.compute(since=T0 - 40 * DAY, until=T0 - 5 * DAY)
    assert old["complete"] is False
    assert any("no longer kept" in note for note in old["notes"])
    open_ = metering.compute(since=T0 - 600, until=T0 + 600)
    assert open_["complete"] is False and open_["resolution_s"] == FINE.step_s
    assert any("still being filled" in note for note in open_["notes"])
    closed = metering.compute(since=T0 - 600, until=T0)
    assert closed["complete"] is True


def test_an_uninstalled_plugins_usage_goes_with_it(db: Engine, clock: FakeClock) -> None:
    # What the report's notes say: uninstalling deletes the series, so it cannot be billed.
    install(db, "com.local.gone")
    series = UsageSeries(db, clock=clock)
    series.record([sample("com.local.gone", calls=9)], at=T0)
    clock.now = T0 + 60
    metering = MeteringService(engine=db, clock=clock)
    assert by_id(metering.compute(since=T0, until=T0 + 60))["com.local.gone"]["calls"] == 9
    with session_scope(db) as s:
        crud.delete_plugin(s, plugin_id="com.local.gone")
    report = metering.compute(since=T0, until=T0 + 60)
    assert "com.local.gone" not in by_id(report)
    assert any("uninstalled" in note for note in report["notes"])


def test_points_of_a_plugin_no_longer_installed_are_still_counted(
    db: Engine, clock: FakeClock
) -> None:
    UsageSeries(db, clock=clock).record([sample("com.local.orphan", calls=4)], at=T0)
    clock.now = T0 + 60
    row = by_id(MeteringService(engine=db, clock=clock).compute(since=T0, until=T0 + 60))[
        "com.local.orphan"
    ]
    assert row["calls"] == 4 and row["installed"] is False
    assert row["source"] == "unknown" and row["version"] is None


# -- windows as the API gives them ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("-1h", "-2h", "must be after since"),
        ("-1h", "-1h", "must be after since"),
        ("-367d", None, "at most 366 days"),
        ("2024-01-01", "2025-01-02", "at most 366 days"),
        ("yesterday", None, "is not a time"),
        ("-1h", "2024-13-01", "is not a time"),
        ("1960-01-01", None, "out of range"),
        ("-" + "9" * 20 + "w", None, "out of range"),
        ("0001-01-01T00:00:00+01:00", None, "out of range"),
    ],
)
def test_bad_windows_are_refused(
    db: Engine, clock: FakeClock, since: str, until: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        MeteringService(engine=db, clock=clock).report(since=since, until=until)
    assert refused.value.status_code == 422 and refused.value.code == "invalid_request"
    assert message in refused.value.message


def test_a_window_of_366_days_and_relative_times_are_taken(db: Engine, clock: FakeClock) -> None:
    metering = MeteringService(engine=db, clock=clock)
    year = metering.report(since="2024-01-01", until="2025-01-01")  # 2024 had 366 days
    assert year["since"] == "2024-01-01T00:00:00Z" and year["until"] == "2025-01-01T00:00:00Z"
    recent = metering.report(since="-30m")
    assert recent["until"] == "2023-11-14T23:00:00Z" and recent["resolution_s"] == FINE.step_s


# -- prices -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ({"per_1000_calls": 0.5, "currency": "EUR"}, MeteredPrice("EUR", Decimal("0.5"))),
        (
            {"per_cpu_hour": "1.25", "currency": " usd "},
            MeteredPrice("USD", Decimal(0), Decimal("1.25")),
        ),
        (
            {"per_1000_calls": 0, "per_cpu_hour": 3, "currency": "JPY"},
            MeteredPrice("JPY", Decimal(0), Decimal(3)),
        ),
    ],
)
def test_metered_prices_are_read(price: dict[str, Any], expected: MeteredPrice) -> None:
    assert metered_price(price) == expected


@pytest.mark.parametrize(
    "price",
    [
        None,
        {},
        [1, 2],
        "0.50 EUR",
        {"per_1000_calls": 0.5},  # no currency
        {"per_1000_calls": 0.5, "currency": "EURO"},
        {"per_1000_calls": 0.5, "currency": 978},
        {"currency": "EUR"},  # no rate
        {"per_1000_calls": -1, "currency": "EUR"},
        {"per_1000_calls": True, "currency": "EUR"},
        {"per_1000_calls": float("nan"), "currency": "EUR"},
        {"per_1000_calls": float("inf"), "currency": "EUR"},
        {"per_1000_calls": "Infinity", "currency": "EUR"},
        {"per_1000_calls": "1e12", "currency": "EUR"},
        {"per_1000_calls": "cheap", "currency": "EUR"},
        {"per_1000_calls": {"amount": 1}, "currency": "EUR"},
        {"per_1000_calls": 1, "currency": "EUR", "free_calls": 1000},  # would change the sum
    ],
)
def test_other_prices_are_not_metered(price: Any) -> None:
    assert metered_price(price) is None


def test_amounts_are_exact_decimals_rounded_half_up_to_the_millionth() -> None:
    # A float rate is read as written: 0.1, not 0.1000000000000000055511151231257827.
    tenth = metered_price({"per_1000_calls": 0.1, "currency": "EUR"})
    assert tenth is not None and tenth.per_1000_calls == Decimal("0.1")
    assert amount_due(tenth, calls=30_000_001, cpu_usec=0) == Decimal("3000.000100")
    half_millionth = MeteredPrice("EUR", per_1000_calls=Decimal("0.0005"))
    assert amount_due(half_millionth, calls=1, cpu_usec=0) == Decimal("0.000001")
    assert amount_due(half_millionth, calls=0, cpu_usec=0) == Decimal("0.000000")
    hourly = MeteredPrice("EUR", per_cpu_hour=Decimal("1.5"))
    assert amount_due(hourly, calls=10**9, cpu_usec=3_600_000_000) == Decimal("1.500000")
    assert amount_due(hourly, calls=0, cpu_usec=1) == Decimal("0.000000")  # 4.2e-10
    both = MeteredPrice("EUR", per_1000_calls=Decimal(2), per_cpu_hour=Decimal(36))
    assert amount_due(both, calls=1500, cpu_usec=100_000_000) == Decimal("4.000000")
    big = MeteredPrice("EUR", per_1000_calls=Decimal(10) ** 9)
    assert amount_due(big, calls=10**15, cpu_usec=0) == Decimal(10) ** 21


# -- CSV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("Acme = best", "Acme = best"),
        ("", ""),
    ],
)
def test_cells_a_spreadsheet_would_run_are_defused(text: str, safe: str) -> None:
    assert spreadsheet_safe(text) == safe


def test_the_csv_has_a_header_and_one_safe_row_per_plugin(db: Engine, clock: FakeClock) -> None:
    with session_scope(db) as s:
        catalog_store.add_publisher(s, publisher_id="mallory", name='=HYPERLINK("http://x","y")')
    image = publish(
        db,
        "com.mallory.tool",
        publisher="mallory",
        license="+cmd|' /C calc'!A0",
        price={"per_1000_calls": 2, "currency": "EUR"},
    )
    install(db, "com.mallory.tool", image=image)
    install(db, "com.local.tool", license='@evil, "quoted"\nnext line')
    series = UsageSeries(db, clock=clock)
    series.record([sample("com.mallory.tool", calls=1000, cpu_usec=2_500_000)], at=T0)
    clock.now = T0 + 60

    text = report_csv(MeteringService(engine=db, clock=clock).compute(since=T0, until=T0 + 60))

    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["plugin_id"] for r in table] == ["com.local.tool", "com.mallory.tool"]
    mallory, local = table[1], table[0]
    assert mallory["publisher_name"] == '\'=HYPERLINK("http://x","y")'
    assert mallory["license"] == "'+cmd|' /C calc'!A0"
    assert mallory["calls"] == "1000" and mallory["cpu_seconds"] == "2.5"
    assert mallory["amount_due"] == "2.000000" and mallory["currency"] == "EUR"
    assert mallory["price"] == '{"currency":"EUR","per_1000_calls":2}'
    assert mallory["source"] == "catalog" and mallory["installed"] == "true"
    assert mallory["period_start"] == "2023-11-14T23:00:00Z" and mallory["resolution_s"] == "10"
    assert local["license"] == '\'@evil, "quoted"\nnext line'  # quoted, and one cell
    assert local["publisher_id"] == "" and local["amount_due"] == "" and local["source"] == "local"
    for row in table:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
