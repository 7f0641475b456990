"""The host API's use cases: what a plugin may ask of the orchestrator, and the checks on it.

Every call is authenticated by the plugin's own token (bound to the plugin it was issued to)
and authorized against the permissions granted at install; every refusal is counted in the
audit log (repeats within a minute in one record). Operations and their permissions are the
SDK's ``HOST_API`` table, so the client the plugin uses and this service cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from summit_sdk.host import HOST_API

from orchestrator.broker import Broker
from orchestrator.domain.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    SummitError,
    TooLarge,
    Unauthorized,
)
from orchestrator.domain.manifest import Manifest
from orchestrator.events.bus import EventBus
from orchestrator.security.egress import EgressError, EgressPolicy, EgressProxy, EgressRefused
from orchestrator.security.secretbox import SecretBox, SecretUnreadable
from orchestrator.security.tokens import HostTokens
from orchestrator.store import audit, documents, plugins, storage
from orchestrator.store import secrets as secret_store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import utcnow

__all__ = ["Caller", "HostService"]

MIB = 1024 * 1024
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_KEY = 512
MAX_QUERY_LIMIT = 1000


@dataclass(frozen=True)
class Caller:
    """An authenticated plugin: who it is, what it was granted and what it declared."""

    plugin_id: str
    permissions: frozenset[str]
    manifest: Manifest
    storage_bytes: int
    network_mbps: float = 0


class EgressDenied(SummitError):
    """The egress proxy refused or could not make a request; status and code are its own."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message, code=code)
        self.status_code = status


