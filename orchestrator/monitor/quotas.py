"""Quota policies: rules over a plugin's recent samples, and what happens when one is broken.

Rules (each optional; ``None`` turns it off):

- ``memory``: the container's memory at or above ``share`` of its limit for ``samples``
  samples in a row;
- ``cpu_throttled``: the CFS quota throttled the container in at least ``share`` of its
  scheduling periods over the last ``samples`` samples (it wants more CPU than it may have);
- ``storage``: host API storage at or above ``share`` of its ``storage_mb`` quota;
- ``egress``: more than ``daily_bytes`` through the egress proxy since midnight UTC.

Each rule names an action: ``warn`` (event ``quota.warning``), ``throttle`` (its rate limit
multiplied by ``throttle_factor``: event ``quota.throttled``), ``restart`` (a reload: a fresh
container; ``quota.restarted``) or ``disable`` (``quota.disabled``). Every action is an event
and an audit record (actor ``monitor``), written in one transaction; an action that fails
is recorded too, with outcome ``failed``. A rule that has acted on a plugin waits
``cooldown_s`` before it acts on it again.

The operator's default policy applies to every plugin; a plugin's own
(``resources.quota_policy``) overrides it rule by rule: ``{"memory": {"action": "restart"}}``
keeps the default share and samples, ``{"egress": null}`` turns that rule off.

The enforcer acts through protocols (``PluginControl``: the lifecycle service satisfies it;
``QuotaJournal``), so tests pass fakes. Actions run on a worker thread of their own: a
restart starts a container, which must not hold up the next round of sampling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.domain.errors import InvalidInput
from orchestrator.monitor.sampler import RECENT_SAMPLES, UsageSample
from orchestrator.store import audit
from orchestrator.store.db import Engine, session_scope

__all__ = [
    "Action",
    "Breach",
    "EventJournal",
    "PluginControl",
    "QuotaEnforcer",
    "QuotaJournal",
    "QuotaPolicy",
    "evaluate",
    "policy_for",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DAY_S = 86400
ACTOR = "monitor"


class Action(StrEnum):
    WARN = "warn"
    THROTTLE = "throttle"
    RESTART = "restart"
    DISABLE = "disable"


EVENT_OF = {
    Action.WARN: "quota.warning",
    Action.THROTTLE: "quota.throttled",
    Action.RESTART: "quota.restarted",
    Action.DISABLE: "quota.disabled",
}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action = Action.WARN


class MemoryRule(_Rule):
    share: float = Field(0.9, gt=0, le=1, description="Share of the memory limit")
    samples: int = Field(6, ge=1, le=RECENT_SAMPLES, description="Samples in a row above it")


class CpuThrottledRule(_Rule):
    share: float = Field(0.8, gt=0, le=1, description="Share of CPU periods throttled")
    samples: int = Field(6, ge=1, le=RECENT_SAMPLES, description="Samples it is measured over")


class StorageRule(_Rule):
    share: float = Field(0.95, gt=0, le=1, description="Share of the storage_mb quota")


class EgressRule(_Rule):
    daily_bytes: int = Field(ge=1, description="Bytes through the egress proxy per UTC day")


RULES = ("memory", "cpu_throttled", "storage", "egress")


class QuotaPolicy(BaseModel):
    """What is watched, and what is done when a plugin crosses it."""

    model_config = ConfigDict(extra="forbid")

    memory: MemoryRule | None = Field(default_factory=MemoryRule)
    cpu_throttled: CpuThrottledRule | None = Field(default_factory=CpuThrottledRule)
    storage: StorageRule | None = Field(default_factory=StorageRule)
    egress: EgressRule | None = None
    throttle_factor: float = Field(
        0.5, gt=0, lt=1, description="A throttle multiplies the rate limit by this"
    )
    throttle_unlimited_to: int = Field(
        60, ge=1, description="The rate limit a throttle sets where there was none"
    )
    cooldown_s: float = Field(600.0, ge=0, description="Time before a rule acts again")

    def override(self, changes: Mapping[str, Any] | None) -> QuotaPolicy:
        """This policy with ``changes`` applied rule by rule (InvalidInput, listing every
        problem with its path, when they are not valid)."""
        if not changes:
            return self
        if not isinstance(changes, Mapping):
            raise InvalidInput("quota_policy must be an object", code="invalid_quota_policy")
        merged = self.model_dump()
        for key, value in changes.items():
            if key in RULES and isinstance(value, Mapping) and merged.get(key) is not None:
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        try:
            return QuotaPolicy.model_validate(merged)
        except ValidationError as exc:
            raise InvalidInput(
                "quota_policy is not valid",
                code="invalid_quota_policy",
                details=[
                    {
                        "path": "quota_policy." + ".".join(str(p) for p in e["loc"]),
                        "message": e["msg"],
                    }
                    for e in exc.errors()
                ],
            ) from None


def policy_for(default: QuotaPolicy, resources: Mapping[str, Any]) -> QuotaPolicy:
    """A plugin's policy: the default with its ``quota_policy`` applied. A stored policy
    that no longer validates is logged and the default applies (writes validate it)."""
    try:
        return default.override(resources.get("quota_policy"))
    except InvalidInput as exc:
        log.warning("ignoring an invalid quota_policy: %s", exc.details)
        return default


@dataclass(frozen=True)
class Breach:
    rule: str
    action: Action
    message: str
    observed: dict[str, Any] = field(default_factory=dict)


def evaluate(
    policy: QuotaPolicy,
    recent: list[UsageSample],
    *,
    default_storage_mb: int,
    egress_today: int | None = None,
) -> list[Breach]:
    """The rules ``recent`` (one plugin's samples, oldest first) breaks. Only samples of the
    newest sample's container count for memory and CPU: a restart starts afresh."""
    if not recent:
        return []
    latest = recent[-1]
    current = [s for s in recent if s.container_id == latest.container_id]
    out: list[Breach] = []
    rule = policy.memory
    if rule is not None and len(current) >= rule.samples:
        window = current[-rule.samples :]
        limit = latest.memory_limit_bytes or int(latest.resources.get("memory_mb") or 0) * MIB
        used = [s.memory_bytes for s in window]
        if limit and all(u is not None and u >= rule.share * limit for u in used):
            out.append(
                Breach(
                    "memory",
                    rule.action,
                    f"memory at or above {rule.share:.0%} of its limit for {rule.samples} samples",
                    {"memory_bytes": latest.memory_bytes, "limit_bytes": limit},
                )
            )
    cpu = policy.cpu_throttled
    if cpu is not None and len(current) >= cpu.samples:
        window = current[-cpu.samples :]
        periods = sum(s.cpu_periods or 0 for s in window)
        throttled = sum(s.cpu_throttled_periods or 0 for s in window)
        if periods and throttled / periods >= cpu.share:
            out.append(
                Breach(
                    "cpu_throttled",
                    cpu.action,
                    f"CPU throttled in {throttled / periods:.0%} of its periods over "
                    f"{cpu.samples} samples",
                    {"periods": periods, "throttled_periods": throttled},
                )
            )
    storage = policy.storage
    if storage is not None and latest.storage_bytes is not None:
        quota = int(latest.resources.get("storage_mb") or default_storage_mb) * MIB
        if quota and latest.storage_bytes >= storage.share * quota:
            out.append(
                Breach(
                    "storage",
                    storage.action,
                    f"storage at or above {storage.share:.0%} of its quota",
                    {"storage_bytes": latest.storage_bytes, "quota_bytes": quota},
                )
            )
    egress = policy.egress
    if egress is not None and egress_today is not None and egress_today > egress.daily_bytes:
        out.append(
            Breach(
                "egress",
                egress.action,
                "egress over its daily budget",
                {"bytes_today": egress_today, "daily_bytes": egress.daily_bytes},
            )
        )
    return out


# -- acting ----------------------------------------------------------------------------------


class PluginControl(Protocol):
    """What the enforcer may do to a plugin (``LifecycleService`` has these)."""

    def set_limits(self, plugin_id: str, limits: dict[str, Any]) -> Any: ...

    def reload(self, plugin_id: str, *, reason: str) -> Any: ...

    def disable(self, plugin_id: str, *, reason: str) -> Any: ...


class QuotaJournal(Protocol):
    def record(
        self, *, plugin_id: str, event_type: str, payload: dict[str, Any], outcome: str
    ) -> None:
        """Write the event and the audit record of one action."""


class _Recorder(Protocol):
    def record(
        self,
        session: Any,
        event_type: str,
        *,
        source: str,
        subject: str | None = None,
        payload: Any = None,
    ) -> None: ...


class EventJournal:
    """The event (through the bus, dispatched once committed) and the audit record of an
    action, in one transaction."""

    def __init__(self, engine: Engine, events: _Recorder) -> None:
        self.engine = engine
        self.events = events

    def record(
        self, *, plugin_id: str, event_type: str, payload: dict[str, Any], outcome: str
    ) -> None:
        with session_scope(self.engine) as session:
            audit.add_audit(
                session,
                actor=ACTOR,
                action=f"quota.{payload.get('rule', 'policy')}",
                outcome=outcome,
                detail=f"{plugin_id}: {payload.get('message', '')}"[:1000],
            )
            self.events.record(
                session, event_type, source=ACTOR, subject=plugin_id, payload=payload
            )


class QuotaEnforcer:
    """Listens to the sampler's rounds, evaluates each plugin's policy and acts.

    ``recent(plugin_id)``: the plugin's recent samples (``Sampler.recent``);
    ``egress_since(plugin_id, since)``: network bytes since a time (``UsageSeries.sum_since``
    with ``network_bytes``), read once a day per plugin with an egress rule; ``run``: how an
    action is run (default: one worker thread of the enforcer's own).
    """

    def __init__(
        self,
        *,
        default: QuotaPolicy,
        control: PluginControl,
        journal: QuotaJournal,
        recent: Callable[[str], list[UsageSample]],
        egress_since: Callable[[str, float], int] = lambda _p, _t: 0,
        default_rate_limit: int = 100,
        default_storage_mb: int = 100,
        run: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        self.default = default
        self.control = control
        self.journal = journal
        self.recent = recent
        self.egress_since = egress_since
        self.default_rate_limit = default_rate_limit
        self.default_storage_mb = default_storage_mb
        self._pool: ThreadPoolExecutor | None = None
        if run is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="summit-quota")
            run = self._pool.submit
        self._run = run
        self._acted: dict[tuple[str, str], float] = {}
        self._busy: set[str] = set()
        self._egress_day: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, samples: list[UsageSample]) -> None:
        for sample in samples:
            try:
                self.check(sample)
            except Exception:
                log.exception("quota policy of %s failed", sample.plugin_id)
        running = {s.plugin_id for s in samples}
        with self._lock:
            for plugin_id in [p for p in self._egress_day if p not in running]:
                del self._egress_day[plugin_id]

    def check(self, sample: UsageSample) -> list[Breach]:
        """Evaluate one plugin after its newest sample; act on what it breaks."""
        policy = policy_for(self.default, sample.resources)
        today = self._egress_today(sample) if policy.egress is not None else None
        breaches = evaluate(
            policy,
            self.recent(sample.plugin_id),
            default_storage_mb=self.default_storage_mb,
            egress_today=today,
        )
        acting = []
        with self._lock:
            if sample.plugin_id in self._busy:
                return []
            for breach in breaches:
                key = (sample.plugin_id, breach.rule)
                last = self._acted.get(key)
                if last is not None and sample.at - last < policy.cooldown_s:
                    continue
                self._acted[key] = sample.at
                acting.append(breach)
            if any(b.action != Action.WARN for b in acting):
                self._busy.add(sample.plugin_id)
        if acting:
            self._run(lambda: self._act(sample, policy, acting))
        return acting

    def _egress_today(self, sample: UsageSample) -> int:
        day = int(sample.at // DAY_S) * DAY_S
        with self._lock:
            known = self._egress_day.get(sample.plugin_id)
        if known is None or known[0] != day:
            # The stored series already holds this sample (the sampler records first).
            total = self.egress_since(sample.plugin_id, float(day))
        else:
            total = known[1] + (sample.network_bytes or 0)
        with self._lock:
            self._egress_day[sample.plugin_id] = (day, total)
        return total

    def _act(self, sample: UsageSample, policy: QuotaPolicy, breaches: list[Breach]) -> None:
        try:
            # The strongest action first: after a disable, nothing else is worth doing.
            order = [Action.DISABLE, Action.RESTART, Action.THROTTLE, Action.WARN]
            done: set[Action] = set()
            for breach in sorted(breaches, key=lambda b: order.index(b.action)):
                if Action.DISABLE in done and breach.action != Action.WARN:
                    continue
                self._perform(sample, policy, breach)
                done.add(breach.action)
        finally:
            with self._lock:
                self._busy.discard(sample.plugin_id)

    def _perform(self, sample: UsageSample, policy: QuotaPolicy, breach: Breach) -> None:
        plugin_id = sample.plugin_id
        reason = f"quota policy: {breach.message}"
        payload: dict[str, Any] = {
            "plugin_id": plugin_id,
            "rule": breach.rule,
            "action": breach.action.value,
            "message": breach.message,
            "observed": breach.observed,
        }
        outcome = breach.action.value
        try:
            if breach.action == Action.THROTTLE:
                current = sample.resources.get("rate_limit_requests")
                current = self.default_rate_limit if current is None else int(current)
                lowered = (
                    max(1, int(current * policy.throttle_factor))
                    if current > 0
                    else policy.throttle_unlimited_to
                )
                self.control.set_limits(plugin_id, {"rate_limit_requests": lowered})
                payload["rate_limit_requests"] = {"from": current, "to": lowered}
            elif breach.action == Action.RESTART:
                self.control.reload(plugin_id, reason=reason)
            elif breach.action == Action.DISABLE:
                self.control.disable(plugin_id, reason=reason)
        except Exception as exc:
            log.warning("quota action %s on %s failed: %s", breach.action, plugin_id, exc)
            payload["error"] = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            outcome = "failed"
        try:
            self.journal.record(
                plugin_id=plugin_id,
                event_type=EVENT_OF[breach.action],
                payload=payload,
                outcome=outcome,
            )
        except Exception:
            log.exception("could not record the quota action on %s", plugin_id)
