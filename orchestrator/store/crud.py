"""Keyword-only data access. Callers own the session and the transaction."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Executable, case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, delete, func, select

from orchestrator.store.models import (
    ApiToken,
    AuditRecord,
    Container,
    Document,
    EventRecord,
    Grant,
    HostToken,
    Plugin,
    PluginSecret,
    PluginVersion,
    ScanReport,
    StateTransition,
    StorageItem,
    TrustedKey,
    utcnow,
)


def get_plugin(session: Session, *, plugin_id: str, for_update: bool = False) -> Plugin | None:
    stmt = select(Plugin).where(Plugin.id == plugin_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.exec(stmt).first()


def list_plugins(session: Session, *, state: str | None = None) -> Sequence[Plugin]:
    stmt = select(Plugin).order_by(col(Plugin.id))
    if state is not None:
        stmt = stmt.where(Plugin.state == state)
    return session.exec(stmt).all()


def get_version(session: Session, *, plugin_id: str, version: str) -> PluginVersion | None:
    return session.get(PluginVersion, (plugin_id, version))


def list_versions(session: Session, *, plugin_id: str) -> Sequence[PluginVersion]:
    stmt = select(PluginVersion).where(PluginVersion.plugin_id == plugin_id)
    return session.exec(stmt).all()


def images_in_use(session: Session, *, exclude_plugin: str | None = None) -> set[str]:
    stmt = select(PluginVersion.image)
    if exclude_plugin is not None:
        stmt = stmt.where(PluginVersion.plugin_id != exclude_plugin)
    return set(session.exec(stmt).all())


def add_transition(
    session: Session,
    *,
    plugin_id: str,
    from_state: str,
    to_state: str,
    action: str,
    reason: str | None,
    at: datetime | None = None,
) -> StateTransition:
    row = StateTransition(
        plugin_id=plugin_id,
        from_state=from_state,
        to_state=to_state,
        action=action,
        reason=reason,
        at=at or utcnow(),
    )
    session.add(row)
    return row


def list_transitions(
    session: Session, *, plugin_id: str, limit: int = 100
) -> Sequence[StateTransition]:
    stmt = (
        select(StateTransition)
        .where(StateTransition.plugin_id == plugin_id)
        .order_by(col(StateTransition.id).desc())
        .limit(limit)
    )
    return session.exec(stmt).all()


def count_transitions_since(
    session: Session, *, plugin_id: str, action: str, since: datetime
) -> int:
    stmt = select(func.count()).where(
        StateTransition.plugin_id == plugin_id,
        StateTransition.action == action,
        StateTransition.at >= since,
    )
    return int(session.exec(stmt).one())


def set_grants(session: Session, *, plugin_id: str, permissions: Sequence[str]) -> None:
    session.exec(delete(Grant).where(col(Grant.plugin_id) == plugin_id))
    for perm in sorted(set(permissions)):
        session.add(Grant(plugin_id=plugin_id, permission=perm))


def list_grants(session: Session, *, plugin_id: str) -> list[str]:
    stmt = select(Grant.permission).where(Grant.plugin_id == plugin_id)
    return sorted(session.exec(stmt).all())


def current_container(session: Session, *, plugin_id: str) -> Container | None:
    stmt = (
        select(Container)
        .where(Container.plugin_id == plugin_id)
        .order_by(col(Container.created_at).desc())
    )
    return session.exec(stmt).first()


def list_containers(session: Session, *, plugin_id: str | None = None) -> Sequence[Container]:
    stmt = select(Container)
    if plugin_id is not None:
        stmt = stmt.where(Container.plugin_id == plugin_id)
    return session.exec(stmt).all()


def delete_container(session: Session, *, container_id: str) -> None:
    session.exec(delete(Container).where(col(Container.id) == container_id))


def delete_plugin(session: Session, *, plugin_id: str) -> None:
    """Every row of the plugin, its transition history included (a reinstall starts afresh)."""
    for table in (
        Container,
        Grant,
        PluginVersion,
        StateTransition,
        HostToken,
        StorageItem,
        PluginSecret,
        ScanReport,
    ):
        session.exec(delete(table).where(col(table.plugin_id) == plugin_id))
    session.exec(delete(Plugin).where(col(Plugin.id) == plugin_id))


# -- host API ---------------------------------------------------------------------------------


def add_host_token(session: Session, *, token_hash: str, plugin_id: str, container_id: str) -> None:
    session.add(HostToken(token_hash=token_hash, plugin_id=plugin_id, container_id=container_id))


def get_host_token(session: Session, *, token_hash: str) -> HostToken | None:
    return session.get(HostToken, token_hash)


def revoke_host_tokens(
    session: Session, *, plugin_id: str | None = None, container_id: str | None = None
) -> int:
    query = select(HostToken).where(col(HostToken.revoked_at).is_(None))
    if plugin_id is not None:
        query = query.where(col(HostToken.plugin_id) == plugin_id)
    if container_id is not None:
        query = query.where(col(HostToken.container_id) == container_id)
    now = utcnow()
    rows = session.exec(query).all()
    for row in rows:
        row.revoked_at = now
        session.add(row)
    return len(rows)


def add_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    outcome: str,
    permission: str | None = None,
    detail: str | None = None,
) -> None:
    """A record of its own (an allowed action such as an admin's override): never folded."""
    at = utcnow()
    session.add(
        AuditRecord(
            at=at,
            actor=actor,
            action=action,
            outcome=outcome,
            permission=permission,
            detail=detail,
            last_at=at,
        )
    )


def fold_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    outcome: str,
    permission: str | None = None,
    detail: str | None = None,
    at: datetime,
) -> int:
    """Count a refusal into its actor's, action's and outcome's record of ``at``'s minute.

    One statement, INSERT ... ON CONFLICT DO UPDATE on the fold's unique index, so concurrent
    refusals (threads, or orchestrators sharing a PostgreSQL) add up and none is lost. Returns
    the record's count after this one: 1 when it opened a new record.
    """
    row = {
        "at": at,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "permission": permission,
        "detail": detail,
        "count": 1,
        "minute": at.replace(second=0, microsecond=0),
        "last_at": at,
    }
    fold = _audit_fold_statement(session.get_bind().dialect.name)
    return int(session.execute(fold, row).scalar_one())