class HostService:
    def __init__(
        self,
        *,
        engine: Engine,
        tokens: HostTokens,
        secrets: SecretBox,
        broker: Broker,
        egress: EgressProxy,
        events: EventBus,
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.secrets = secrets
        self.broker = broker
        self.egress_proxy = egress
        self.events = events

    # -- authentication and authorization -----------------------------------------------------

    def authorize(self, plugin_id: str, token: str | None, operation: str) -> Caller:
        """The caller, if its token is valid for ``plugin_id`` and it holds the permission."""
        permission = HOST_API[operation][2]
        if not self.tokens.verify(plugin_id=plugin_id, token=token):
            self.audit(plugin_id, operation, "unauthorized", permission, "missing or bad token")
            raise Unauthorized("missing, revoked or foreign host token")
        with session_scope(self.engine) as session:
            plugin = plugins.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise Unauthorized("the plugin of this token is gone")
            granted = frozenset(plugins.list_grants(session, plugin_id=plugin_id))
            version = plugins.get_version(session, plugin_id=plugin_id, version=plugin.version)
            assert version is not None
            manifest = Manifest.model_validate(version.manifest)
            storage_mb = int(plugin.resources.get("storage_mb", manifest.resources.storage_mb))
            mbps = float(plugin.resources.get("network_mbps", manifest.resources.network_mbps))
        if permission not in granted:
            self.audit(plugin_id, operation, "permission_denied", permission)
            raise Forbidden(
                f"{operation} needs the permission {permission!r}, which {plugin_id} was not "
                "granted",
                details={"permission": permission},
            )
        return Caller(plugin_id, granted, manifest, storage_mb * MIB, mbps)

    def audit(
        self,
        plugin_id: str,
        operation: str,
        outcome: str,
        permission: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record a refusal. Repeats within a minute only count up their record (a hostile
        plugin's flood is one row and one statement per call), and only the first of them is
        announced."""
        with session_scope(self.engine) as session:
            count = audit.fold_audit(
                session,
                actor=f"plugin:{plugin_id}",
                action=operation,
                outcome=outcome,
                permission=permission,
                detail=detail,
                at=utcnow(),
            )
            if count > 1:
                return
            # Every audited outcome is a refusal: operators and webhooks hear of it too, in
            # the same transaction as the audit record.
            kind = "quota.exceeded" if "quota" in outcome else "security.refused"
            self.events.record(
                session,
                kind,
                source="orchestrator",
                subject=plugin_id,
                payload={
                    "plugin_id": plugin_id,
                    "operation": operation,
                    "outcome": outcome,
                    "permission": permission,
                    "detail": detail,
                },
            )

    def refuse(self, caller: Caller, operation: str, error: Forbidden) -> Forbidden:
        """Record a refusal decided after authorization (e.g. an undeclared event type)."""
        self.audit(caller.plugin_id, operation, error.code, HOST_API[operation][2], error.message)
        return error

    def audit_log(
        self, *, plugin_id: str | None, limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        actor = f"plugin:{plugin_id}" if plugin_id else None
        with session_scope(self.engine) as session:
            return [
                row.model_dump(mode="json")
                for row in audit.list_audit(session, actor=actor, limit=limit, before_id=before_id)
            ]

    # -- data -----------------------------------------------------------------------------------

    def data_get(self, caller: Caller, collection: str, key: str) -> Any:
        _check_name(collection, "collection")
        with session_scope(self.engine) as session:
            row = documents.get_document(session, collection=collection, key=_key(key))
            if row is None:
                raise NotFound(f"no record {key!r} in {collection!r}")
            return row.value

    def data_put(self, caller: Caller, collection: str, key: str, value: Any) -> None:
        _check_name(collection, "collection")
        with session_scope(self.engine) as session:
            documents.put_document(
                session,
                collection=collection,
                key=_key(key),
                value=value,
                updated_by=caller.plugin_id,
            )

    def data_query(
        self,
        caller: Caller,
        collection: str,
        where: dict[str, Any],
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """Records whose fields equal ``where``'s, in key order; ``cursor`` is the last key."""
        _check_name(collection, "collection")
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        records: list[Any] = []
        last = cursor
        more = False
        batch = limit * 2
        with session_scope(self.engine) as session:
            exhausted = False
            while len(records) < limit and not exhausted:
                page = documents.query_documents(
                    session, collection=collection, after_key=last, limit=batch
                )
                exhausted = len(page) < batch
                for row in page:
                    last = row.key
                    value = row.value
                    if isinstance(value, dict) and all(value.get(k) == v for k, v in where.items()):
                        records.append(value)
                        if len(records) == limit:
                            break
            if len(records) == limit and last is not None:
                more = bool(
                    documents.query_documents(
                        session, collection=collection, after_key=last, limit=1
                    )
                )
        return {"records": records, "next_cursor": last if more else None}

    # -- storage --------------------------------------------------------------------------------

    def storage_get(self, caller: Caller, kind: str, key: str) -> Any:
        with session_scope(self.engine) as session:
            row = storage.get_storage_item(
                session, plugin_id=caller.plugin_id, kind=kind, key=_key(key)
            )
            if row is None:
                raise NotFound(f"no {kind} {key!r}")
            return row.blob if kind == "blob" else row.value

    def storage_put(self, caller: Caller, kind: str, key: str, value: Any) -> None:
        if kind == "blob":
            size = len(value)
        else:
            size = len(json.dumps(value, separators=(",", ":")).encode())
        with session_scope(self.engine) as session:
            # Serialised per plugin so two concurrent writes cannot both squeeze under the quota.
            plugins.get_plugin(session, plugin_id=caller.plugin_id, for_update=True)
            row = storage.get_storage_item(
                session, plugin_id=caller.plugin_id, kind=kind, key=_key(key)
            )
            used = storage.storage_used(session, plugin_id=caller.plugin_id)
            after = used - (row.size if row is not None else 0) + size
            if after > caller.storage_bytes:
                self.audit(caller.plugin_id, f"storage.put_{kind}", "storage_quota_exceeded")
                raise TooLarge(
                    f"{caller.plugin_id} would use {after} bytes of storage, over its quota of "
                    f"{caller.storage_bytes} (storage_mb)",
                    code="storage_quota_exceeded",
                    details={"used": used, "quota": caller.storage_bytes, "write": size},
                )
            storage.put_storage_item(
                session,
                plugin_id=caller.plugin_id,
                kind=kind,
                key=key,
                value=None if kind == "blob" else value,
                blob=bytes(value) if kind == "blob" else None,
                size=size,
                existing=row,
            )

    def storage_delete(self, caller: Caller, kind: str, key: str) -> None:
        with session_scope(self.engine) as session:
            storage.delete_storage_item(
                session, plugin_id=caller.plugin_id, kind=kind, key=_key(key)
            )

    # -- secrets --------------------------------------------------------------------------------

    def secret_get(self, caller: Caller, name: str) -> str:
        with session_scope(self.engine) as session:
            row = secret_store.get_secret(session, plugin_id=caller.plugin_id, name=name)
            if row is None:
                raise NotFound(f"no secret {name!r} is set for {caller.plugin_id}")
            ciphertext = row.ciphertext
        try:
            return self.secrets.open(ciphertext)
        except SecretUnreadable as exc:
            raise NotFound(f"secret {name!r}: {exc}; set it again") from None

    def set_secret(self, plugin_id: str, name: str, value: str) -> None:
        """Operator side (admin API): store or replace a secret, encrypted."""
        _check_name(name, "secret name")
        with session_scope(self.engine) as session:
            if not plugins.plugin_exists(session, plugin_id=plugin_id):
                raise NotFound(f"plugin {plugin_id} is not installed")
            secret_store.put_secret(
                session, plugin_id=plugin_id, name=name, ciphertext=self.secrets.seal(value)
            )

    def list_secrets(self, plugin_id: str) -> list[dict[str, Any]]:
        """Names and times only: the admin API never returns a secret's value."""
        with session_scope(self.engine) as session:
            if not plugins.plugin_exists(session, plugin_id=plugin_id):
                raise NotFound(f"plugin {plugin_id} is not installed")
            return [
                {"name": r.name, "updated_at": r.updated_at}
                for r in secret_store.list_secrets(session, plugin_id=plugin_id)
            ]

    def delete_secret(self, plugin_id: str, name: str) -> None:
        with session_scope(self.engine) as session:
            if not secret_store.delete_secret(session, plugin_id=plugin_id, name=name):
                raise NotFound(f"no secret {name!r} is set for {plugin_id}")

    # -- events ---------------------------------------------------------------------------------

    def publish(self, caller: Caller, event_type: str, payload: Any, subject: str | None) -> str:
        declared = caller.manifest.events.publish
        if event_type not in declared:
            raise self.refuse(
                caller,
                "events.publish",
                Forbidden(
                    f"{caller.plugin_id} did not declare the event type {event_type!r} under "
                    "events.publish",
                    code="event_type_not_declared",
                    details={"declared": list(declared)},
                ),
            )
        event = self.events.emit_sync(
            event_type, source=f"plugin:{caller.plugin_id}", subject=subject, payload=payload
        )
        return event.id

    # -- egress ---------------------------------------------------------------------------------

    async def egress(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        """An HTTP request made for the plugin, within its ``network.allowed_hosts``."""
        method, url = body.get("method"), body.get("url")
        headers = body.get("headers") or {}
        if not isinstance(method, str) or not isinstance(url, str) or not isinstance(headers, dict):
            raise InvalidInput("the body needs string 'method' and 'url' and object 'headers'")
        try:
            payload = base64.b64decode(body.get("body") or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("'body' must be base64") from None
        policy = EgressPolicy(
            allowed_hosts=tuple(caller.manifest.network.allowed_hosts),
            mbps=float(caller.network_mbps),
        )
        try:
            answer = await self.egress_proxy.request(
                caller.plugin_id,
                policy,
                method=method,
                url=url,
                headers={str(k): str(v) for k, v in headers.items()},
                body=payload,
            )
        except EgressRefused as exc:
            await run_in_threadpool(
                self.audit,
                caller.plugin_id,
                "http.request",
                exc.code,
                "network:access",
                f"{method} {url}: {exc.message}",
            )
            raise EgressDenied(exc.message, code=exc.code, status=exc.status) from None
        except EgressError as exc:
            raise EgressDenied(exc.message, code=exc.code, status=exc.status) from None
        merged: dict[str, str] = {}
        for key, value in answer.headers:
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return {
            "status": answer.status,
            "headers": merged,
            "body": base64.b64encode(answer.body).decode(),
        }

    # -- invoke ---------------------------------------------------------------------------------

    async def invoke(self, caller: Caller, target: str, point: str, name: str, payload: Any) -> Any:
        declared = {d.id for d in caller.manifest.dependencies}
        if target not in declared:
            raise self.refuse(
                caller,
                "invoke",
                Forbidden(
                    f"{caller.plugin_id} may only invoke its declared dependencies; "
                    f"{target} is not one",
                    code="unknown_dependency",
                    details={"dependencies": sorted(declared)},
                ),
            )
        route = self.broker.route(target)
        if route is None:
            raise NotFound(f"dependency {target} is not ACTIVE", code="dependency_not_active")
        ext = next((e for e in route.extensions if e.point.value == point and e.name == name), None)
        if ext is None:
            raise NotFound(f"{target} has no extension {point}/{name}", code="unknown_extension")
        errors = self.broker.schema_errors(route, ext, payload, "input")
        if errors:
            raise InvalidInput(
                f"the input does not match {target}'s input_schema",
                code="invalid_input",
                details=errors,
            )
        return await self.broker.call(route, ext, payload)


def _check_name(value: str, what: str) -> None:
    if not NAME.fullmatch(value):
        raise InvalidInput(f"invalid {what} {value!r}: letters, digits and ._:- (at most 128)")


def _key(key: str) -> str:
    if not key or len(key) > MAX_KEY:
        raise InvalidInput(f"a key has 1 to {MAX_KEY} characters")
    return key
