"""A delivery attempt is written only while its delivery exists: the result of a send that
was in flight when its webhook was deleted leaves no orphan attempt (on both databases)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from orchestrator.store import events as event_store
from orchestrator.store.db import session_scope
from orchestrator.store.models import Delivery, DeliveryAttempt


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_attempts_of_a_delivery_that_is_gone_are_not_written(engine: Engine) -> None:
    with session_scope(engine) as session:
        kept = Delivery(target="webhook:wh_a", webhook_id="wh_a", event_id="e1")
        gone = Delivery(target="webhook:wh_b", webhook_id="wh_b", event_id="e2")
        session.add_all([kept, gone])
        session.flush()
        kept_id, gone_id = kept.id, gone.id
        session.delete(gone)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        event_store.add_delivery_attempts(
            session,
            attempts=[
                {
                    "delivery_id": delivery_id,
                    "attempt": 1,
                    "at": now,
                    "status_code": 200,
                    "error": None,
                    "latency_ms": 1.5,
                }
                for delivery_id in (kept_id, gone_id)
            ],
        )
    with session_scope(engine) as session:
        rows = session.exec(select(DeliveryAttempt)).all()
        assert [(r.delivery_id, r.attempt, r.status_code, r.latency_ms) for r in rows] == [
            (kept_id, 1, 200, 1.5)
        ]
        assert rows[0].at is not None
