"""Metering for paid plugins: what each installed plugin used over a window, for billing.

For a window ``[since, until)`` the report gives, per plugin, the calls brokered to it and the
CPU seconds its containers used, read from the resource monitor's series
(``monitor/series.py``), joined with the catalog: the publisher (id and name), the installed
version's licence terms and price and, where the price is metered, the amount due; then
totals per publisher and currency.

Which rows are counted, exactly:

* The series keeps three tiers (10 s, 1 min, 1 h buckets, kept 1 hour, 1 day, 30 days). The
  report uses the finest tier that still holds the window's first bucket (with a minute of
  margin, so a prune running meanwhile cannot take it), and says which in ``resolution_s``.
  As :meth:`UsageSeries.series` does, the part of the window not rolled up into that tier
  yet is read from the finer tiers, so the recent minutes count too.
* A bucket counts when its start lies in ``[floor(since), floor(until))``, both edges rounded
  down to ``resolution_s`` (the report's ``period``). Consecutive windows therefore never count
  a bucket twice, and windows on whole hours (a day, a month starting at 00:00 UTC) are exact
  at every resolution. A sample's use lands in the bucket the sample was taken in.
* ``complete`` is false, with a note, when the window starts before what the hour tier still
  keeps (30 days: pull billing at least daily, or raise that retention, to bill whole months)
  or ends in a bucket still being filled.

What the series does not tell, stated in every report's ``notes``:

* It has no version column: usage is per plugin, and each row names the version installed
  now, whose price is applied to the whole window (an upgrade inside the window is not split).
* Uninstalling a plugin deletes its series (``store/plugins.delete_plugin`` removes its
  ``resource_usage`` rows), so a plugin uninstalled during the window, or before the report is
  pulled, is missing from it. Pull reports at least as often as plugins are uninstalled, or
  keep the rows past uninstall, to bill that time.
* Calls are counted by the broker of the replica that samples (the elected supervisor); with
  several replicas, calls brokered by the others are not in the series.

A plugin is from the catalog when its installed version was pulled by the digest the catalog
published for that id and version; anything else (a bundle, another image, a tag) is
``"source": "local"`` with no publisher, even if the catalog holds the same id and version.

Prices are free JSON (``PublishRequest.price``); the amount is computed only for the metered
shape, ``{"per_1000_calls": x, "per_cpu_hour": y, "currency": "EUR"}`` (one rate or both,
non-negative numbers or decimal strings, an ISO 4217 code), and nothing else in it: a price
with any other key could mean something this report would get wrong, so it is shown with
``"pricing": "unsupported"`` and no amount. Amounts are decimal strings to the millionth
(rounded half up), not to the currency's minor unit: the invoice rounds.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from sqlmodel import Session

from orchestrator.domain.errors import InvalidInput
from orchestrator.monitor.series import TIERS, Tier
from orchestrator.monitor.service import parse_time
from orchestrator.store import catalog as catalog_store
from orchestrator.store import plugins as plugin_store
from orchestrator.store import usage as usage_store
from orchestrator.store.db import Engine, session_scope

__all__ = [
    "CSV_COLUMNS",
    "MAX_WINDOW_S",
    "MeteredPrice",
    "MeteringService",
    "amount_due",
    "metered_price",
    "metering_tier",
    "report_csv",
    "spreadsheet_safe",
]

MAX_WINDOW_S = 366 * 86400
# A tier is trusted to hold a bucket only this long before its prune may take it.
RETENTION_MARGIN_S = 60
# Times a report accepts: from the epoch to the end of year 9999 (what datetime can show).
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()

PRICE_KEYS = frozenset({"per_1000_calls", "per_cpu_hour", "currency"})
# Above this a rate is surely a mistake, and the arithmetic stays well inside its precision.
MAX_RATE = Decimal(10) ** 9
_CURRENCY = re.compile(r"[A-Z]{3}")
_MILLIONTH = Decimal("0.000001")
_USEC_PER_HOUR = Decimal(3_600_000_000)
_IMAGE_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")

NOTES = (
    "usage is kept per plugin, not per version: each row names the version installed now, "
    "and its price applies to the whole window",
    "a plugin's usage is deleted when it is uninstalled: plugins uninstalled before this "
    "report are not in it",
    "calls are those brokered by the replica that samples (the elected supervisor)",
)


# -- prices -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeteredPrice:
    """A price this report can compute: rates per 1000 calls and per CPU hour, one currency."""

    currency: str
    per_1000_calls: Decimal = Decimal(0)
    per_cpu_hour: Decimal = Decimal(0)


def _rate(value: Any) -> Decimal | None:
    if isinstance(value, bool):  # (an int to Python, never a price)
        return None
    try:
        if isinstance(value, int):
            rate = Decimal(value)
        elif isinstance(value, float):
            rate = Decimal(repr(value))  # the shortest repr: 0.1 is 0.1, not 0.1000000000000000055
        elif isinstance(value, str):
            rate = Decimal(value.strip())
        else:
            return None
    except InvalidOperation:
        return None
    if not rate.is_finite() or rate < 0 or rate > MAX_RATE:
        return None
    return rate


def metered_price(price: Any) -> MeteredPrice | None:
    """The price as rates, or None when it is not of the metered shape (see the module)."""
    if not isinstance(price, Mapping) or not price or set(price) - PRICE_KEYS:
        return None
    currency = price.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency.strip().upper()):
        return None
    rates = {}
    for key in ("per_1000_calls", "per_cpu_hour"):
        if key in price:
            rate = _rate(price[key])
            if rate is None:
                return None
            rates[key] = rate
    if not rates:
        return None
    return MeteredPrice(currency=currency.strip().upper(), **rates)


def amount_due(price: MeteredPrice, *, calls: int, cpu_usec: int) -> Decimal:
    """What ``calls`` and ``cpu_usec`` cost at ``price``, to the millionth (half up)."""
    with localcontext(prec=60):
        amount = (
            Decimal(calls) * price.per_1000_calls / 1000
            + Decimal(cpu_usec) * price.per_cpu_hour / _USEC_PER_HOUR
        )
        return amount.quantize(_MILLIONTH, rounding=ROUND_HALF_UP)


# -- the window ---------------------------------------------------------------------------------


def bucket_of(t: float, step_s: int) -> int:
    return int(t // step_s) * step_s


def metering_tier(since: float, now: float) -> tuple[Tier, bool]:
    """The finest tier that still holds the bucket of ``since`` (and will for a minute), and
    True; the coarsest and False when none does (the window starts before what is kept)."""
    for tier in TIERS:
        if bucket_of(since, tier.step_s) >= now - tier.keep_s + RETENTION_MARGIN_S:
            return tier, True
    return TIERS[-1], False


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _invalid(name: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"{name}: {message}",
        code="invalid_request",
        details=[{"path": f"query.{name}", "message": message}],
    )


def _time(value: str, *, name: str, now: float) -> float:
    try:
        t = parse_time(value, field=name, now=now)
    except (OverflowError, ValueError):  # a date datetime cannot hold, a huge relative time
        raise _invalid(name, f"{value!r} is out of range") from None
    if not 0 <= t <= _LATEST:
        raise _invalid(name, f"{value!r} is out of range (1970 to 9999)")
    return t


# -- the report ---------------------------------------------------------------------------------


@dataclass
class _Use:
    calls: int = 0
    cpu_usec: int = 0
    samples: int = 0


@dataclass
class _Total:
    publisher_id: str | None
    publisher_name: str | None
    currency: str | None
    plugins: int = 0
    calls: int = 0
    cpu_usec: int = 0
    amount: Decimal | None = None


def _cpu_seconds(cpu_usec: int) -> float:
    return round(cpu_usec / 1_000_000, 6)


class MeteringService:
    """Reports usage over a window for billing. ``clock`` gives unix seconds (tests pass a
    fake)."""

    def __init__(self, *, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def report(self, *, since: str, until: str | None = None) -> dict[str, Any]:
        """The report for a window given as the API takes it (ISO 8601, ``now``, ``-7d``);
        ``until`` defaults to now. 422 for a window that is unreadable, empty or reversed, or
        longer than 366 days."""
        now = self.clock()
        start = _time(since, name="since", now=now)
        end = _time(until, name="until", now=now) if until is not None else now
        if end <= start:
            raise _invalid("until", "must be after since")
        if end - start > MAX_WINDOW_S:
            raise _invalid("until", "a window is at most 366 days")
        return self.compute(since=start, until=end, now=now)

    def compute(self, *, since: float, until: float, now: float | None = None) -> dict[str, Any]:
        """The report for ``[since, until)`` in unix seconds (see the module for the rules)."""
        now = self.clock() if now is None else now
        tier, retained = metering_tier(since, now)
        step = tier.step_s
        start, end = bucket_of(since, step), bucket_of(until, step)
        notes = list(NOTES)
        if not retained:
            kept_from = -(-(now - tier.keep_s + RETENTION_MARGIN_S) // step) * step
            notes.append(
                f"usage before {_iso(kept_from)} is no longer kept (the 1 h tier keeps "
                f"{tier.keep_s // 86400} days): this report counts less than was used"
            )
        if end > bucket_of(now, step):
            notes.append("the window reaches into a bucket still being filled: not final yet")
        with session_scope(self.engine) as session:
            used = self._usage(session, tier, start, end)
            rows = self._rows(session, used)
        return {
            "since": _iso(since),
            "until": _iso(until),
            "resolution_s": step,
            "period": {"start": _iso(start), "end": _iso(end)},
            "complete": retained and end <= bucket_of(now, step),
            "per_version": False,
            "notes": notes,
            "plugins": rows,
            "totals": _totals(rows),
        }

    @staticmethod
    def _usage(session: Session, tier: Tier, start: int, end: int) -> dict[str, _Use]:
        """Calls, CPU time and samples of every plugin with points in ``[start, end)``: the
        chosen tier, then the finer ones where it is not rolled up yet (per plugin)."""
        used: dict[str, _Use] = {}
        covered: dict[str, int] = {}
        if end <= start:
            return used
        for t in reversed(TIERS[: TIERS.index(tier) + 1]):
            # Points come by plugin, then time: what a coarser tier holds is skipped here.
            for point in usage_store.points_between(session, step_s=t.step_s, start=start, end=end):
                plugin_id = point["plugin_id"]
                if point["at"] < covered.get(plugin_id, start):
                    continue
                covered[plugin_id] = point["at"] + t.step_s
                use = used.setdefault(plugin_id, _Use())
                use.calls += int(point.get("calls") or 0)
                use.cpu_usec += int(point.get("cpu_usec") or 0)
                use.samples += int(point.get("samples") or 0)
        return used

    @staticmethod
    def _rows(session: Session, used: Mapping[str, _Use]) -> list[dict[str, Any]]:
        publishers: dict[str, str] = {}

        def publisher_name(publisher_id: str) -> str:
            if publisher_id not in publishers:
                row = catalog_store.get_publisher(session, publisher_id=publisher_id)
                publishers[publisher_id] = row.name if row is not None else publisher_id
            return publishers[publisher_id]

        rows = []
        installed = plugin_store.list_plugins(session)
        for plugin in installed:
            use = used.get(plugin.id, _Use())
            version = plugin_store.get_version(session, plugin_id=plugin.id, version=plugin.version)
            manifest_license = (version.manifest.get("license") if version else None) or None
            entry = catalog_store.get_version(session, plugin_id=plugin.id, version=plugin.version)
            match = _IMAGE_DIGEST.search(version.image) if version is not None else None
            listed = catalog_store.get_plugin(session, plugin_id=plugin.id)
            if (
                entry is not None
                and listed is not None
                and match is not None
                and match.group(1) == entry.digest
            ):
                rows.append(
                    _row(
                        plugin.id,
                        plugin.version,
                        use,
                        installed=True,
                        source="catalog",
                        publisher_id=listed.publisher,
                        publisher_name=publisher_name(listed.publisher),
                        license=entry.license or manifest_license,
                        price=entry.price,
                    )
                )
            else:
                rows.append(
                    _row(
                        plugin.id,
                        plugin.version,
                        use,
                        installed=True,
                        source="local",
                        license=manifest_license,
                    )
                )
        # Points of a plugin no longer installed (a sample racing its uninstall): counted, but
        # nothing tells which version or where from.
        known = {p.id for p in installed}
        for plugin_id in sorted(set(used) - known):
            rows.append(_row(plugin_id, None, used[plugin_id], installed=False, source="unknown"))
        rows.sort(key=lambda r: r["plugin_id"])
        return rows


def _row(
    plugin_id: str,
    version: str | None,
    use: _Use,
    *,
    installed: bool,
    source: str,
    publisher_id: str | None = None,
    publisher_name: str | None = None,
    license: str | None = None,
    price: Any = None,
) -> dict[str, Any]:
    metered = metered_price(price)
    if metered is not None:
        pricing = "metered"
    elif price in (None, {}):
        pricing = "free"
    else:
        pricing = "unsupported"
    amount = (
        amount_due(metered, calls=use.calls, cpu_usec=use.cpu_usec) if metered is not None else None
    )
    return {
        "plugin_id": plugin_id,
        "version": version,
        "installed": installed,
        "source": source,
        "publisher_id": publisher_id,
        "publisher_name": publisher_name,
        "license": license,
        "price": price,
        "pricing": pricing,
        "currency": metered.currency if metered is not None else None,
        "calls": use.calls,
        "cpu_seconds": _cpu_seconds(use.cpu_usec),
        "cpu_usec": use.cpu_usec,
        "samples": use.samples,
        "amount_due": format(amount, "f") if amount is not None else None,
    }


def _totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per publisher and currency (``currency`` None: the rows without a metered
    price, so no amount). An amount is the sum of the rows' rounded amounts, as the CSV's
    rows add up in a spreadsheet."""
    totals: dict[tuple[str, str], _Total] = {}
    for row in rows:
        key = (row["publisher_id"] or "", row["currency"] or "")
        total = totals.get(key)
        if total is None:
            total = totals[key] = _Total(
                row["publisher_id"], row["publisher_name"], row["currency"]
            )
        total.plugins += 1
        total.calls += row["calls"]
        total.cpu_usec += row["cpu_usec"]
        if row["amount_due"] is not None:
            total.amount = (total.amount or Decimal(0)) + Decimal(row["amount_due"])
    return [
        {
            "publisher_id": t.publisher_id,
            "publisher_name": t.publisher_name,
            "currency": t.currency,
            "plugins": t.plugins,
            "calls": t.calls,
            "cpu_seconds": _cpu_seconds(t.cpu_usec),
            "amount_due": format(t.amount, "f") if t.amount is not None else None,
        }
        for _, t in sorted(totals.items())
    ]


# -- CSV ----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "period_start",
    "period_end",
    "resolution_s",
    "plugin_id",
    "version",
    "installed",
    "source",
    "publisher_id",
    "publisher_name",
    "license",
    "pricing",
    "price",
    "currency",
    "calls",
    "cpu_seconds",
    "amount_due",
)

# What a spreadsheet may take for the start of a formula (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return spreadsheet_safe(value)


def report_csv(report: Mapping[str, Any]) -> str:
    """The report's plugin rows as CSV (RFC 4180: a header, CRLF line ends, quoted where a
    cell needs it), every text cell made safe for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    period = report["period"]
    for row in report["plugins"]:
        values = {
            **row,
            "period_start": period["start"],
            "period_end": period["end"],
            "resolution_s": report["resolution_s"],
        }
        writer.writerow([_cell(values[name]) for name in CSV_COLUMNS])
    return out.getvalue()
