import sys
from pathlib import Path
from typing import Any

import pytest
from summit_sdk.testing import PluginCallError, PluginTestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from notify import plugin

SEND = {"action": "send", "params": {"channel": "ops", "message": "disk full"}}


def test_send_publishes_one_event() -> None:
    with PluginTestClient(plugin) as client:
        output = client.call("workflow", "notify", SEND)
        assert output["status"] == "ok"
        assert client.host.published == [
            {
                "id": output["result"]["event_id"],
                "type": "notify.sent",
                "payload": {"channel": "ops", "message": "disk full"},
            }
        ]


def test_channel_defaults_from_config(plugin_client: Any) -> None:
    client = plugin_client(plugin, config={"default_channel": "alerts"})
    client.call("workflow", "notify", {"action": "send", "params": {"message": "hi"}})
    assert client.host.published[0]["payload"]["channel"] == "alerts"


def test_without_events_publish_nothing_is_sent() -> None:
    with PluginTestClient(plugin, permissions=[]) as client:
        with pytest.raises(PluginCallError) as denied:
            client.call("workflow", "notify", SEND)
        assert (denied.value.status, denied.value.code) == (403, "permission_denied")
        assert client.host.published == [] and client.host.calls == []


@pytest.mark.parametrize(
    ("input", "code"),
    [
        ({"action": "delete", "params": {"message": "x"}}, "bad_action"),
        ({"action": "send", "params": {"message": " "}}, "invalid_input"),
        ({"params": {}}, "invalid_input"),
    ],
)
def test_bad_requests_are_refused(input: dict[str, object], code: str) -> None:
    with PluginTestClient(plugin) as client:
        with pytest.raises(PluginCallError) as refused:
            client.call("workflow", "notify", input)
        assert (refused.value.status, refused.value.code) == (400, code)
        assert client.host.published == []
