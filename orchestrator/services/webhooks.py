"""Webhook subscriptions: register, change, pause/resume, remove; their delivery history,
dead letters and replays. Deliveries themselves are written by the fan-out and sent by
:class:`orchestrator.events.sender.DeliverySender`."""

from __future__ import annotations

import ipaddress
import secrets as pysecrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.domain.errors import InvalidInput, NotFound
from orchestrator.events.bus import Event
from orchestrator.events.webhooks import Filter, Transform, check_url, new_secret
from orchestrator.security.secretbox import SecretBox
from orchestrator.store import events as event_store
from orchestrator.store import webhooks as webhook_store
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import Delivery, Webhook, utcnow

__all__ = ["RetryPolicy", "WebhookService"]

STATUSES = ("active", "paused", "disabled")
DELIVERY_STATUSES = ("pending", "delivered", "dead", "replayed", "cancelled")
REPLAY_LIMIT = 100_000


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    timeout_s: float
    pause_after: int

    def check(self) -> RetryPolicy:
        if not 1 <= self.max_attempts <= 50:
            raise InvalidInput("policy.max_attempts: between 1 and 50")
        if not 0.01 <= self.backoff_base_s <= 3600:
            raise InvalidInput("policy.backoff_base_s: between 0.01 and 3600 seconds")
        if not self.backoff_base_s <= self.backoff_cap_s <= 86400:
            raise InvalidInput("policy.backoff_cap_s: at least backoff_base_s, at most 86400")
        if not 0.1 <= self.timeout_s <= 120:
            raise InvalidInput("policy.timeout_s: between 0.1 and 120 seconds")
        if not 0 <= self.pause_after <= 100_000:
            raise InvalidInput("policy.pause_after: between 0 (never) and 100000")
        return self


