"""The store against real SQLite and PostgreSQL: migrations, round trips, deletes, transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.domain.errors import Conflict, Duplicate
from orchestrator.store import crud
from orchestrator.store.db import migrate, session_scope
from orchestrator.store.models import Container, Plugin, PluginVersion, utcnow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)

TABLES = {
    "plugins",
    "plugin_versions",
    "state_transitions",
    "grants",
    "containers",
    "events",
    "webhooks",
    "deliveries",
    "delivery_attempts",
    "leases",
    "resource_usage",
}


def add_plugin(engine: Engine, plugin_id: str, *, image: str | None = None) -> None:
    """A plugin with one version, two grants and one container."""
    image = image or f"summit/{plugin_id}:1.0.0"
    with session_scope(engine) as s:
        s.add(Plugin(id=plugin_id, version="1.0.0", state="ACTIVE"))
        s.flush()
        s.add(
            PluginVersion(
                plugin_id=plugin_id,
                version="1.0.0",
                manifest={"id": plugin_id},
                image=image,
                source="bundle",
            )
        )
        crud.set_grants(s, plugin_id=plugin_id, permissions=["read:data", "storage"])
        s.add(
            Container(
                id=f"c-{plugin_id}",
                plugin_id=plugin_id,
                name=f"summit-{plugin_id}",
                version="1.0.0",
                image=image,
                endpoint="unix:///run/summit/plugin.sock",
            )
        )


def row_counts(engine: Engine, plugin_id: str) -> dict[str, int]:
    counts = {}
    with engine.connect() as conn:
        for table, column in [
            ("plugins", "id"),
            ("plugin_versions", "plugin_id"),
            ("grants", "plugin_id"),
            ("containers", "plugin_id"),
        ]:
            counts[table] = conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :p"), {"p": plugin_id}
            ).scalar_one()
    return counts


def test_migrate_creates_tables_and_records_revision_and_is_idempotent(engine: Engine) -> None:
    migrate(engine)  # the fixture already migrated once; every start runs it again
    assert set(sa.inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [r[0] for r in revisions] == ["0013"]  # the newest migration, one head


def test_plugin_version_grants_and_container_round_trip(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    with session_scope(engine) as s:
        plugin = crud.get_plugin(s, plugin_id="com.example.a")
        assert plugin is not None
        assert (plugin.version, plugin.state) == ("1.0.0", "ACTIVE")
        version = crud.get_version(s, plugin_id="com.example.a", version="1.0.0")
        assert version is not None and version.image == "summit/com.example.a:1.0.0"
        assert crud.list_grants(s, plugin_id="com.example.a") == ["read:data", "storage"]
        container = crud.current_container(s, plugin_id="com.example.a")
        assert container is not None and container.id == "c-com.example.a"
        assert container.endpoint == "unix:///run/summit/plugin.sock"
        assert crud.get_plugin(s, plugin_id="com.example.missing") is None


def test_json_columns_keep_nested_values(engine: Engine) -> None:
    config = {"top": 5, "nested": {"list": [1, "two", {"three": None}], "flag": True}}
    manifest = {"id": "com.example.j", "extensions": [{"input_schema": {"type": "object"}}]}
    with session_scope(engine) as s:
        s.add(
            Plugin(
                id="com.example.j",
                version="1.0.0",
                state="LOADED",
                config=config,
                resources={"memory_mb": 128, "limits": {"cpu": 0.5}},
            )
        )
        s.flush()
        s.add(
            PluginVersion(
                plugin_id="com.example.j",
                version="1.0.0",
                manifest=manifest,
                image="i",
                source="image",
            )
        )
    with session_scope(engine) as s:
        plugin = crud.get_plugin(s, plugin_id="com.example.j")
        assert plugin is not None
        assert plugin.config == config
        assert plugin.resources == {"memory_mb": 128, "limits": {"cpu": 0.5}}
        [version] = crud.list_versions(s, plugin_id="com.example.j")
        assert version.manifest == manifest


def test_replacing_config_is_persisted(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    with session_scope(engine) as s:
        plugin = crud.get_plugin(s, plugin_id="com.example.a")
        assert plugin is not None
        plugin.config = {"new": {"value": 1}}
    with session_scope(engine) as s:
        plugin = crud.get_plugin(s, plugin_id="com.example.a")
        assert plugin is not None and plugin.config == {"new": {"value": 1}}


def test_set_grants_replaces_the_previous_set(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    add_plugin(engine, "com.example.b")
    with session_scope(engine) as s:
        crud.set_grants(s, plugin_id="com.example.a", permissions=["storage", "network:access"])
    with session_scope(engine) as s:
        assert crud.list_grants(s, plugin_id="com.example.a") == ["network:access", "storage"]
        # Twice in one transaction, with a repeat and an overlap, still one row per permission.
        crud.set_grants(s, plugin_id="com.example.a", permissions=["write:data", "write:data"])
        crud.set_grants(s, plugin_id="com.example.a", permissions=["write:data", "secrets:read"])
    with session_scope(engine) as s:
        assert crud.list_grants(s, plugin_id="com.example.a") == ["secrets:read", "write:data"]
        assert crud.list_grants(s, plugin_id="com.example.b") == ["read:data", "storage"]
        crud.set_grants(s, plugin_id="com.example.a", permissions=[])
    with session_scope(engine) as s:
        assert crud.list_grants(s, plugin_id="com.example.a") == []


def test_count_transitions_since_counts_the_window_and_action_only(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    add_plugin(engine, "com.example.b")
    now = utcnow()
    with session_scope(engine) as s:
        for minutes_ago, plugin_id, action in [
            (1, "com.example.a", "fail"),
            (4, "com.example.a", "fail"),
            (30, "com.example.a", "fail"),  # before the window
            (2, "com.example.a", "reload"),  # other action
            (2, "com.example.b", "fail"),  # other plugin
        ]:
            crud.add_transition(
                s,
                plugin_id=plugin_id,
                from_state="ACTIVE",
                to_state="FAILED",
                action=action,
                reason="crashed",
                at=now - timedelta(minutes=minutes_ago),
            )
    with session_scope(engine) as s:
        since = now - timedelta(minutes=5)
        assert (
            crud.count_transitions_since(s, plugin_id="com.example.a", action="fail", since=since)
            == 2
        )
        assert (
            crud.count_transitions_since(
                s, plugin_id="com.example.a", action="fail", since=now - timedelta(hours=1)
            )
            == 3
        )
        assert (
            crud.count_transitions_since(s, plugin_id="com.example.a", action="fail", since=now)
            == 0
        )
        # The same instant written in another time zone selects the same rows.
        eastern = since.astimezone(timezone(timedelta(hours=-5)))
        assert (
            crud.count_transitions_since(s, plugin_id="com.example.a", action="fail", since=eastern)
            == 2
        )
        newest = crud.list_transitions(s, plugin_id="com.example.a", limit=2)
        assert [t.action for t in newest] == ["reload", "fail"]
        assert newest[0].reason == "crashed"


def test_delete_plugin_removes_its_rows_and_no_others(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    add_plugin(engine, "com.example.b")
    with session_scope(engine) as s:
        crud.delete_plugin(s, plugin_id="com.example.a")
    assert row_counts(engine, "com.example.a") == {
        "plugins": 0,
        "plugin_versions": 0,
        "grants": 0,
        "containers": 0,
    }
    assert row_counts(engine, "com.example.b") == {
        "plugins": 1,
        "plugin_versions": 1,
        "grants": 2,
        "containers": 1,
    }


def test_images_in_use_can_exclude_one_plugin(engine: Engine) -> None:
    add_plugin(engine, "com.example.a", image="img-a")
    add_plugin(engine, "com.example.b", image="img-shared")
    add_plugin(engine, "com.example.c", image="img-shared")
    with session_scope(engine) as s:
        assert crud.images_in_use(s) == {"img-a", "img-shared"}
        assert crud.images_in_use(s, exclude_plugin="com.example.a") == {"img-shared"}
        # b's image is still needed by c, so removing b must not free it.
        assert "img-shared" in crud.images_in_use(s, exclude_plugin="com.example.b")


def test_session_scope_commits_on_success(engine: Engine) -> None:
    with session_scope(engine) as s:
        s.add(Plugin(id="com.example.kept", version="1.0.0", state="LOADED"))
    with session_scope(engine) as s:
        assert [p.id for p in crud.list_plugins(s)] == ["com.example.kept"]


def test_session_scope_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="boom"), session_scope(engine) as s:
        s.add(Plugin(id="com.example.gone", version="1.0.0", state="LOADED"))
        s.flush()  # the row reached the database inside the transaction
        crud.set_grants(s, plugin_id="com.example.gone", permissions=["storage"])
        s.flush()
        raise RuntimeError("boom")
    assert row_counts(engine, "com.example.gone") == {
        "plugins": 0,
        "plugin_versions": 0,
        "grants": 0,
        "containers": 0,
    }


def test_rows_of_an_unknown_plugin_are_refused(engine: Engine) -> None:
    # Foreign keys hold on SQLite too (PRAGMA foreign_keys=ON).
    with pytest.raises(Conflict) as refused, session_scope(engine) as s:
        crud.set_grants(s, plugin_id="com.example.nobody", permissions=["storage"])
    assert refused.value.code == "constraint" and not isinstance(refused.value, Duplicate)
    with session_scope(engine) as s:
        assert crud.list_grants(s, plugin_id="com.example.nobody") == []


def test_list_plugins_filters_by_state_in_id_order(engine: Engine) -> None:
    with session_scope(engine) as s:
        for pid, state in [
            ("com.example.c", "ACTIVE"),
            ("com.example.a", "ACTIVE"),
            ("com.example.b", "FAILED"),
        ]:
            s.add(Plugin(id=pid, version="1.0.0", state=state))
    with session_scope(engine) as s:
        assert [p.id for p in crud.list_plugins(s)] == [
            "com.example.a",
            "com.example.b",
            "com.example.c",
        ]
        assert [p.id for p in crud.list_plugins(s, state="ACTIVE")] == [
            "com.example.a",
            "com.example.c",
        ]


def test_current_container_is_the_newest(engine: Engine) -> None:
    add_plugin(engine, "com.example.a")
    with session_scope(engine) as s:
        s.add(
            Container(
                id="c-new",
                plugin_id="com.example.a",
                name="summit-a-2",
                version="1.1.0",
                image="img",
                endpoint="tcp://10.0.0.2:8080",
                created_at=utcnow() + timedelta(seconds=5),
            )
        )
    with session_scope(engine) as s:
        current = crud.current_container(s, plugin_id="com.example.a")
        assert current is not None and current.id == "c-new"
        crud.delete_container(s, container_id="c-new")
    with session_scope(engine) as s:
        current = crud.current_container(s, plugin_id="com.example.a")
        assert current is not None and current.id == "c-com.example.a"


def test_timestamps_come_back_aware_and_comparable(engine: Engine) -> None:
    before = datetime.now(UTC)
    add_plugin(engine, "com.example.a")
    after = datetime.now(UTC)
    with session_scope(engine) as s:
        plugin = crud.get_plugin(s, plugin_id="com.example.a")
        version = crud.get_version(s, plugin_id="com.example.a", version="1.0.0")
        assert plugin is not None and version is not None
        for stamp in (plugin.created_at, plugin.updated_at, version.installed_at):
            assert stamp.tzinfo is not None
            assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)


def test_a_taken_unique_key_is_a_duplicate(engine: Engine) -> None:
    with session_scope(engine) as s:
        s.add(Plugin(id="com.example.once", version="1.0.0", state="LOADED"))
    with pytest.raises(Duplicate), session_scope(engine) as s:
        s.add(Plugin(id="com.example.once", version="2.0.0", state="LOADED"))
