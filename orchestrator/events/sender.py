"""Sends the deliveries :mod:`orchestrator.events.fanout` wrote, to webhooks and to plugins.

Claiming: a sender leases due rows (a ``FOR UPDATE SKIP LOCKED`` pick where the database has
it, then ``UPDATE ... RETURNING``), so with several orchestrators on one database every
delivery is sent by one of them; leases are renewed while a send is in flight, and a replica
that dies leaves leases that expire and are taken over. Results are written back in batches.

Isolation: each target (a webhook, a plugin) has its own cap on claimed and in-flight
deliveries, so a slow or dead receiver holds only its own slots, never the others'.

Policy: webhooks are retried with exponential backoff and full jitter (tenacity's
``wait_random_exponential``, per-subscription attempts, base and cap); 2xx is success, 410
disables the subscription, anything else or a timeout retries, and the last failure is a
dead letter. ``pause_after`` dead letters in a row pause the subscription (``webhook.paused``).
Plugins get their events one at a time in log order, retried for ``plugin_retry_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import tenacity

from orchestrator import __version__
from orchestrator.broker import Broker
from orchestrator.broker.h1pool import H1Pool, ProtocolFailure
from orchestrator.domain.errors import SummitError
from orchestrator.events.bus import Event, EventBus
from orchestrator.events.webhooks import SIGNATURE_HEADER, Transform, sign
from orchestrator.security.secretbox import SecretBox, SecretUnreadable
from orchestrator.security.targets import EgressError, parse_url, resolve_allowed
from orchestrator.store import events as event_store
from orchestrator.store import plugins as plugin_store
from orchestrator.store import webhooks as webhook_store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import Delivery, Webhook, utcnow

__all__ = ["DeliverySender", "backoff_s"]

log = logging.getLogger(__name__)

TARGET_BUFFER = 128  # deliveries of one target claimed and not yet finished, at most
CLAIM_BATCH = 256
RESPONSE_PEEK_BYTES = 64 * 1024
RESOLVE_TTL_S = 60.0
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_USER_AGENT = f"Summit-Webhooks/{__version__}".encode()
_SSL_CONTEXT = ssl.create_default_context()


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Wait before attempt ``attempt + 1``: exponential with full jitter, capped."""
    wait = tenacity.wait_random_exponential(multiplier=base_s, max=cap_s)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return float(wait(state))


@dataclass
class _Claimed:
    delivery: Delivery
    event: Event
    hook: Webhook | None


@dataclass
class _Result:
    delivery_id: int
    attempt: int
    status: str  # delivered | pending | dead | cancelled
    next_at: datetime | None
    status_code: int | None
    error: str | None
    latency_ms: float
    webhook_id: str | None = None
    disable: bool = False
    record_attempt: bool = True


@dataclass
class _Target:
    inflight: set[int] = field(default_factory=set)
    sem: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


