"""The store's keyword-only functions under one name, as they were before the store was split
into one module per aggregate (``store/plugins.py``, ``events.py``, ``webhooks.py``,
``tokens.py``, ``trust.py``, ``audit.py``, ``documents.py``, ``storage.py``, ``secrets.py``).
New code imports the aggregate's module; callers own the session and the transaction."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from orchestrator.store.audit import add_audit, fold_audit, list_audit
from orchestrator.store.documents import get_document, query_documents
from orchestrator.store.events import add_event, list_events
from orchestrator.store.models import Container, Plugin, PluginVersion, ScanReport
from orchestrator.store.plugins import (
    add_transition,
    count_transitions_since,
    current_container,
    delete_container,
    delete_plugin,
    get_plugin,
    get_scan_report,
    get_version,
    images_in_use,
    list_containers,
    list_grants,
    list_plugins,
    list_transitions,
    list_versions,
    save_plugin,
    set_grants,
)
from orchestrator.store.secrets import get_secret, list_secrets
from orchestrator.store.storage import get_storage_item, storage_used
from orchestrator.store.tokens import (
    add_host_token,
    get_api_token,
    get_api_token_by_hash,
    get_host_token,
    list_api_tokens,
    revoke_host_tokens,
)
from orchestrator.store.trust import get_trusted_key, list_trusted_keys

__all__ = [
    "add_audit",
    "add_event",
    "add_host_token",
    "add_transition",
    "count_transitions_since",
    "current_container",
    "delete_container",
    "delete_plugin",
    "fold_audit",
    "get_api_token",
    "get_api_token_by_hash",
    "get_document",
    "get_host_token",
    "get_plugin",
    "get_scan_report",
    "get_secret",
    "get_storage_item",
    "get_trusted_key",
    "get_version",
    "images_in_use",
    "list_api_tokens",
    "list_audit",
    "list_containers",
    "list_events",
    "list_grants",
    "list_plugins",
    "list_secrets",
    "list_transitions",
    "list_trusted_keys",
    "list_versions",
    "query_documents",
    "revoke_host_tokens",
    "save_plugin",
    "set_grants",
    "storage_used",
]


# -- plugin versions, containers and kept sources (services/install.py, lifecycle.py) ----------


def add_plugin(
    session: Session,
    *,
    plugin_id: str,
    version: str,
    state: str,
    config: dict[str, Any],
    resources: dict[str, Any],
) -> Plugin:
    plugin = Plugin(id=plugin_id, version=version, state=state, config=config, resources=resources)
    session.add(plugin)
    session.flush()  # the transition that follows refers to it
    return plugin


def add_version(
    session: Session,
    *,
    plugin_id: str,
    version: str,
    manifest: dict[str, Any],
    image: str,
    image_id: str | None,
    source: str,
    source_digest: str | None,
) -> PluginVersion:
    row = PluginVersion(
        plugin_id=plugin_id,
        version=version,
        manifest=manifest,
        image=image,
        image_id=image_id,
        source=source,
        source_digest=source_digest,
    )
    session.add(row)
    return row


def set_version_image(
    session: Session, *, plugin_id: str, version: str, image: str, image_id: str
) -> None:
    """Point a version at an image made again (rebuilt on a new base image)."""
    row = session.get(PluginVersion, (plugin_id, version))
    if row is not None:
        row.image, row.image_id = image, image_id
        session.add(row)


def source_digests_in_use(session: Session, *, exclude_plugin: str | None = None) -> set[str]:
    stmt = select(PluginVersion.source_digest).where(col(PluginVersion.source_digest).is_not(None))
    if exclude_plugin is not None:
        stmt = stmt.where(PluginVersion.plugin_id != exclude_plugin)
    return {digest for digest in session.exec(stmt).all() if digest}


def add_scan_report(
    session: Session, *, plugin_id: str, version: str, report: dict[str, Any]
) -> None:
    session.add(ScanReport(plugin_id=plugin_id, version=version, report=report))


def add_container(
    session: Session,
    *,
    container_id: str,
    plugin_id: str,
    name: str,
    version: str,
    image: str,
    endpoint: str,
    call_token: str | None = None,
) -> None:
    session.add(
        Container(
            id=container_id,
            plugin_id=plugin_id,
            name=name,
            version=version,
            image=image,
            endpoint=endpoint,
            call_token=call_token,
        )
    )


__all__ += [
    "add_container",
    "add_plugin",
    "add_scan_report",
    "add_version",
    "set_version_image",
    "source_digests_in_use",
]
