"""Quota policies: validation, each rule, each action (through fakes), cooldown."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.domain.errors import Conflict, InvalidInput
from orchestrator.monitor.quotas import (
    Action,
    EventJournal,
    QuotaEnforcer,
    QuotaPolicy,
    evaluate,
    policy_for,
)
from orchestrator.monitor.sampler import UsageSample

MIB = 1024 * 1024


def s(at: float, *, container: str = "c1", **fields: Any) -> UsageSample:
    resources = fields.pop("resources", {"memory_mb": 64, "storage_mb": 10})
    return UsageSample(
        plugin_id="p", at=at, state="ACTIVE", container_id=container, resources=resources, **fields
    )


def test_policy_validation_lists_every_problem() -> None:
    with pytest.raises(InvalidInput) as err:
        QuotaPolicy().override({"memory": {"share": 1.5, "action": "explode"}, "bogus": 1})
    paths = {d["path"] for d in err.value.details}
    assert paths == {
        "quota_policy.memory.share",
        "quota_policy.memory.action",
        "quota_policy.bogus",
    }
    assert err.value.status_code == 422


def test_a_plugins_policy_overrides_the_default_rule_by_rule() -> None:
    policy = policy_for(
        QuotaPolicy(), {"quota_policy": {"memory": {"action": "restart"}, "storage": None}}
    )
    assert policy.memory is not None and policy.memory.action == Action.RESTART
    assert policy.memory.share == 0.9 and policy.memory.samples == 6
    assert policy.storage is None
    # A stored policy that no longer validates: the default, not an error.
    assert policy_for(QuotaPolicy(), {"quota_policy": {"memory": 3}}) == QuotaPolicy()


def test_memory_rule_needs_n_samples_in_a_row_of_the_same_container() -> None:
    policy = QuotaPolicy.model_validate({"memory": {"share": 0.9, "samples": 3}})
    high = 60 * MIB  # of 64
    recent = [s(i, memory_bytes=high) for i in range(2)]
    assert evaluate(policy, recent, default_storage_mb=100) == []
    recent.append(s(2, memory_bytes=high))
    [breach] = evaluate(policy, recent, default_storage_mb=100)
    assert breach.rule == "memory" and breach.observed["limit_bytes"] == 64 * MIB
    recent[1] = s(1, memory_bytes=10 * MIB)
    assert evaluate(policy, recent, default_storage_mb=100) == []
    # After a restart only the new container's samples count.
    fresh = [*[s(i, memory_bytes=high) for i in range(3)], s(3, container="c2", memory_bytes=high)]
    assert evaluate(policy, fresh, default_storage_mb=100) == []


def test_cpu_throttled_rule_is_a_share_of_periods() -> None:
    policy = QuotaPolicy.model_validate({"cpu_throttled": {"share": 0.8, "samples": 2}})
    busy = [
        s(0, cpu_periods=100, cpu_throttled_periods=90),
        s(1, cpu_periods=100, cpu_throttled_periods=75),
    ]
    [breach] = evaluate(policy, busy, default_storage_mb=100)
    assert breach.rule == "cpu_throttled"
    calm = [
        s(0, cpu_periods=100, cpu_throttled_periods=90),
        s(1, cpu_periods=100, cpu_throttled_periods=50),
    ]
    assert evaluate(policy, calm, default_storage_mb=100) == []
    idle = [s(0, cpu_periods=0, cpu_throttled_periods=0), s(1)]
    assert evaluate(policy, idle, default_storage_mb=100) == []


def test_storage_and_egress_rules() -> None:
    policy = QuotaPolicy.model_validate({"egress": {"daily_bytes": 1000}})
    full = [s(0, storage_bytes=int(9.6 * MIB))]  # of 10 MiB
    assert [b.rule for b in evaluate(policy, full, default_storage_mb=100)] == ["storage"]
    assert evaluate(policy, [s(0, storage_bytes=MIB)], default_storage_mb=100) == []
    rules = [b.rule for b in evaluate(policy, [s(0)], default_storage_mb=100, egress_today=1001)]
    assert rules == ["egress"]
    assert evaluate(policy, [s(0)], default_storage_mb=100, egress_today=1000) == []


class FakeControl:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail = fail

    def set_limits(self, plugin_id: str, limits: dict[str, Any]) -> None:
        self.calls.append(("set_limits", plugin_id, limits))

    def reload(self, plugin_id: str, *, reason: str) -> None:
        self.calls.append(("reload", plugin_id, reason))
        if self.fail:
            raise self.fail

    def disable(self, plugin_id: str, *, reason: str) -> None:
        self.calls.append(("disable", plugin_id, reason))
        if self.fail:
            raise self.fail


class FakeJournal:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(
        self, *, plugin_id: str, event_type: str, payload: dict[str, Any], outcome: str
    ) -> None:
        self.records.append(
            {"plugin": plugin_id, "type": event_type, "payload": payload, "outcome": outcome}
        )


def enforcer(
    policy: dict[str, Any],
    control: FakeControl,
    journal: FakeJournal,
    recent: list[UsageSample],
    **kw: Any,
) -> QuotaEnforcer:
    return QuotaEnforcer(
        default=QuotaPolicy.model_validate(policy),
        control=control,
        journal=journal,
        recent=lambda _p: recent,
        run=lambda f: f(),
        **kw,
    )


def storage_full(at: float, **kw: Any) -> UsageSample:
    return s(at, storage_bytes=10 * MIB, **kw)


@pytest.mark.parametrize(
    ("action", "event", "call"),
    [
        ("warn", "quota.warning", None),
        ("throttle", "quota.throttled", ("set_limits", "p", {"rate_limit_requests": 50})),
        (
            "restart",
            "quota.restarted",
            ("reload", "p", "quota policy: storage at or above 95% of its quota"),
        ),
        (
            "disable",
            "quota.disabled",
            ("disable", "p", "quota policy: storage at or above 95% of its quota"),
        ),
    ],
)
def test_each_action_acts_and_is_recorded(action: str, event: str, call: Any) -> None:
    control, journal = FakeControl(), FakeJournal()
    recent = [storage_full(0)]
    e = enforcer({"memory": None, "storage": {"action": action}}, control, journal, recent)
    e(recent[-1:])
    assert control.calls == ([call] if call else [])
    [record] = journal.records
    assert (record["type"], record["outcome"], record["plugin"]) == (event, action, "p")
    assert record["payload"]["rule"] == "storage"


def test_throttle_halves_an_operator_limit_and_caps_an_unlimited_one() -> None:
    for limit, expected in ((30, 15), (1, 1), (0, 60)):
        control, journal = FakeControl(), FakeJournal()
        recent = [storage_full(0, resources={"storage_mb": 10, "rate_limit_requests": limit})]
        enforcer({"storage": {"action": "throttle"}}, control, journal, recent)(recent[-1:])
        assert control.calls == [("set_limits", "p", {"rate_limit_requests": expected})]


def test_cooldown_and_a_failed_action_is_recorded() -> None:
    control, journal = FakeControl(fail=Conflict("has dependents")), FakeJournal()
    recent = [storage_full(0)]
    e = enforcer({"storage": {"action": "disable"}, "cooldown_s": 60}, control, journal, recent)
    e(recent[-1:])
    assert journal.records[0]["outcome"] == "failed"
    assert journal.records[0]["payload"]["error"] == "has dependents"
    recent.append(storage_full(30))
    e(recent[-1:])
    assert len(control.calls) == 1  # within the cooldown
    recent.append(storage_full(61))
    e(recent[-1:])
    assert len(control.calls) == 2


def test_egress_budget_is_seeded_from_the_series_once_a_day() -> None:
    control, journal = FakeControl(), FakeJournal()
    asked: list[float] = []

    def since(_plugin: str, t: float) -> int:
        asked.append(t)
        return 900

    day = 86400 * 19_700
    recent = [s(day + 50, network_bytes=900)]
    e = enforcer({"egress": {"daily_bytes": 1000}}, control, journal, recent, egress_since=since)
    e(recent[-1:])
    assert asked == [day] and journal.records == []
    recent.append(s(day + 60, network_bytes=200))
    e(recent[-1:])
    assert asked == [day]  # counted on from memory
    assert [r["type"] for r in journal.records] == ["quota.warning"]
    assert journal.records[0]["payload"]["observed"]["bytes_today"] == 1100


def test_event_journal_writes_the_audit_record_and_the_event(engine: Any) -> None:
    from orchestrator.events.bus import EventBus
    from orchestrator.store import audit, events

    bus = EventBus(engine)
    EventJournal(engine, bus).record(
        plugin_id="p",
        event_type="quota.warning",
        payload={"rule": "memory", "message": "memory high"},
        outcome="warn",
    )
    from orchestrator.store.db import session_scope

    with session_scope(engine) as session:
        [row] = audit.list_audit(session, limit=10)
        logged = events.list_events(session, limit=10)
    assert (row.actor, row.action, row.outcome) == ("monitor", "quota.memory", "warn")
    assert [(e.type, e.subject) for e in logged] == [("quota.warning", "p")]
