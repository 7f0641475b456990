"""Engine creation, migrations and the session scope. One code path for SQLite and PostgreSQL.

Everything above the store names its types from here (``Engine``, ``Session``), so no module
outside ``store/`` needs SQLAlchemy to hold a connection or pass a transaction along.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session, create_engine

from orchestrator.domain.errors import Conflict, Duplicate, InvalidValue
from orchestrator.store import catalog_models  # noqa: F401  (registers the catalog's tables)
from orchestrator.store.history import PluginHistory  # noqa: F401  (registers its table)

__all__ = [
    "MIGRATIONS",
    "Engine",
    "Session",
    "after_commit",
    "make_engine",
    "migrate",
    "ping",
    "session_scope",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    return engine


def _refused_value(exc: DataError) -> InvalidValue:
    """The database refused a value that validation let through: a NUL character in a
    PostgreSQL text field, a number past an INTEGER column. The value is at fault, not the
    server, so it leaves the store as :class:`InvalidValue` (422 ``invalid_value``). The
    warning keeps the driver's words for whoever tightens the validation that should have
    caught it. (Translated here, not in an engine ``handle_error`` listener: any connection
    event puts every statement on SQLAlchemy's slower dispatching path, measured at 2% of a
    host API write.)"""
    reason = (str(exc.orig).splitlines() or ["refused"])[0]
    log.warning("the database refused a value of the request: %s", reason)
    return InvalidValue(f"a value of the request cannot be stored or looked up: {reason}")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (run at every start; cheap when current)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error. A constraint the
    database holds leaves as a 409 (:func:`_constraint_error`), so callers above the store
    need not know SQLAlchemy's exceptions."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise _constraint_error(exc) from None
        except DataError as exc:
            session.rollback()
            raise _refused_value(exc) from None
        except BaseException:
            session.rollback()
            raise


def _constraint_error(exc: IntegrityError) -> Conflict:
    """A constraint the database holds, as the domain's 409: :class:`Duplicate` for a unique
    key taken (by another request, or another replica), :class:`Conflict` for the rest (a
    row that names one that does not exist)."""
    reason = (str(exc.orig).splitlines() or ["constraint failed"])[0]
    unique = type(exc.orig).__name__ == "UniqueViolation" or reason.startswith("UNIQUE")
    if unique:
        return Duplicate(f"a row with the same key is already stored: {reason}")
    return Conflict(f"the change breaks a rule of the database: {reason}", code="constraint")


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once ``session``'s transaction has committed (never if it rolls back)."""
    event.listen(session, "after_commit", lambda _session: callback(), once=True)


def ping(engine: Engine) -> None:
    """A round trip to the database; raises whatever the driver raises when it is away."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