class WebhookService:
    def __init__(
        self,
        engine: Engine,
        *,
        secrets: SecretBox,
        defaults: RetryPolicy,
        allow_private: Sequence[str] = (),
        on_change: Any = None,
    ) -> None:
        self.engine = engine
        self.secrets = secrets
        self.defaults = defaults
        self.allow_private = tuple(ipaddress.ip_network(c, strict=False) for c in allow_private)
        self.on_change = on_change  # wakes the sender after a resume or a replay

    # -- subscriptions ----------------------------------------------------------------------------

    def create(
        self,
        *,
        url: str,
        types: list[str],
        where: list[dict[str, Any]],
        transform: dict[str, Any] | None,
        description: str | None,
        secret: str | None,
        policy: dict[str, Any],
    ) -> dict[str, Any]:
        Filter.parse(types, where)
        Transform.parse(transform)
        check_url(url, self.allow_private)
        retry = self._policy(self.defaults, policy)
        if secret is not None and len(secret) < 16:
            raise InvalidInput("secret: at least 16 characters (or leave it out to get one)")
        secret = secret or new_secret()
        hook = Webhook(
            id="wh_" + pysecrets.token_hex(8),
            url=url,
            description=description,
            types=types,
            predicates=where,
            transform=transform,
            secret=self.secrets.seal(secret),
            status="active",
            max_attempts=retry.max_attempts,
            backoff_base_s=retry.backoff_base_s,
            backoff_cap_s=retry.backoff_cap_s,
            timeout_s=retry.timeout_s,
            pause_after=retry.pause_after,
        )
        with session_scope(self.engine) as session:
            webhook_store.add_webhook(session, webhook=hook)
        return {**self._view(hook, {}), "secret": secret}

    def list(self) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            hooks = webhook_store.list_webhooks(session)
            counts = event_store.count_webhook_deliveries(session)
        return [self._view(h, counts.get(h.id, {})) for h in hooks]

    def get(self, hook_id: str) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            hook = self._hook(session, hook_id)
            return self._view(hook, self._counts(session, hook_id))

    def update(self, hook_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            hook = self._hook(session, hook_id)
            types = changes.get("types", hook.types)
            where = changes.get("where", hook.predicates)
            Filter.parse(types, where)
            hook.types, hook.predicates = types, where
            if "transform" in changes:
                Transform.parse(changes["transform"])
                hook.transform = changes["transform"]
            if "url" in changes:
                hook.url = check_url(changes["url"], self.allow_private)
            if "description" in changes:
                hook.description = changes["description"]
            if changes.get("policy"):
                current = RetryPolicy(
                    hook.max_attempts,
                    hook.backoff_base_s,
                    hook.backoff_cap_s,
                    hook.timeout_s,
                    hook.pause_after,
                )
                retry = self._policy(current, changes["policy"])
                hook.max_attempts = retry.max_attempts
                hook.backoff_base_s = retry.backoff_base_s
                hook.backoff_cap_s = retry.backoff_cap_s
                hook.timeout_s = retry.timeout_s
                hook.pause_after = retry.pause_after
            status = changes.get("status")
            if status is not None:
                if status not in ("active", "paused"):
                    raise InvalidInput("status: 'active' (resume) or 'paused'")
                if status == "active":
                    hook.consecutive_dead = 0
                    hook.status_reason = None
                else:
                    hook.status_reason = "paused by an operator"
                hook.status = status
            hook.updated_at = utcnow()
            webhook_store.save_webhook(session, webhook=hook)
            view = self._view(hook, self._counts(session, hook_id))
        self._changed()
        return view

    def delete(self, hook_id: str) -> None:
        """The subscription, its deliveries and their history go together."""
        with session_scope(self.engine) as session:
            self._hook(session, hook_id)
            webhook_store.delete_webhook(session, webhook_id=hook_id)

    # -- deliveries -------------------------------------------------------------------------------

    def deliveries(
        self, hook_id: str, *, status: str | None, limit: int, before: int | None
    ) -> dict[str, Any]:
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidInput(f"status: one of {', '.join(DELIVERY_STATUSES)}")
        with session_scope(self.engine) as session:
            self._hook(session, hook_id)
            rows = event_store.list_webhook_deliveries(
                session, webhook_id=hook_id, status=status, before=before, limit=limit
            )
        items = [_delivery_view(d, event_type) for d, event_type in rows]
        return {"deliveries": items, "next": items[-1]["id"] if len(items) == limit else None}

    def delivery(self, hook_id: str, delivery_id: int) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            found = self._delivery(session, hook_id, delivery_id)
            event = event_store.get_event(session, event_id=found.event_id)
            attempts = event_store.list_delivery_attempts(session, delivery_id=delivery_id)
        view = _delivery_view(found, event.type if event else None)
        view["event"] = Event.of(event).to_json() if event else None
        view["attempts_log"] = [
            {
                "attempt": a.attempt,
                "at": a.at,
                "status_code": a.status_code,
                "error": a.error,
                "latency_ms": round(a.latency_ms, 2),
            }
            for a in attempts
        ]
        return view

    def replay(
        self,
        hook_id: str,
        *,
        delivery_id: int | None = None,
        dead_letters: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """Send again: one delivery, every dead letter, or every event of a time range that
        matches the subscription's filter. Each re-send is a new delivery (``replay_of``)."""
        chosen = sum([delivery_id is not None, dead_letters, since is not None])
        if chosen != 1:
            raise InvalidInput(
                "replay: give exactly one of delivery_id, dead_letters: true, or since (and "
                "optionally until)"
            )
        if until is not None and since is None:
            raise InvalidInput("replay: until needs since")
        if since is not None and until is not None and until <= since:
            raise InvalidInput("replay: until must be after since")
        with session_scope(self.engine) as session:
            hook = self._hook(session, hook_id)
            again: list[tuple[str, int | None]] = []
            if delivery_id is not None:
                original = self._delivery(session, hook_id, delivery_id)
                again.append((original.event_id, original.id))
                event_store.mark_replayed(session, webhook_id=hook_id, delivery_id=original.id)
            elif dead_letters:
                dead = event_store.list_dead_letters(session, webhook_id=hook_id)
                again = [(d.event_id, d.id) for d in dead]
                event_store.mark_replayed(session, webhook_id=hook_id)
            else:
                assert since is not None
                flt = Filter.parse(hook.types, hook.predicates)
                events = event_store.list_events_between(
                    session, since=since, until=until, limit=REPLAY_LIMIT + 1
                )
                if len(events) > REPLAY_LIMIT:
                    raise InvalidInput(
                        f"replay: more than {REPLAY_LIMIT} events in that range; narrow it"
                    )
                again = [(e.id, None) for e in events if flt.matches(Event.of(e).to_json())]
            queued = event_store.add_replays(session, webhook_id=hook_id, items=again)
            status = hook.status
        self._changed()
        answer: dict[str, Any] = {"queued": queued, "webhook_status": status}
        if status != "active":
            answer["note"] = f"the subscription is {status}: these are sent once it is resumed"
        return answer

    # -- helpers ----------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    def _policy(base: RetryPolicy, changes: dict[str, Any]) -> RetryPolicy:
        unknown = set(changes) - set(RetryPolicy.__dataclass_fields__)
        if unknown:
            raise InvalidInput(f"policy: unknown keys {sorted(unknown)}")
        merged = {**base.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        return RetryPolicy(**merged).check()

    @staticmethod
    def _hook(session: Session, hook_id: str) -> Webhook:
        hook = webhook_store.get_webhook(session, webhook_id=hook_id)
        if hook is None:
            raise NotFound(f"no webhook {hook_id}", details={"webhook": hook_id})
        return hook

    @staticmethod
    def _delivery(session: Session, hook_id: str, delivery_id: int) -> Delivery:
        found = event_store.get_delivery(session, delivery_id=delivery_id)
        if found is None or found.webhook_id != hook_id:
            raise NotFound(
                f"webhook {hook_id} has no delivery {delivery_id}",
                details={"webhook": hook_id, "delivery": delivery_id},
            )
        return found

    @staticmethod
    def _counts(session: Session, hook_id: str) -> dict[str, int]:
        counts = event_store.count_webhook_deliveries(session, webhook_id=hook_id)
        return counts.get(hook_id, {})

    @staticmethod
    def _view(hook: Webhook, counts: dict[str, int]) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "description": hook.description,
            "types": hook.types,
            "where": hook.predicates,
            "transform": hook.transform,
            "status": hook.status,
            "status_reason": hook.status_reason,
            "policy": {
                "max_attempts": hook.max_attempts,
                "backoff_base_s": hook.backoff_base_s,
                "backoff_cap_s": hook.backoff_cap_s,
                "timeout_s": hook.timeout_s,
                "pause_after": hook.pause_after,
            },
            "consecutive_dead": hook.consecutive_dead,
            "deliveries": {s: counts.get(s, 0) for s in DELIVERY_STATUSES},
            "created_at": hook.created_at,
            "updated_at": hook.updated_at,
        }


def _delivery_view(d: Delivery, event_type: str | None) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "latency_ms": None if d.latency_ms is None else round(d.latency_ms, 2),
        "next_at": d.next_at if d.status == "pending" else None,
        "replay_of": d.replay_of,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
    }
