"""SQLModel tables. Only ``services/lifecycle.py`` changes a plugin's state column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Plugin(SQLModel, table=True):
    __tablename__ = "plugins"

    id: str = Field(primary_key=True, max_length=128)
    version: str = Field(max_length=64)
    pending_version: str | None = Field(default=None, max_length=64)
    state: str = Field(max_length=16, index=True)
    state_reason: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    resources: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PluginVersion(SQLModel, table=True):
    __tablename__ = "plugin_versions"

    plugin_id: str = Field(primary_key=True, foreign_key="plugins.id", max_length=128)
    version: str = Field(primary_key=True, max_length=64)
    manifest: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    image: str = Field(max_length=512)
    image_id: str | None = Field(default=None, max_length=512)
    source: str = Field(max_length=16)  # "bundle" | "image"
    source_digest: str | None = Field(default=None, max_length=80)
    installed_at: datetime = Field(default_factory=utcnow)


class StateTransition(SQLModel, table=True):
    __tablename__ = "state_transitions"
    __table_args__ = (Index("ix_transitions_plugin_at", "plugin_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    plugin_id: str = Field(max_length=128)
    from_state: str = Field(max_length=16)
    to_state: str = Field(max_length=16)
    action: str = Field(max_length=32)
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


class Grant(SQLModel, table=True):
    __tablename__ = "grants"

    plugin_id: str = Field(primary_key=True, foreign_key="plugins.id", max_length=128)
    permission: str = Field(primary_key=True, max_length=64)
    granted_at: datetime = Field(default_factory=utcnow)


class Container(SQLModel, table=True):
    __tablename__ = "containers"

    id: str = Field(primary_key=True, max_length=80)
    plugin_id: str = Field(foreign_key="plugins.id", index=True, max_length=128)
    name: str = Field(max_length=128)
    version: str = Field(max_length=64)
    image: str = Field(max_length=512)
    endpoint: str = Field(max_length=512)
    # The secret the plugin requires on its protocol where it listens on a network address
    # (pods); every replica needs it to call the container, so it is kept with it.
    call_token: str | None = Field(default=None, max_length=128, repr=False)
    created_at: datetime = Field(default_factory=utcnow)
    # Set while the container is frozen by the idle pause; every replica resumes it before a call.
    paused_at: datetime | None = Field(default=None)
    # NULL for the plugin's current container; for a canary's candidate container, the percent
    # of the plugin's calls it takes (0-100). At most one per plugin.
    canary_weight: int | None = Field(default=None)


# -- host API (plugin -> orchestrator) -------------------------------------------------------


class HostToken(SQLModel, table=True):
    """A plugin's credential for the host API: only its sha256 is kept, bound to a container."""

    __tablename__ = "host_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    plugin_id: str = Field(index=True, max_length=128)
    container_id: str = Field(index=True, max_length=80)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AuditRecord(SQLModel, table=True):
    """A refused (or otherwise notable) call, kept after the plugin is gone.

    Refusals fold: the same actor refused the same action with the same outcome within one
    clock minute (``minute``) is one record whose ``count`` grows, so a flood of forged calls
    cannot flood the log. ``at`` and ``detail`` are the first call's, ``last_at`` the latest's.
    Other records (an admin's override) have no ``minute`` and never fold: a unique index
    treats NULLs as distinct, on SQLite and PostgreSQL alike.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ux_audit_log_fold", "actor", "action", "outcome", "minute", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=160)  # "plugin:<id>" or "admin"
    action: str = Field(max_length=64)  # host API operation, e.g. "secrets.get"
    outcome: str = Field(max_length=32)  # "unauthorized", "permission_denied", ...
    permission: str | None = Field(default=None, max_length=64)
    detail: str | None = None
    count: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    minute: datetime | None = None  # the minute a refusal folds into; None: never folds
    last_at: datetime | None = None


class Document(SQLModel, table=True):
    """The platform's document store that plugins read and write through the host API."""

    __tablename__ = "documents"

    collection: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=512)
    value: Any = Field(sa_column=Column(JSON, nullable=True))
    updated_by: str = Field(max_length=128)
    updated_at: datetime = Field(default_factory=utcnow)


