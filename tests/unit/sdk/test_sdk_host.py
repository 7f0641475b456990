from typing import Any

import httpx
import pytest
from summit_sdk import HostError, PermissionDenied, PluginContext, create_plugin
from summit_sdk.host import HostClient
from summit_sdk.testing import HOST_URL, FakeHost, PluginCallError, PluginTestClient

ALL = (
    "read:data",
    "write:data",
    "storage",
    "events:publish",
    "secrets:read",
    "network:access",
    "plugins:invoke",
)


def host_client(fake: FakeHost, permissions: tuple[str, ...] = ALL) -> HostClient:
    return HostClient(HOST_URL, fake.token, permissions, transport=fake)


@pytest.mark.parametrize(
    ("permission", "call"),
    [
        ("read:data", lambda h: h.data.get("docs", "1")),
        ("write:data", lambda h: h.data.put("docs", "1", {})),
        ("read:data", lambda h: h.data.query("docs")),
        ("storage", lambda h: h.storage.put("k", 1)),
        ("storage", lambda h: h.storage.get_blob("k")),
        ("events:publish", lambda h: h.events.publish("x.done", {})),
        ("secrets:read", lambda h: h.secrets.get("api-key")),
        ("network:access", lambda h: h.http.get("https://api.example.com/")),
        ("plugins:invoke", lambda h: h.invoke("com.example.dep", "analyzer", "a", {})),
    ],
)
def test_missing_permission_fails_at_once_naming_it(permission: str, call: Any) -> None:
    fake = FakeHost(ALL)
    granted = tuple(p for p in ALL if p != permission)
    with pytest.raises(PermissionDenied) as denied:
        call(host_client(fake, granted))
    assert denied.value.permission == permission
    assert permission in str(denied.value)
    assert fake.calls == []  # refused before any request left the plugin


def test_fake_host_refuses_with_403_what_it_did_not_grant() -> None:
    # The plugin believes it has read:data; the host knows better.
    fake = FakeHost(("storage",))
    with pytest.raises(PermissionDenied):
        host_client(fake, ("read:data",)).data.get("docs", "1")
    assert [(c.operation, c.status) for c in fake.calls] == [("data.get", 403)]


def test_fake_host_checks_the_bearer_token() -> None:
    fake = FakeHost(ALL)
    client = HostClient(HOST_URL, "stolen", ALL, transport=fake)
    with pytest.raises(HostError) as refused:
        client.storage.get("k")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_data_round_trip_and_query_pages() -> None:
    fake = FakeHost(ALL)
    host = host_client(fake)
    assert host.data.get("docs", "missing") is None
    for i in range(5):
        host.data.put("docs", f"d{i}", {"id": i, "lang": "en" if i % 2 == 0 else "fr"})
    assert host.data.get("docs", "d1") == {"id": 1, "lang": "fr"}
    first = host.data.query("docs", {"lang": "en"}, limit=2)
    assert [r["id"] for r in first["records"]] == [0, 2]
    rest = host.data.query("docs", {"lang": "en"}, limit=2, cursor=first["next_cursor"])
    assert [r["id"] for r in rest["records"]] == [4] and rest["next_cursor"] is None


def test_storage_kv_blobs_and_quota() -> None:
    fake = FakeHost(ALL, storage_quota_bytes=64)
    host = host_client(fake)
    host.storage.put("a/b c", {"n": 1})  # keys are escaped in the path
    assert host.storage.get("a/b c") == {"n": 1}
    host.storage.delete("a/b c")
    assert host.storage.get("a/b c") is None
    host.storage.put_blob("img", b"\x00" * 40)
    assert host.storage.get_blob("img") == b"\x00" * 40
    with pytest.raises(HostError) as full:
        host.storage.put_blob("big", b"\x01" * 40)
    assert (full.value.status, full.value.code) == (413, "storage_quota_exceeded")
    assert "big" not in fake.blobs  # the refused write left nothing behind
    host.storage.delete_blob("img")
    host.storage.put_blob("big", b"\x01" * 40)  # fits once space is freed


def test_events_and_secrets() -> None:
    fake = FakeHost(ALL, secrets={"api-key": "s3cret"})
    host = host_client(fake)
    event_id = host.events.publish("report.ready", {"n": 1})
    assert fake.published == [{"id": event_id, "type": "report.ready", "payload": {"n": 1}}]
    assert host.secrets.get("api-key") == "s3cret"
    with pytest.raises(HostError) as missing:
        host.secrets.get("nope")
    assert missing.value.code == "not_found"


