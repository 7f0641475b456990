"""Migration 0012 on SQLite and PostgreSQL: a usage series written before it keeps its rows,
its new call columns read as not known, the sampler carries the old call total on and counts
failed calls and calls' time from the upgrade; and it goes back down cleanly."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from orchestrator.monitor.metrics import Metrics
from orchestrator.monitor.sampler import Sampler, call_stats_from
from orchestrator.monitor.series import UsageSeries
from orchestrator.store.db import MIGRATIONS, make_engine
from tests.unit.monitor.conftest import FakeClock, add_plugin
from tests.unit.monitor.test_sampler import FakeMeter

T0 = 1_700_002_800
NEW_COLUMNS = {"errors", "errors_total", "call_usec", "call_usec_total"}


def alembic(engine: Engine, verb: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def usage_columns(engine: Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("resource_usage")}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_upgrade_keeps_the_series_and_the_totals_carry_on(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        alembic(engine, "upgrade", "0011")
        assert not usage_columns(engine) & NEW_COLUMNS
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO resource_usage (plugin_id, step_s, at, samples, calls, "
                    "calls_total) VALUES ('a', 10, :at, 1, 2, 7)"
                ),
                {"at": T0 - 10},
            )
        alembic(engine, "upgrade", "head")
        assert usage_columns(engine) >= NEW_COLUMNS

        clock = FakeClock(T0)
        series = UsageSeries(engine, clock=clock)
        [old] = series.current().values()
        assert (old["calls_total"], old["errors_total"], old["call_usec_total"]) == (7, None, None)

        add_plugin(engine, "a", container_id="a" * 64, created_at=T0 - 100)
        metrics = Metrics()
        metrics.observe_call("a", "analyzer", "timeout", 0.3)
        sampler = Sampler(
            engine=engine,
            meter=FakeMeter(),  # type: ignore[arg-type]
            series=series,
            clock=clock,
            call_stats=call_stats_from(metrics),
        )
        [s] = sampler.sample_once()
        assert (s.calls_total, s.errors_total, s.call_usec_total) == (8, 1, 300_000)

        alembic(engine, "downgrade", "0011")
        assert not usage_columns(engine) & NEW_COLUMNS
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("resource_usage")}
        assert "ix_resource_usage_step_at" in indexes
        with engine.connect() as conn:
            totals = conn.execute(
                sa.text("SELECT at, calls_total FROM resource_usage ORDER BY at")
            ).all()
        assert [tuple(row) for row in totals] == [(T0 - 10, 7), (T0, 8)]
        alembic(engine, "upgrade", "head")
        assert usage_columns(engine) >= NEW_COLUMNS
    finally:
        engine.dispose()
