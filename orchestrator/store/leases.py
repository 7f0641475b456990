"""Leases: a named role that one replica holds at a time, for a while, renewed by a heartbeat.

Taking one is a single conditional ``UPDATE`` (the holder renews, or anyone takes an expired
lease), or the first ``INSERT`` of the name; the database's row lock and primary key make two
replicas' attempts exclude each other on PostgreSQL and SQLite alike. Times are the replicas'
own clocks (UTC): replicas whose clocks disagree by more than a fraction of the lease may
overlap for that long, so keep them synchronised (NTP, as every Kubernetes node is).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col

from orchestrator.store.models import Lease

__all__ = ["holder_of", "release_lease", "take_lease"]


def take_lease(session: Session, *, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
    """Renew ``name`` for ``holder``, or take it if it has expired; True when ``holder`` now
    holds it until ``now + ttl_s``. The caller commits; a concurrent first insert of the same
    name leaves the store as ``Duplicate`` (someone else took it)."""
    expires = now + timedelta(seconds=ttl_s)
    current = session.get(Lease, name)
    if current is None:
        session.add(Lease(name=name, holder=holder, expires_at=expires, acquired_at=now))
        session.flush()
        return True
    acquired = current.acquired_at if current.holder == holder else now
    result = session.execute(
        update(Lease)
        .where(
            col(Lease.name) == name,
            or_(col(Lease.holder) == holder, col(Lease.expires_at) < now),
        )
        .values(holder=holder, expires_at=expires, acquired_at=acquired)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, *, name: str, holder: str) -> None:
    """Give the lease up (on a clean stop), so another replica need not wait for it to expire."""
    session.execute(delete(Lease).where(col(Lease.name) == name, col(Lease.holder) == holder))


def holder_of(session: Session, *, name: str, now: datetime) -> Lease | None:
    """The lease ``name`` if someone holds it now."""
    lease = session.get(Lease, name)
    if lease is None or _aware(lease.expires_at) < now:
        return None
    return lease


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC only.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