@functools.cache
def _audit_fold_statement(dialect: str) -> Executable:
    # Built once: a flood of refusals should cost a statement each, not its construction too.
    table = AuditRecord.__table__  # type: ignore[attr-defined]
    insert = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
    count, last_at, latest = table.c["count"], table.c["last_at"], insert.excluded["last_at"]
    return insert.on_conflict_do_update(
        index_elements=["actor", "action", "outcome", "minute"],
        set_={
            "count": count + 1,
            # Concurrent calls may commit out of order: keep the latest time, not the last.
            "last_at": case((latest > last_at, latest), else_=last_at),
        },
    ).returning(count)


def list_audit(
    session: Session, *, actor: str | None = None, limit: int = 100, before_id: int | None = None
) -> Sequence[AuditRecord]:
    query = select(AuditRecord)
    if actor is not None:
        query = query.where(col(AuditRecord.actor) == actor)
    if before_id is not None:
        query = query.where(col(AuditRecord.id) < before_id)
    return session.exec(query.order_by(col(AuditRecord.id).desc()).limit(limit)).all()


def get_document(session: Session, *, collection: str, key: str) -> Document | None:
    return session.get(Document, (collection, key))


def query_documents(
    session: Session, *, collection: str, after_key: str | None, limit: int
) -> Sequence[Document]:
    query = select(Document).where(col(Document.collection) == collection)
    if after_key is not None:
        query = query.where(col(Document.key) > after_key)
    return session.exec(query.order_by(col(Document.key)).limit(limit)).all()


def get_storage_item(
    session: Session, *, plugin_id: str, kind: str, key: str
) -> StorageItem | None:
    return session.get(StorageItem, (plugin_id, kind, key))


def storage_used(session: Session, *, plugin_id: str) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(StorageItem.size), 0)).where(
            col(StorageItem.plugin_id) == plugin_id
        )
    ).one()
    return int(total)


def get_secret(session: Session, *, plugin_id: str, name: str) -> PluginSecret | None:
    return session.get(PluginSecret, (plugin_id, name))


def list_secrets(session: Session, *, plugin_id: str) -> Sequence[PluginSecret]:
    return session.exec(
        select(PluginSecret)
        .where(col(PluginSecret.plugin_id) == plugin_id)
        .order_by(col(PluginSecret.name))
    ).all()


def add_event(session: Session, *, event: EventRecord) -> None:
    session.add(event)


# -- admin API tokens ---------------------------------------------------------------------------


def list_api_tokens(session: Session) -> Sequence[ApiToken]:
    return session.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()


def get_api_token(session: Session, *, token_id: str) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def get_api_token_by_hash(session: Session, *, token_hash: str) -> ApiToken | None:
    return session.exec(select(ApiToken).where(col(ApiToken.token_hash) == token_hash)).first()


def get_scan_report(session: Session, *, plugin_id: str, version: str) -> ScanReport | None:
    return session.get(ScanReport, (plugin_id, version))


def get_trusted_key(session: Session, *, key_id: str) -> TrustedKey | None:
    return session.get(TrustedKey, key_id)


def list_trusted_keys(session: Session) -> Sequence[TrustedKey]:
    return session.exec(select(TrustedKey).order_by(col(TrustedKey.added_at))).all()


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def list_events(
    session: Session,
    *,
    type_pattern: str | None = None,
    source: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: str | None = None,
    limit: int = 100,
) -> list[EventRecord]:
    """Events in log order (time, then id), filtered; ``after_id`` continues a page."""
    query = select(EventRecord)
    if type_pattern:
        query = query.where(col(EventRecord.type).like(_like(type_pattern), escape="\\"))
    if source:
        query = query.where(col(EventRecord.source) == source)
    if subject:
        query = query.where(col(EventRecord.subject) == subject)
    if since:
        query = query.where(col(EventRecord.time) >= since)
    if until:
        query = query.where(col(EventRecord.time) < until)
    if after_id:
        last = session.get(EventRecord, after_id)
        if last is not None:
            query = query.where(
                (col(EventRecord.time) > last.time)
                | ((col(EventRecord.time) == last.time) & (col(EventRecord.id) > last.id))
            )
    query = query.order_by(col(EventRecord.time), col(EventRecord.id)).limit(limit)
    return list(session.exec(query).all())