def test_http_egress_only_to_allowed_hosts() -> None:
    fake = FakeHost(ALL, allowed_hosts=["api.example.com"])
    fake.add_http_response("https://api.example.com/rows", [{"a": 1}])
    host = host_client(fake)
    response = host.http.get("https://api.example.com/rows")
    assert response.status_code == 200 and response.json() == [{"a": 1}]
    with pytest.raises(HostError) as refused:
        host.http.get("https://evil.example.net/")
    assert (refused.value.status, refused.value.code) == (403, "host_not_allowed")


def test_http_handler_sees_method_headers_and_body() -> None:
    fake = FakeHost(ALL)
    seen: list[Any] = []

    def internet(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        seen.append((method, url, headers.get("content-type"), body))
        return 201, {"x-id": "7"}, b"made"

    fake.http_handler = internet
    response = host_client(fake).http.request("POST", "https://h/x", json={"a": 1})
    assert (response.status_code, response.headers["x-id"], response.text) == (201, "7", "made")
    assert seen == [("POST", "https://h/x", "application/json", b'{"a":1}')]


def test_invoke_a_fake_dependency_and_a_built_plugin() -> None:
    fake = FakeHost(ALL)
    fake.add_dependency("com.example.fn", lambda point, name, input: {"got": [point, name, input]})
    dep = create_plugin().with_metadata(id="com.example.dep", version="1.0.0")
    fake.add_dependency("com.example.dep", dep.extension("analyzer", "len", lambda i, c: len(i)))
    host = host_client(fake)
    assert host.invoke("com.example.fn", "analyzer", "a", 1) == {"got": ["analyzer", "a", 1]}
    assert host.invoke("com.example.dep", "analyzer", "len", "abcd") == 4
    with pytest.raises(HostError) as unknown:
        host.invoke("com.example.absent", "analyzer", "a", 1)
    assert unknown.value.code == "unknown_dependency"


def test_handler_without_permission_gets_403_and_no_host_call() -> None:
    def publish(input: Any, ctx: PluginContext) -> Any:
        return ctx.host.events.publish("x.done", input)

    plugin = (
        create_plugin()
        .with_metadata(id="com.example.pub", version="1.0.0")
        .request_permissions("events:publish")
        .extension("workflow", "pub", publish)
        .build()
    )
    with PluginTestClient(plugin, permissions=[]) as client:
        with pytest.raises(PluginCallError) as denied:
            client.call("workflow", "pub", {"a": 1})
        assert (denied.value.status, denied.value.code) == (403, "permission_denied")
        assert "events:publish" in denied.value.message
        assert client.host.calls == []
    with PluginTestClient(plugin) as client:  # granted what it requests by default
        assert client.call("workflow", "pub", {"a": 1}) == "evt-1"
        assert client.host.published[0]["payload"] == {"a": 1}


def test_unix_socket_url_uses_a_uds_transport(tmp_path: Any) -> None:
    client = HostClient(f"unix://{tmp_path}/host.sock", "t", ALL)
    with pytest.raises(HostError, match="unreachable"):
        client.storage.get("k")  # no socket there: a clean HostError, not an httpx error


def test_no_host_url_is_a_clear_error() -> None:
    with pytest.raises(HostError, match="not initialized"):
        HostClient(None, None, ALL).storage.get("k")


def test_transport_is_replaceable_with_any_httpx_transport() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/host/v1/secrets/k"
        assert request.headers["authorization"] == "Bearer tok"
        return httpx.Response(200, json={"name": "k", "value": "v"})

    client = HostClient("http://h", "tok", ALL, transport=httpx.MockTransport(answer))
    assert client.secrets.get("k") == "v"


def test_fake_host_egress_matches_exact_names_and_wildcards() -> None:
    from summit_sdk.testing import host_allowed

    allowed = ["api.example.com", "*.data.example.org"]
    assert host_allowed("api.example.com", allowed)
    assert host_allowed("API.example.com.", allowed)
    assert host_allowed("eu.data.example.org", allowed)
    assert not host_allowed("data.example.org", allowed)  # the wildcard means subdomains only
    assert not host_allowed("evil-api.example.com", allowed)
    assert not host_allowed("api.example.com.evil.net", allowed)


def test_test_client_refuses_a_config_the_orchestrator_would_refuse() -> None:
    from summit_sdk import create_plugin
    from summit_sdk.testing import InvalidConfig, PluginTestClient

    plugin = (
        create_plugin()
        .with_metadata(id="com.example.cfg", version="1.0.0")
        .with_config_schema(
            {"type": "object", "properties": {"top": {"type": "integer", "minimum": 0}}}
        )
        .extension("analyzer", "a", lambda input, ctx: ctx.config)
        .build()
    )
    with pytest.raises(InvalidConfig, match=r"config\['top'\]: -1 is less than the minimum"):
        PluginTestClient(plugin, config={"top": -1})
    with PluginTestClient(plugin, config={"top": 3}) as client:
        assert client.call("analyzer", "a", {}) == {"top": 3}
