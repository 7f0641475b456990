"""Webhook filters, transformations, signatures, URL checks and the retry schedule."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from orchestrator.domain.errors import InvalidInput
from orchestrator.events.sender import backoff_s
from orchestrator.events.webhooks import Filter, Transform, check_url, sign, verify_signature

EVENT: dict[str, Any] = {
    "id": "e1",
    "type": "order.created",
    "source": "api:admin",
    "subject": "o-17",
    "time": "2026-11-25T10:00:00+00:00",
    "payload": {"total": 120, "region": "eu", "tags": ["vip", "new"], "lines": [{"sku": "a"}]},
}


@pytest.mark.parametrize(
    ("types", "where", "matches"),
    [
        (["order.*"], [], True),
        (["invoice.*"], [], False),
        (["*"], [{"field": "payload.total", "op": "gt", "value": 100}], True),
        (["*"], [{"field": "payload.total", "op": "lt", "value": 100}], False),
        (["*"], [{"field": "payload.region", "value": "eu"}], True),  # op defaults to eq
        (["*"], [{"field": "payload.region", "op": "ne", "value": "eu"}], False),
        (["*"], [{"field": "payload.region", "op": "in", "value": ["us", "eu"]}], True),
        (["*"], [{"field": "payload.region", "op": "not_in", "value": ["eu"]}], False),
        (["*"], [{"field": "payload.tags", "op": "contains", "value": "vip"}], True),
        (["*"], [{"field": "subject", "op": "prefix", "value": "o-"}], True),
        (["*"], [{"field": "payload.lines.0.sku", "value": "a"}], True),
        (["*"], [{"field": "payload.missing", "op": "exists"}], False),
        (["*"], [{"field": "payload.missing", "op": "exists", "value": False}], True),
        (["*"], [{"field": "payload.missing", "op": "ne", "value": 1}], True),
        (["*"], [{"field": "payload.region", "op": "gt", "value": 5}], False),  # str vs number
        (
            ["order.created"],
            [
                {"field": "payload.total", "op": "gte", "value": 120},
                {"field": "payload.region", "value": "us"},
            ],
            False,  # every predicate must hold
        ),
    ],
)
def test_filters(types: list[str], where: list[dict[str, Any]], matches: bool) -> None:
    assert Filter.parse(types, where).matches(EVENT) is matches


@pytest.mark.parametrize(
    ("types", "where", "reason"),
    [
        ([], [], "types"),
        ("order.*", [], "types"),
        (["has space"], [], "not a type pattern"),
        (["*"], [{"field": "payload.x", "op": "like", "value": 1}], "op must be"),
        (["*"], [{"field": "nope.x", "value": 1}], "field must start"),
        (["*"], [{"field": "payload..x", "value": 1}], "dotted path"),
        (["*"], [{"field": "payload.x", "op": "in", "value": 1}], "list value"),
        (["*"], [{"field": "payload.x", "op": "gt", "value": [1]}], "number or a string"),
        (["*"], [{"field": "payload.x", "op": "eq"}], "needs a value"),
        (["*"], [{"field": "payload.x", "extra": 1, "value": 1}], "unknown keys"),
        (["*"], ["payload.x == 1"], "an object"),
    ],
)
def test_bad_filters_say_why(types: Any, where: Any, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        Filter.parse(types, where)


def test_transformations() -> None:
    jp = Transform.parse(
        {"jmespath": "{id: id, sku: payload.lines[0].sku, n: length(payload.tags)}"}
    )
    assert jp.apply(EVENT) == {"id": "e1", "sku": "a", "n": 2}
    tpl = Transform.parse(
        {
            "template": {
                "text": "{{type}} for {{ payload.region }}",
                "total": "{{payload.total}}",
                "list": ["{{subject}}", 3],
                "none": "{{payload.missing}}",
            }
        }
    )
    assert tpl.apply(EVENT) == {
        "text": "order.created for eu",
        "total": 120,  # a whole-string placeholder keeps the value's type
        "list": ["o-17", 3],
        "none": None,
    }
    assert Transform.parse(None).apply(EVENT) is EVENT
    for bad, reason in (
        ({"jmespath": "payload.["}, "jmespath"),
        ({"jmespath": ""}, "non-empty"),
        ({"template": {"a": "{{secret.x}}"}}, "field must start"),
        ({"xslt": "x"}, "either"),
        ({"jmespath": "a", "template": {}}, "either"),
    ):
        with pytest.raises(InvalidInput, match=reason):
            Transform.parse(bad)


def test_signatures_verify_and_refuse_tampering_and_stale_times() -> None:
    body = b'{"id":"e1"}'
    header = sign("whsec_test_secret_value", body)
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature("whsec_test_secret_value", body, header)
    assert not verify_signature("whsec_other_secret_value", body, header)
    assert not verify_signature("whsec_test_secret_value", body + b" ", header)
    old = sign("whsec_test_secret_value", body, timestamp=int(time.time()) - 3600)
    assert not verify_signature("whsec_test_secret_value", body, old)
    assert not verify_signature("whsec_test_secret_value", body, "garbage")


def test_urls_on_internal_addresses_need_an_operator() -> None:
    assert check_url("https://93.184.215.14/hook", ()) == "https://93.184.215.14/hook"
    for url in (
        "http://127.0.0.1:9000/x",
        "http://[::1]/x",
        "http://10.0.0.5/x",
        "http://172.16.3.4/x",
        "http://192.168.0.10/x",
        "http://169.254.169.254/latest",
        "http://[fe80::1]/x",
        "http://[::ffff:127.0.0.1]/x",  # v4-mapped loopback
        "http://0.0.0.0/x",
        "http://localhost:8080/x",
    ):
        with pytest.raises(InvalidInput, match="address"):
            check_url(url, ())
    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    assert check_url("http://127.0.0.1:9000/x", allowed)
    for url in ("ftp://example.com/", "http://u:p@example.com/", "not a url", "http:///x"):
        with pytest.raises(InvalidInput, match="webhook url"):
            check_url(url, ())


def test_backoff_grows_with_full_jitter_under_the_cap() -> None:
    for attempt in range(1, 12):
        waits = [backoff_s(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(0 <= w <= min(30.0, 0.5 * 2**attempt) for w in waits), attempt
    early = sum(backoff_s(1, 0.5, 30.0) for _ in range(200))
    late = sum(backoff_s(8, 0.5, 30.0) for _ in range(200))
    assert late > 5 * early