class _Endpoint:
    """A webhook's connections: the URL's host resolved (and checked) at most every minute,
    requests sent to the checked address with the name in Host and SNI, kept alive."""

    def __init__(self, url: str, allow_private: Sequence[_Network]) -> None:
        self.url = url
        self.target = parse_url(url)
        self.allow_private = allow_private
        self._pool: H1Pool | None = None
        self._address: str | None = None
        self._resolved_at = 0.0
        default_port = 443 if self.target.scheme == "https" else 80
        host = f"[{self.target.host}]" if ":" in self.target.host else self.target.host
        self.host_header = (
            host if self.target.port == default_port else f"{host}:{self.target.port}"
        ).encode()

    async def _pinned(self) -> H1Pool:
        target = self.target
        fresh = time.monotonic() - self._resolved_at < RESOLVE_TTL_S
        if self._pool is not None and fresh:
            return self._pool
        candidates = await resolve_allowed(
            target, allow_private=self.allow_private, timeout_s=10.0, reaching="webhooks"
        )
        address = str(candidates[0])
        if self._pool is None or address != self._address:
            if self._pool is not None:
                await self._pool.aclose()
            tls = _SSL_CONTEXT if target.scheme == "https" else None
            # TLS checks the certificate against the name, the socket goes to the address.
            sni = target.host if tls is not None else None

            async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection(
                    address, target.port, ssl=tls, server_hostname=sni
                )

            self._pool = H1Pool(connect, host_header=self.host_header, max_connections=64)
            self._address = address
        self._resolved_at = time.monotonic()
        return self._pool

    async def post(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
        pool = await self._pinned()
        response = await pool.request(
            b"POST",
            self.target.target,
            headers=headers,
            content=body,
            max_body=RESPONSE_PEEK_BYTES,
            truncate=True,
        )
        return response.status

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class DeliverySender:
    def __init__(
        self,
        engine: Engine,
        *,
        bus: EventBus,
        broker: Broker | None,
        secrets: SecretBox,
        owner: str,
        allow_private: Sequence[str] = (),
        webhook_concurrency: int = 16,
        max_body_bytes: int = 1024 * 1024,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        plugin_retry_s: float = 60.0,
        plugin_timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.broker = broker
        self.secrets = secrets
        self.owner = owner
        self.allow_private: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow_private
        )
        self.webhook_concurrency = webhook_concurrency
        self.max_body_bytes = max_body_bytes
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.plugin_retry_s = plugin_retry_s
        self.plugin_timeout_s = plugin_timeout_s
        self._targets: dict[str, _Target] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._transforms: dict[str, tuple[datetime, Transform, str]] = {}
        self._results: list[_Result] = []
        self._wake: asyncio.Event | None = None
        self._flushed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False
        self.sent = 0

    # -- running ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        await asyncio.to_thread(self._release_own_leases)
        self.bus.on_committed(lambda _events: self.wake())
        self._tasks = [
            self._loop.create_task(self._claim_loop(), name="deliveries-claim"),
            self._loop.create_task(self._flush_loop(), name="deliveries-flush"),
            self._loop.create_task(self._renew_loop(), name="deliveries-renew"),
        ]

    def wake(self) -> None:
        """Look for due deliveries now (thread-safe)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._sends):
            task.cancel()
        for task in self._tasks:
            task.cancel()
        for task in [*self._sends, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Results already in hand are written; the rest are released for the next start.
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._write, self._take_results())
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._release_own_leases)
        for endpoint in self._endpoints.values():
            await endpoint.aclose()

    # -- claiming ---------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # lands as the event is set, and this loop then ran on after shutdown for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                inflight = [i for t in self._targets.values() for i in t.inflight]
                claimed = await asyncio.to_thread(self._claim, self._saturated(), inflight)
            except Exception:
                log.exception("claiming deliveries failed")
                await asyncio.sleep(1.0)
                continue
            for item in claimed:
                self._start_send(item)
            if len(claimed) >= CLAIM_BATCH:
                self._wake.set()

    def _saturated(self) -> list[str]:
        full = []
        for name, target in self._targets.items():
            limit = 1 if name.startswith("plugin:") else TARGET_BUFFER
            if len(target.inflight) >= limit:
                full.append(name)
        return full

    def _claim(self, saturated: list[str], inflight: list[int]) -> list[_Claimed]:
        """Lease due deliveries. What this sender has in flight is never taken again, even
        if its lease ran out (renewals failing under a locked database, say)."""
        now = utcnow()
        with session_scope(self.engine) as session:
            ids = event_store.lease_due_deliveries(
                session,
                owner=self.owner,
                now=now,
                lease_until=now + timedelta(seconds=self.lease_s),
                skip_targets=saturated,
                skip_ids=inflight,
                limit=CLAIM_BATCH,
            )
            if not ids:
                return []
            rows = event_store.list_deliveries_with_events(session, ids=ids)
            hooks = webhook_store.get_webhooks(
                session, ids=(d.webhook_id for d, _ in rows if d.webhook_id)
            )
        found = {d.id for d, _ in rows}
        missing = [i for i in ids if i not in found]
        if missing:  # the event row is gone (pruned): nothing left to send
            with session_scope(self.engine) as session:
                event_store.cancel_deliveries(
                    session, ids=missing, reason="event no longer in the log", at=now
                )
        return [
            _Claimed(d, Event.of(e), hooks.get(d.webhook_id) if d.webhook_id else None)
            for d, e in rows
        ]

    def _release_own_leases(self) -> None:
        with session_scope(self.engine) as session:
            event_store.release_leases(session, owner=self.owner)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            ids = [i for t in self._targets.values() for i in t.inflight]
            if not ids:
                continue
            try:
                await asyncio.to_thread(self._renew, ids)
            except Exception:
                log.exception("renewing delivery leases failed")

    def _renew(self, ids: list[int]) -> None:
        until = utcnow() + timedelta(seconds=self.lease_s)
        with session_scope(self.engine) as session:
            event_store.renew_leases(session, ids=ids, owner=self.owner, until=until)

    # -- sending ----------------------------------------------------------------------------------

    def _target(self, name: str) -> _Target:
        target = self._targets.get(name)
        if target is None:
            limit = 1 if name.startswith("plugin:") else self.webhook_concurrency
            target = self._targets[name] = _Target(sem=asyncio.Semaphore(limit))
        return target

    def _start_send(self, item: _Claimed) -> None:
        assert item.delivery.id is not None
        target = self._target(item.delivery.target)
        target.inflight.add(item.delivery.id)
        task = asyncio.get_running_loop().create_task(self._send(target, item))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, target: _Target, item: _Claimed) -> None:
        delivery = item.delivery
        assert delivery.id is not None
        try:
            async with target.sem:
                if item.hook is not None:
                    result = await self._send_webhook(item, item.hook)
                elif delivery.webhook_id is not None:  # its subscription was just removed
                    result = _Result(
                        delivery.id,
                        delivery.attempts,
                        "cancelled",
                        None,
                        None,
                        "the subscription was removed",
                        0.0,
                        record_attempt=False,
                    )
                else:
                    result = await self._send_plugin(item)
        except asyncio.CancelledError:
            target.inflight.discard(delivery.id)
            raise
        except Exception as exc:  # a bug here must not lose the delivery: retry it later
            log.exception("delivery %s failed unexpectedly", delivery.id)
            result = _Result(
                delivery.id,
                delivery.attempts + 1,
                "pending",
                utcnow() + timedelta(seconds=5),
                None,
                repr(exc),
                0.0,
            )
        self._results.append(result)
        target.inflight.discard(delivery.id)
        if self._flushed is not None:
            self._flushed.set()

    def _transform(self, hook: Webhook) -> tuple[Transform, str]:
        cached = self._transforms.get(hook.id)
        if cached is None or cached[0] != hook.updated_at:
            transform = Transform.parse(hook.transform)
            secret = self.secrets.open(hook.secret)
            cached = self._transforms[hook.id] = (hook.updated_at, transform, secret)
        return cached[1], cached[2]

    def _endpoint(self, hook: Webhook) -> _Endpoint:
        endpoint = self._endpoints.get(hook.id)
        if endpoint is None or endpoint.url != hook.url:
            if endpoint is not None:
                asyncio.get_running_loop().create_task(endpoint.aclose())
            endpoint = self._endpoints[hook.id] = _Endpoint(hook.url, self.allow_private)
        return endpoint

    async def _send_webhook(self, item: _Claimed, hook: Webhook) -> _Result:
        delivery = item.delivery
        assert delivery.id is not None
        attempt = delivery.attempts + 1
        try:
            transform, secret = self._transform(hook)
        except SecretUnreadable:
            # A replica with another SUMMIT_SECRETS_KEY: not the delivery's fault. Left for a
            # replica that can sign it; the attempt is not counted against the delivery.
            log.error(
                "cannot decrypt the secret of webhook %s: replicas must share SUMMIT_SECRETS_KEY",
                hook.id,
            )
            return _Result(
                delivery.id,
                delivery.attempts,
                "pending",
                utcnow() + timedelta(seconds=5),
                None,
                "this orchestrator cannot decrypt the webhook's secret (SUMMIT_SECRETS_KEY "
                "differs between replicas)",
                0.0,
                record_attempt=False,
            )
        try:
            shaped = transform.apply(item.event.to_json())
        except Exception as exc:
            return _Result(
                delivery.id, attempt, "dead", None, None, f"transform failed: {exc}", 0.0, hook.id
            )
        body = json.dumps(shaped, separators=(",", ":"), default=str).encode()
        if len(body) > self.max_body_bytes:
            return _Result(
                delivery.id,
                attempt,
                "dead",
                None,
                None,
                f"body of {len(body)} bytes is over the cap of {self.max_body_bytes}",
                0.0,
                hook.id,
            )
        headers = [
            (b"content-type", b"application/json"),
            (b"user-agent", _USER_AGENT),
            (b"summit-webhook-id", hook.id.encode()),
            (b"summit-delivery-id", str(delivery.id).encode()),
            (b"summit-event-id", item.event.id.encode()),
            (b"summit-event-type", item.event.type.encode()),
            (b"summit-attempt", str(attempt).encode()),
            (SIGNATURE_HEADER.lower().encode(), sign(secret, body).encode()),
        ]
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(hook.timeout_s):
                code = await self._endpoint(hook).post(body, headers)
        except TimeoutError:
            error = f"no answer within {hook.timeout_s:g} s"
        except EgressError as exc:
            error = exc.message
        except (ProtocolFailure, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        latency = (time.perf_counter() - started) * 1000
        if code is not None and 200 <= code < 300:
            self.sent += 1
            return _Result(delivery.id, attempt, "delivered", None, code, None, latency, hook.id)
        if code == 410:
            return _Result(
                delivery.id,
                attempt,
                "dead",
                None,
                code,
                "receiver answered 410 Gone: subscription disabled",
                latency,
                hook.id,
                disable=True,
            )
        if code is not None:
            error = f"receiver answered {code}"
        if attempt >= hook.max_attempts:
            return _Result(delivery.id, attempt, "dead", None, code, error, latency, hook.id)
        wait = backoff_s(attempt, hook.backoff_base_s, hook.backoff_cap_s)
        return _Result(
            delivery.id,
            attempt,
            "pending",
            utcnow() + timedelta(seconds=wait),
            code,
            error,
            latency,
            hook.id,
        )

    async def _send_plugin(self, item: _Claimed) -> _Result:
        delivery = item.delivery
        assert delivery.id is not None and delivery.plugin_id is not None
        attempt = delivery.attempts + 1
        started = time.perf_counter()
        route = self.broker.route(delivery.plugin_id) if self.broker is not None else None
        error: str
        if route is not None:
            try:
                await self.broker.deliver_event(  # type: ignore[union-attr]
                    route, item.event.to_json(), timeout_s=self.plugin_timeout_s
                )
                self.sent += 1
                latency = (time.perf_counter() - started) * 1000
                return _Result(delivery.id, attempt, "delivered", None, 200, None, latency)
            except SummitError as exc:
                error = exc.message
        else:
            error = "plugin is not ACTIVE"
            if not await asyncio.to_thread(self._plugin_exists, delivery.plugin_id):
                return _Result(
                    delivery.id, attempt, "cancelled", None, None, "plugin was uninstalled", 0.0
                )
        latency = (time.perf_counter() - started) * 1000
        created = delivery.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=utcnow().tzinfo)
        age = (utcnow() - created).total_seconds()
        if age >= self.plugin_retry_s:
            log.warning(
                "event %s not delivered to %s: %s", item.event.id, delivery.plugin_id, error
            )
            return _Result(delivery.id, attempt, "dead", None, None, error, latency)
        wait = min(0.2 * 2 ** min(attempt - 1, 10), 5.0)
        return _Result(
            delivery.id,
            attempt,
            "pending",
            utcnow() + timedelta(seconds=wait),
            None,
            error,
            latency,
        )

    def _plugin_exists(self, plugin_id: str) -> bool:
        with session_scope(self.engine) as session:
            return plugin_store.plugin_exists(session, plugin_id=plugin_id)

    # -- writing results --------------------------------------------------------------------------

    def _take_results(self) -> list[_Result]:
        results, self._results = self._results, []
        return results

    async def _flush_loop(self) -> None:
        assert self._flushed is not None
        while True:
            await self._flushed.wait()
            self._flushed.clear()
            await asyncio.sleep(0.02)  # let a burst of results gather into one transaction
            results = self._take_results()
            if not results:
                continue
            try:
                announcements = await asyncio.to_thread(self._write, results)
            except Exception:
                log.exception("writing %d delivery results failed; retrying", len(results))
                self._results[:0] = results
                await asyncio.sleep(1.0)
                self._flushed.set()
                continue
            for event_type, subject, payload in announcements:
                with contextlib.suppress(Exception):
                    await self.bus.emit(
                        event_type, source="summit", subject=subject, payload=payload
                    )
            self.wake()  # slots were freed

    def _write(self, results: list[_Result]) -> list[tuple[str, str, dict[str, Any]]]:
        if not results:
            return []
        now = utcnow()
        announcements: list[tuple[str, str, dict[str, Any]]] = []
        with session_scope(self.engine) as session:
            # A subscription removed while its deliveries were in flight took them along:
            # their results have nothing left to update, and no history to add to.
            ids = [r.delivery_id for r in results]
            alive = event_store.existing_delivery_ids(session, ids=ids)
            results = [r for r in results if r.delivery_id in alive]
            if not results:
                return []
            event_store.record_delivery_results(
                session,
                results=[
                    {
                        "id": r.delivery_id,
                        "status": r.status,
                        "attempts": r.attempt,
                        "next_at": r.next_at or now,
                        "last_status": r.status_code,
                        "last_error": r.error,
                        "latency_ms": r.latency_ms,
                        "finished_at": None if r.status == "pending" else now,
                    }
                    for r in results
                ],
            )
            attempts = [
                {
                    "delivery_id": r.delivery_id,
                    "attempt": r.attempt,
                    "at": now,
                    "status_code": r.status_code,
                    "error": r.error,
                    "latency_ms": r.latency_ms,
                }
                for r in results
                if r.record_attempt
            ]
            event_store.add_delivery_attempts(session, attempts=attempts)
            by_hook: dict[str, list[_Result]] = defaultdict(list)
            for r in results:
                if r.webhook_id is not None:
                    by_hook[r.webhook_id].append(r)
            for hook_id, hook_results in by_hook.items():
                hook = webhook_store.get_webhook(session, webhook_id=hook_id)
                if hook is None:
                    continue
                for r in hook_results:
                    if r.status == "delivered":
                        hook.consecutive_dead = 0
                    elif r.status == "dead":
                        hook.consecutive_dead += 1
                if any(r.disable for r in hook_results) and hook.status != "disabled":
                    hook.status = "disabled"
                    hook.status_reason = "the receiver answered 410 Gone"
                    hook.updated_at = now
                    announcements.append(
                        (
                            "webhook.disabled",
                            hook.id,
                            {"webhook_id": hook.id, "reason": hook.status_reason},
                        )
                    )
                elif hook.status == "active" and hook.consecutive_dead >= hook.pause_after > 0:
                    hook.status = "paused"
                    hook.status_reason = (
                        f"{hook.consecutive_dead} deliveries in a row failed every attempt"
                    )
                    hook.updated_at = now
                    announcements.append(
                        (
                            "webhook.paused",
                            hook.id,
                            {"webhook_id": hook.id, "reason": hook.status_reason},
                        )
                    )
                webhook_store.save_webhook(session, webhook=hook)
        return announcements


def default_owner(state_dir: str) -> str:
    """A name for this orchestrator process's leases that a restart of it reuses (so it can
    take its own leases back at once) and that another orchestrator does not share."""
    where = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:12]
    return f"{socket.gethostname()}:{where}"