class StorageItem(SQLModel, table=True):
    """A plugin's own key/value entry or blob; ``size`` counts against its ``storage_mb``."""

    __tablename__ = "plugin_storage"

    plugin_id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(primary_key=True, max_length=8)  # "kv" | "blob"
    key: str = Field(primary_key=True, max_length=512)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    size: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class PluginSecret(SQLModel, table=True):
    """An operator-set secret of one plugin, encrypted at rest (never shown in clear)."""

    __tablename__ = "plugin_secrets"

    plugin_id: str = Field(primary_key=True, max_length=128)
    name: str = Field(primary_key=True, max_length=128)
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class EventRecord(SQLModel, table=True):
    """The durable event log: an event is written here before anyone is told of it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_type_time", "type", "time"),)

    id: str = Field(primary_key=True, max_length=40)
    type: str = Field(max_length=128)
    source: str = Field(max_length=160)
    subject: str | None = Field(default=None, max_length=256)
    time: datetime = Field(default_factory=utcnow, index=True)
    payload: Any = Field(default=None, sa_column=Column(JSON, nullable=True))


class ApiToken(SQLModel, table=True):
    """A credential of the admin API with a role; only the token's sha256 is kept."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=128)
    role: str = Field(max_length=16)  # admin | operator | viewer
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class ScanReport(SQLModel, table=True):
    """What the supply-chain check found in one installed version, and any admin override."""

    __tablename__ = "scan_reports"

    plugin_id: str = Field(primary_key=True, max_length=128)
    version: str = Field(primary_key=True, max_length=64)
    report: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class TrustedKey(SQLModel, table=True):
    """A publisher's Ed25519 public key the operator trusts to sign plugins."""

    __tablename__ = "trusted_keys"

    key_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=128)
    public_key: str  # PEM
    added_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class Webhook(SQLModel, table=True):
    """An outside receiver of events: filters, an optional transformation, a retry policy.
    The signing secret is kept encrypted (SecretBox)."""

    __tablename__ = "webhooks"

    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=512)
    types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    predicates: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    transform: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(max_length=16)  # active | paused | disabled
    status_reason: str | None = None
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    timeout_s: float
    pause_after: int
    consecutive_dead: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Delivery(SQLModel, table=True):
    """One event owed to one target (``webhook:<id>`` or ``plugin:<id>``), written in the same
    transaction as the event, so a crash never loses it. A sender leases it while sending."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_at"),
        Index("ix_deliveries_target", "target", "status", "id"),
        Index("ix_deliveries_webhook", "webhook_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    target: str = Field(max_length=160)
    webhook_id: str | None = Field(default=None, max_length=32)
    plugin_id: str | None = Field(default=None, max_length=128)
    event_id: str = Field(max_length=40, index=True)
    ordered: bool = False  # plugin targets get their events one at a time, in log order
    status: str = Field(default="pending", max_length=16)  # pending|delivered|dead|cancelled
    attempts: int = 0
    next_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    latency_ms: float | None = None
    replay_of: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True)
    attempt: int
    at: datetime = Field(default_factory=utcnow)
    status_code: int | None = None
    error: str | None = None
    latency_ms: float


# -- replicas ---------------------------------------------------------------------------------


class Lease(SQLModel, table=True):
    """A named role one replica holds at a time (``supervisor``) until ``expires_at``,
    renewed by its heartbeat; an expired lease is anyone's to take."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=200)
    expires_at: datetime
    acquired_at: datetime


# -- resource monitor -------------------------------------------------------------------------

# (Here rather than at the top while the top of this file is being edited: fold it in there.)


class UsagePoint(SQLModel, table=True):
    """One point of a plugin's resource series: the samples of one ``step_s`` bucket starting
    at ``at`` (unix seconds, UTC). Raw units: bytes, microseconds, counts. Fields named
    ``*_total`` are the plugin's running totals at the bucket's end; the other counters are
    what was used within the bucket. None: not available (the backend could not tell)."""

    __tablename__ = "resource_usage"
    __table_args__ = (Index("ix_resource_usage_step_at", "step_s", "at"),)

    plugin_id: str = Field(primary_key=True, max_length=128)
    step_s: int = Field(primary_key=True)
    at: int = Field(primary_key=True, sa_type=BigInteger)
    samples: int = 1
    memory_bytes: int | None = Field(default=None, sa_type=BigInteger)  # mean
    memory_max_bytes: int | None = Field(default=None, sa_type=BigInteger)
    memory_limit_bytes: int | None = Field(default=None, sa_type=BigInteger)
    cpu_usec: int | None = Field(default=None, sa_type=BigInteger)
    cpu_total_usec: int | None = Field(default=None, sa_type=BigInteger)
    cpu_periods: int | None = Field(default=None, sa_type=BigInteger)
    cpu_throttled_periods: int | None = Field(default=None, sa_type=BigInteger)
    pids: int | None = None  # highest
    io_read_bytes: int | None = Field(default=None, sa_type=BigInteger)
    io_write_bytes: int | None = Field(default=None, sa_type=BigInteger)
    network_bytes: int | None = Field(default=None, sa_type=BigInteger)
    network_total_bytes: int | None = Field(default=None, sa_type=BigInteger)
    storage_bytes: int | None = Field(default=None, sa_type=BigInteger)  # last
    calls: int | None = Field(default=None, sa_type=BigInteger)
    calls_total: int | None = Field(default=None, sa_type=BigInteger)
    errors: int | None = Field(default=None, sa_type=BigInteger)  # calls whose outcome was not ok
    errors_total: int | None = Field(default=None, sa_type=BigInteger)
    call_usec: int | None = Field(default=None, sa_type=BigInteger)  # brokered calls' time
    call_usec_total: int | None = Field(default=None, sa_type=BigInteger)


# -- web UI -----------------------------------------------------------------------------------


class UiSessionRecord(SQLModel, table=True):
    """A signed-in web UI session, shared by every replica (``web/sessions.py``).

    Keyed by the sha256 of the session id, so the database alone cannot name a live cookie;
    ``token`` is the API token the session stands for, as Fernet ciphertext under the
    secrets key. Times are unix seconds (the replicas' clocks). ``flashes`` are the
    ``[kind, message]`` pairs waiting for the next page.
    """

    __tablename__ = "ui_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    token: bytes = Field(sa_column=Column(LargeBinary, nullable=False), repr=False)
    actor: str = Field(max_length=160)
    created: float
    seen: float = Field(index=True)
    flashes: list[list[str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
