"""Web UI sessions in the database: two stores over one database behave as two replicas, a new
store on the same database as a restart. Whole-app tests run two apps (two replicas) over one
database with the real access rule (``AdminAccess`` over real API tokens)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from orchestrator import web
from orchestrator.config import Settings
from orchestrator.security.access import ApiTokens
from orchestrator.security.secretbox import SecretBox
from orchestrator.services.extensions import AdminAccess
from orchestrator.services.plugins import PluginQueries
from orchestrator.store.db import make_engine
from orchestrator.web.guard import sessions_of
from orchestrator.web.sessions import COOKIE, SessionStore, collect_writes, write_collected
from tests.fixtures.fake_runtime import FakeRuntime
from tests.fixtures.ui import csrf_of, submit_sign_in

ADMIN = "ui-admin-secret"
KEY = Fernet.generate_key()
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM ui_sessions"))]


# -- the store ----------------------------------------------------------------------------------


@BOTH
def test_two_replicas_share_a_session_and_a_restart_keeps_it(
    engine: Engine, database_url: str
) -> None:
    one, two = SessionStore(engine=engine, key=KEY), SessionStore(engine=engine, key=KEY)
    made = one.create(token="summit_tok_abc", actor="ops (tok_1)")
    cookie = one.cookie_value(made)
    assert two.cookie_value(made) == cookie  # every replica signs alike

    found = two.get(cookie)
    assert found is not None
    assert (found.id, found.token, found.actor, found.csrf) == (
        made.id,
        "summit_tok_abc",
        "ops (tok_1)",
        made.csrf,
    )

    restarted_engine = make_engine(database_url)
    try:
        after = SessionStore(engine=restarted_engine, key=KEY).get(cookie)
        assert after is not None and after.token == "summit_tok_abc" and after.csrf == made.csrf
    finally:
        restarted_engine.dispose()


@BOTH
def test_the_database_holds_neither_the_session_id_nor_the_token(engine: Engine) -> None:
    store = SessionStore(engine=engine, key=KEY)
    token = "summit_tok_" + "s3cr3t" * 6
    session = store.create(token=token, actor="ops")
    (row,) = raw_rows(engine)
    assert row["id_hash"] == hashlib.sha256(session.id.encode()).hexdigest()
    stored = b"".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row.values()
    )
    for secret in (session.id, token, session.csrf, store.cookie_value(session)):
        assert secret.encode() not in stored
    assert Fernet(KEY).decrypt(bytes(row["token"])).decode() == token  # sealed, not lost


def test_a_forged_or_foreign_cookie_is_refused(engine: Engine) -> None:
    store = SessionStore(engine=engine, key=KEY)
    session = store.create(token="t", actor="a")
    cookie = store.cookie_value(session)
    session_id, mac = cookie.rsplit(".", 1)
    other_key = SessionStore(engine=engine, key=Fernet.generate_key())
    assert store.get(cookie) is not None
    for forged in (
        f"{session_id}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # altered signature
        f"{session_id}x.{mac}",  # altered id
        session_id,  # no signature
        other_key.cookie_value(session),  # signed under another key
        "made-up.value",
        cookie + "x" * 200,
        None,
    ):
        assert store.get(forged) is None, forged
    assert other_key.get(cookie) is None  # a replica with another key cannot read it either


@BOTH
def test_idle_and_max_age_end_a_session_and_its_row(engine: Engine) -> None:
    clock = Clock()
    store = SessionStore(engine=engine, key=KEY, idle_s=600, max_age_s=1000, clock=clock)
    idle = store.cookie_value(store.create(token="t", actor="a"))
    busy = store.cookie_value(store.create(token="t", actor="b"))
    clock.now += 590
    assert store.get(busy) is not None
    clock.now += 20  # 610 s after the last request of `idle`
    assert store.get(idle) is None
    assert len(store) == 1  # its row went with it
    clock.now += 380  # 990 s since sign-in, `busy` seen 400 s ago
    assert store.get(busy) is not None
    clock.now += 20  # past the maximum age however busy
    assert store.get(busy) is None and len(store) == 0


def test_the_row_is_not_written_on_every_request(engine: Engine) -> None:
    clock = Clock()
    store = SessionStore(engine=engine, key=KEY, clock=clock)  # touch_s: a minute
    cookie = store.cookie_value(store.create(token="t", actor="a"))
    signed_in_at = clock.now
    for _ in range(5):
        clock.now += 10
        assert store.get(cookie) is not None
    assert raw_rows(engine)[0]["seen"] == signed_in_at
    clock.now += 15  # 65 s after the last write
    assert store.get(cookie) is not None
    assert raw_rows(engine)[0]["seen"] == clock.now


@BOTH
def test_flashes_survive_across_replicas_and_show_once(engine: Engine) -> None:
    one, two = SessionStore(engine=engine, key=KEY), SessionStore(engine=engine, key=KEY)
    cookie = one.cookie_value(one.create(token="t", actor="a"))
    on_one = one.get(cookie)
    assert on_one is not None
    on_one.flash("ok", "Plugin enabled.")

    on_two = two.get(cookie)
    assert on_two is not None and on_two.take_flashes() == [("ok", "Plugin enabled.")]
    again = one.get(cookie)
    assert again is not None and again.flashes == []


@pytest.mark.parametrize("shown_first", [True, False])
def test_two_tabs_changing_messages_at_once_lose_none(engine: Engine, shown_first: bool) -> None:
    store = SessionStore(engine=engine, key=KEY)
    cookie = store.cookie_value(store.create(token="t", actor="a"))
    first = store.get(cookie)
    assert first is not None
    first.flash("ok", "first")
    tab_a, tab_b = store.get(cookie), store.get(cookie)  # two requests read it at once
    assert tab_a is not None and tab_b is not None
    if shown_first:
        assert tab_a.take_flashes() == [("ok", "first")]  # tab A shows it
        tab_b.flash("error", "second")  # tab B adds another
    else:
        tab_b.flash("error", "second")
        assert tab_a.take_flashes() == [("ok", "first")]
    now = store.get(cookie)
    assert now is not None and now.flashes == [("error", "second")]


def test_a_cap_bounds_the_rows_and_expired_rows_go_at_sign_in(engine: Engine) -> None:
    clock = Clock()
    store = SessionStore(
        engine=engine, key=KEY, idle_s=600, max_age_s=3600, max_sessions=3, clock=clock
    )
    cookies = []
    for n in range(4):
        clock.now += 1
        cookies.append(store.cookie_value(store.create(token="t", actor=f"user {n}")))
    assert len(store) == 3
    assert store.get(cookies[0]) is None  # the least recently seen made room
    assert all(store.get(c) is not None for c in cookies[1:])

    clock.now += 601  # all idle now, nobody asked again
    store.create(token="t", actor="late")
    assert len(store) == 1


def test_within_a_request_changes_wait_for_the_guard(engine: Engine) -> None:
    store = SessionStore(engine=engine, key=KEY)
    with collect_writes() as changed:
        session = store.create(token="t", actor="a")
        session.flash("ok", "Signed in.")
        cookie = store.cookie_value(session)
        assert len(store) == 0  # nothing written on the event loop
    write_collected(changed)
    found = store.get(cookie)
    assert found is not None and found.flashes == [("ok", "Signed in.")]

    with collect_writes() as changed:
        store.drop(found)
        assert store.get(cookie) is not None
    write_collected(changed)
    assert store.get(cookie) is None and len(store) == 0


def test_an_orchestrators_store_uses_its_secrets_key(engine: Engine, tmp_path: Path) -> None:
    """The key file SecretBox generates when SUMMIT_SECRETS_KEY is unset, or the setting: the
    same key, the same cookies."""
    SecretBox.from_settings(None, tmp_path)  # what the lifespan does at start
    from_file = FastAPI().state
    from_file.engine, from_file.settings = engine, Settings(state_dir=tmp_path)
    store = sessions_of(from_file)
    cookie = store.cookie_value(store.create(token="t", actor="a"))

    from_setting = FastAPI().state
    key = (tmp_path / "secrets.key").read_text().strip()
    from_setting.engine = engine
    from_setting.settings = Settings(state_dir=tmp_path / "elsewhere", secrets_key=key)
    assert sessions_of(from_setting).get(cookie) is not None


# -- two apps (replicas) over one database ------------------------------------------------------


def make_app(engine: Engine, state_dir: Path) -> FastAPI:
    app = FastAPI()
    app.include_router(web.router)
    tokens = ApiTokens(engine, cache_s=0)  # a revocation elsewhere is seen at once
    app.state.engine = engine
    app.state.settings = Settings(state_dir=state_dir, secrets_key=KEY.decode())
    app.state.access = AdminAccess(admin_token=ADMIN, tokens=tokens)
    app.state.api_tokens = tokens
    app.state.queries = PluginQueries(engine=engine, runtime=FakeRuntime())
    return app


@pytest.fixture
def replicas(engine: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(make_app(engine, tmp_path / "a"), base_url="http://testserver") as a,
        TestClient(make_app(engine, tmp_path / "b"), base_url="http://testserver") as b,
    ):
        yield a, b


def sign_in(client: TestClient, token: str) -> str:
    """Sign in with ``token``; the session cookie it was given."""
    r = submit_sign_in(client, token)
    assert r.status_code == 303, r.text
    return r.cookies[COOKIE]


@BOTH
def test_any_replica_serves_a_session_and_sign_out_anywhere_ends_it(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    cookie = sign_in(a, ADMIN)
    b.cookies.set(COOKIE, cookie, path="/ui")
    page = b.get("/ui/plugins")
    assert page.status_code == 200
    assert "Signed in as admin token" in page.text  # the sign-in message, made on A
    assert "Signed in as" not in b.get("/ui/plugins").text  # shown once
    csrf_from_a = csrf_of(a.get("/ui/plugins").text)

    out = b.post("/ui/sign-out", data={"csrf_token": csrf_from_a}, follow_redirects=False)
    assert out.status_code == 303
    r = a.get("/ui/plugins", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/sign-in")


def test_revoking_the_token_ends_its_session_on_every_replica(
    replicas: tuple[TestClient, TestClient], engine: Engine
) -> None:
    a, b = replicas
    tokens: ApiTokens = a.app.state.api_tokens  # type: ignore[attr-defined]
    operator = tokens.create(name="ops", role="operator")
    cookie = sign_in(a, operator.token)
    b.cookies.set(COOKIE, cookie, path="/ui")
    assert b.get("/ui/plugins").status_code == 200
    tokens.revoke(operator.id)
    r = b.get("/ui/plugins", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/sign-in")
    assert raw_rows(engine) == []  # the session's row went too
    assert a.get("/ui/plugins", follow_redirects=False).status_code == 303
