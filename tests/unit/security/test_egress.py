"""The egress proxy against real upstream servers on loopback (plain HTTP and TLS)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn

from orchestrator.security.egress import (
    EgressFailed,
    EgressPolicy,
    EgressProxy,
    EgressRefused,
    EgressResponse,
)

LOOPBACK = ["127.0.0.0/8"]
TLS_NAME = "secure.test"


# --- the upstream: a tiny ASGI app under uvicorn in a background thread --------------------


async def _upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path: str = scope["path"]
    query = parse_qs(scope["query_string"].decode())

    async def answer(
        status: int, content: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [*(headers or []), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    if path == "/echo":
        seen = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        await answer(200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])
    elif path.startswith("/bytes/"):
        size = int(path.removeprefix("/bytes/"))
        headers = [] if query.get("declare") == ["0"] else [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
    elif path == "/redirect":
        await answer(302, b"moved", [(b"location", b"http://elsewhere.test/")])
    elif path.startswith("/sleep/"):
        await asyncio.sleep(float(path.removeprefix("/sleep/")))
        await answer(200, b"late")
    elif path == "/hop":
        await answer(
            200,
            b"hop",
            [
                (b"connection", b"x-private"),
                (b"x-private", b"secret"),
                (b"keep-alive", b"timeout=5"),
                (b"proxy-authenticate", b"Basic"),
                (b"upgrade", b"h2c"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
            ],
        )
    else:
        await answer(404)


@contextmanager
def _serve(certfile: Path | None = None, keyfile: Path | None = None) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _upstream,
        http="h11",
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=1,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "upstream server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with _serve() as bound:
        yield bound


@dataclass
class TlsUpstream:
    port: int
    ca_file: Path


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for TLS_NAME only, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Summit egress test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsUpstream]:
    ca_file, cert_file, key_file = _write_certificates(tmp_path_factory.mktemp("tls"))
    with _serve(cert_file, key_file) as bound:
        yield TlsUpstream(bound, ca_file)


# --- helpers --------------------------------------------------------------------------------


class FakeDns:
    """Answers from a table and remembers every question, so a test can tell whether the
    proxy resolved a name (and how often) without real DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


def policy(*hosts: str, mbps: float = 0) -> EgressPolicy:
    return EgressPolicy(allowed_hosts=hosts, mbps=mbps)


def call(
    proxy: EgressProxy,
    rules: EgressPolicy,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    plugin_id: str = "com.example.p",
) -> EgressResponse:
    return asyncio.run(
        proxy.request(plugin_id, rules, method=method, url=url, headers=headers or {}, body=body)
    )


def echoed(response: EgressResponse) -> dict[str, Any]:
    assert response.status == 200, response.body
    seen: dict[str, Any] = json.loads(response.body)
    return seen


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key == name]


# --- reaching allowed hosts -----------------------------------------------------------------


def test_connects_to_the_checked_address_with_the_original_host(port: int) -> None:
    # .invalid never resolves in real DNS: the request can only arrive if the proxy connected
    # to the address it resolved and checked itself.
    dns = FakeDns({"api.plugin.invalid": ["127.0.0.1"]})
    proxy = EgressProxy(allow_private=LOOPBACK, resolver=dns)

    response = call(
        proxy,
        policy("api.plugin.invalid"),
        f"http://api.plugin.invalid:{port}/echo?q=1#fragment",
        method="POST",
        headers={"Content-Type": "text/plain"},
        body=b"hello",
    )

    seen = echoed(response)
    assert seen["method"] == "POST"
    assert (seen["path"], seen["query"]) == ("/echo", "q=1")
    assert header(seen, "host") == [f"api.plugin.invalid:{port}"]
    assert header(seen, "content-type") == ["text/plain"]
    assert seen["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert dns.asked == ["api.plugin.invalid"]


def test_wildcard_admits_subdomains_at_any_depth(port: int) -> None:
    names = ["a.example.invalid", "a.b.example.invalid"]
    proxy = EgressProxy(
        allow_private=LOOPBACK, resolver=FakeDns({name: ["127.0.0.1"] for name in names})
    )
    for name in names:
        seen = echoed(call(proxy, policy("*.example.invalid"), f"http://{name}:{port}/echo"))
        assert header(seen, "host") == [f"{name}:{port}"]


def test_host_matching_ignores_case_and_trailing_dot(port: int) -> None:
    proxy = EgressProxy(
        allow_private=LOOPBACK, resolver=FakeDns({"api.example.invalid": ["127.0.0.1"]})
    )
    seen = echoed(
        call(proxy, policy("API.Example.Invalid."), f"HTTP://Api.EXAMPLE.invalid.:{port}/echo")
    )
    assert header(seen, "host") == [f"api.example.invalid:{port}"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.com", True),
        ("a.b.example.com", True),
        ("A.EXAMPLE.COM.", True),
        ("example.com", False),
        ("evilexample.com", False),
        ("a.evilexample.com", False),
        ("example.com.evil.net", False),
        ("a.example.com.evil.net", False),
        ("api.example.org", True),
        ("www.api.example.org", False),
        ("api.example.org.evil.net", False),
        ("", False),
    ],
)
def test_policy_host_matching(host: str, allowed: bool) -> None:
    assert policy("*.example.com", "api.example.org").allows_host(host) is allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://example.invalid/",  # only subdomains are allowed by the wildcard
        "http://evilexample.invalid/",
        "http://example.invalid.evil.test/",
        "http://other.test/",
        "http://10.0.0.1/",  # an IP literal must be listed as such
    ],
)
def test_host_not_allowed_is_refused_before_resolving(url: str) -> None:
    dns = FakeDns({})
    proxy = EgressProxy(allow_private=["0.0.0.0/0"], resolver=dns)

    with pytest.raises(EgressRefused) as refused:
        call(proxy, policy("*.example.invalid"), url)

    assert (refused.value.code, refused.value.status) == ("host_not_allowed", 403)
    assert dns.asked == []


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",  # multicast, which is_global alone lets through
        "240.0.0.1",
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "fe80::1",
        "fc00::1",
        "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
    ],
)
def test_non_public_address_literals_are_refused(address: str) -> None:
    proxy = EgressProxy()
    host = f"[{address}]" if ":" in address else address

    with pytest.raises(EgressRefused) as refused:
        call(proxy, policy(address), f"http://{host}/")

    assert refused.value.code == "address_not_allowed"
    assert refused.value.status == 403


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],  # rebinding an allowed name onto the orchestrator itself
        ["169.254.169.254"],
        ["93.184.216.34", "10.0.0.7"],  # one private answer is enough to refuse
        ["2606:2800:220:1:248:1893:25c8:1946", "::1"],
    ],
)
def test_name_resolving_to_a_non_public_address_is_refused(answers: list[str]) -> None:
    dns = FakeDns({"api.example.com": answers})
    proxy = EgressProxy(resolver=dns)

    with pytest.raises(EgressRefused) as refused:
        call(proxy, policy("api.example.com"), "http://api.example.com/")

    assert refused.value.code == "address_not_allowed"
    assert dns.asked == ["api.example.com"]
    assert proxy.usage("com.example.p")["refused"] == 1


def test_allow_private_admits_only_its_ranges(port: int) -> None:
    dns = FakeDns({"here.invalid": ["127.0.0.1"], "lan.invalid": ["10.0.0.7"]})
    proxy = EgressProxy(allow_private=LOOPBACK, resolver=dns)
    rules = policy("here.invalid", "lan.invalid", "127.0.0.1")

    assert echoed(call(proxy, rules, f"http://here.invalid:{port}/echo"))["method"] == "GET"
    assert echoed(call(proxy, rules, f"http://127.0.0.1:{port}/echo"))["method"] == "GET"
    with pytest.raises(EgressRefused) as refused:
        call(proxy, rules, f"http://lan.invalid:{port}/echo")
    assert refused.value.code == "address_not_allowed"


def test_system_resolver_answers_are_checked_too(port: int) -> None:
    seen = echoed(
        call(
            EgressProxy(allow_private=LOOPBACK),
            policy("localhost"),
            f"http://localhost:{port}/echo",
        )
    )
    assert header(seen, "host") == [f"localhost:{port}"]

    with pytest.raises(EgressRefused) as refused:
        call(EgressProxy(), policy("localhost"), f"http://localhost:{port}/echo")
    assert refused.value.code == "address_not_allowed"


def test_next_checked_address_is_tried_when_one_refuses(port: int) -> None:
    # Nothing listens on 127.0.0.2; the request must still arrive through 127.0.0.1.
    dns = FakeDns({"multi.invalid": ["127.0.0.2", "127.0.0.1"]})
    proxy = EgressProxy(allow_private=LOOPBACK, resolver=dns)

    seen = echoed(call(proxy, policy("multi.invalid"), f"http://multi.invalid:{port}/echo"))

    assert header(seen, "host") == [f"multi.invalid:{port}"]
    assert dns.asked == ["multi.invalid"]


# --- what is forwarded ----------------------------------------------------------------------


def test_redirect_is_returned_not_followed(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)

    response = call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/redirect")

    assert response.status == 302
    assert ("location", "http://elsewhere.test/") in response.headers
    assert response.body == b"moved"


def test_hop_by_hop_headers_are_dropped_both_ways(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)
    sent = {
        "Host": "evil.test",
        "Connection": "x-hidden",
        "X-Hidden": "named by Connection",
        "Keep-Alive": "300",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "Proxy-Anything": "1",
        "TE": "trailers",
        "Upgrade": "websocket",
        "Transfer-Encoding": "chunked",
        "Content-Length": "999",
        "X-Kept": "yes",
    }

    seen = echoed(
        call(
            proxy,
            policy("127.0.0.1"),
            f"http://127.0.0.1:{port}/echo",
            method="POST",
            headers=sent,
            body=b"abc",
        )
    )
    names = {name for name, _ in seen["headers"]}
    assert names == {"host", "x-kept", "content-length"}
    assert header(seen, "host") == [f"127.0.0.1:{port}"]
    assert header(seen, "content-length") == ["3"]

    response = call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/hop")
    received = {name.lower() for name, _ in response.headers}
    assert received.isdisjoint({"connection", "x-private", "keep-alive", "proxy-authenticate"})
    assert "upgrade" not in received
    assert [v for n, v in response.headers if n.lower() == "set-cookie"] == ["a=1", "b=2"]


def test_header_injection_is_refused(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)

    with pytest.raises(EgressRefused) as refused:
        call(
            proxy,
            policy("127.0.0.1"),
            f"http://127.0.0.1:{port}/echo",
            headers={"X-Note": "a\r\nX-Injected: 1"},
        )

    assert (refused.value.code, refused.value.status) == ("bad_request", 400)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com/",
        "file:///etc/passwd",
        "http://user:pw@files.example.com/",
        "http://files.example.com\\@evil.test/",
        "http:///no-host",
        "http://:80/",
        "http://files.example.com:99999/",
        "http://files example.com/",
        "files.example.com/path",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    dns = FakeDns({})
    proxy = EgressProxy(resolver=dns)

    with pytest.raises(EgressRefused) as refused:
        call(proxy, policy("files.example.com", "evil.test"), url)

    assert (refused.value.code, refused.value.status) == ("bad_url", 403)
    assert dns.asked == []


# --- limits and failures --------------------------------------------------------------------


def test_request_body_over_the_cap_is_refused_without_contacting_upstream() -> None:
    dns = FakeDns({"api.example.com": ["127.0.0.1"]})
    proxy = EgressProxy(allow_private=LOOPBACK, resolver=dns, max_request_bytes=1000)

    with pytest.raises(EgressRefused) as refused:
        call(
            proxy,
            policy("api.example.com"),
            "http://api.example.com/echo",
            method="POST",
            body=b"x" * 1001,
        )

    assert (refused.value.code, refused.value.status) == ("request_too_large", 413)
    assert dns.asked == []


@pytest.mark.parametrize("declared", [True, False])
def test_response_over_the_cap_fails(port: int, declared: bool) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK, max_response_bytes=100_000)
    query = "" if declared else "?declare=0"

    exact = call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/bytes/100000{query}")
    assert len(exact.body) == 100_000
    before = proxy.usage("com.example.p")["bytes_in"]
    with pytest.raises(EgressFailed) as failed:
        call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/bytes/100001{query}")
    read = proxy.usage("com.example.p")["bytes_in"] - before

    assert (failed.value.code, failed.value.status) == ("response_too_large", 502)
    # A declared length over the cap is refused before the body; otherwise reading stops at it.
    assert read < (1000 if declared else 100_000 + 1000)


def test_slow_upstream_times_out(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK, timeout_s=0.3)

    # The upstream sleeps a second; the proxy gives it 0.3 s: the timeout, not the answer.
    with pytest.raises(EgressFailed) as failed:
        call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/sleep/1")

    assert (failed.value.code, failed.value.status) == ("upstream_timeout", 504)


def test_refused_connection_is_unreachable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    proxy = EgressProxy(allow_private=LOOPBACK)

    with pytest.raises(EgressFailed) as failed:
        call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{dead_port}/")

    assert (failed.value.code, failed.value.status) == ("upstream_unreachable", 502)


def test_unresolvable_name_is_unreachable() -> None:
    proxy = EgressProxy(resolver=FakeDns({}))

    with pytest.raises(EgressFailed) as failed:
        call(proxy, policy("gone.example.com"), "http://gone.example.com/")

    assert failed.value.code == "upstream_unreachable"


def test_usage_is_counted_per_plugin(port: int) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    proxy = EgressProxy(allow_private=LOOPBACK)
    rules = policy("127.0.0.1")

    response = call(proxy, rules, f"http://127.0.0.1:{port}/echo", method="PUT", body=b"y" * 5000)
    with pytest.raises(EgressRefused):
        call(proxy, rules, "http://elsewhere.test/")
    with pytest.raises(EgressFailed):
        call(proxy, rules, f"http://127.0.0.1:{dead_port}/", plugin_id="other")

    usage = proxy.usage("com.example.p")
    assert (usage["requests"], usage["refused"], usage["failed"]) == (2, 1, 0)
    assert 5000 < usage["bytes_out"] < 5000 + 500
    assert len(response.body) < usage["bytes_in"] < len(response.body) + 500
    other = proxy.usage("other")
    assert (other["requests"], other["refused"], other["failed"]) == (1, 0, 1)
    assert other["bytes_in"] == 0
    assert proxy.usage("never.seen") == dict.fromkeys(
        ("bytes_out", "bytes_in", "requests", "refused", "failed"), 0
    )


# --- throttling -----------------------------------------------------------------------------


def test_download_is_throttled_to_the_plugin_rate(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)

    started = time.monotonic()
    response = call(proxy, policy("127.0.0.1", mbps=1), f"http://127.0.0.1:{port}/bytes/200000")
    elapsed = time.monotonic() - started

    assert len(response.body) == 200_000
    assert elapsed >= 1.2  # 1.6 Mbit at 1 Mbit/s, less the small burst allowance


def test_throttle_is_shared_by_concurrent_requests_and_counts_uploads(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)
    rules = policy("127.0.0.1", mbps=1)
    base = f"http://127.0.0.1:{port}"

    async def both() -> list[EgressResponse]:
        upload = proxy.request(
            "p", rules, method="POST", url=f"{base}/echo", headers={}, body=b"u" * 100_000
        )
        download = proxy.request(
            "p", rules, method="GET", url=f"{base}/bytes/100000", headers={}, body=b""
        )
        return list(await asyncio.gather(upload, download))

    started = time.monotonic()
    uploaded, downloaded = asyncio.run(both())
    elapsed = time.monotonic() - started

    assert echoed(uploaded)["body_len"] == 100_000
    assert len(downloaded.body) == 100_000
    assert elapsed >= 1.2  # 200 kB between them, one 1 Mbit/s budget


# --- TLS ------------------------------------------------------------------------------------


def test_https_verifies_the_name_not_the_address(tls_upstream: TlsUpstream) -> None:
    dns = FakeDns({TLS_NAME: ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    proxy = EgressProxy(
        allow_private=LOOPBACK,
        resolver=dns,
        ssl_context=ssl.create_default_context(cafile=str(tls_upstream.ca_file)),
    )
    rules = policy(TLS_NAME, "other.test", "127.0.0.1")

    async def get(host: str) -> EgressResponse | EgressFailed:
        url = f"https://{host}:{tls_upstream.port}/echo"
        try:
            return await proxy.request("p", rules, method="GET", url=url, headers={}, body=b"")
        except EgressFailed as exc:
            return exc

    async def in_turn() -> list[EgressResponse | EgressFailed]:
        # One loop, one proxy, same server and address: had the verified connection to
        # secure.test been kept, the later names would ride on it unchecked.
        return [await get(host) for host in (TLS_NAME, "other.test", "127.0.0.1", TLS_NAME)]

    verified, wrong_name, bare_address, again = asyncio.run(in_turn())

    assert isinstance(verified, EgressResponse)
    assert header(echoed(verified), "host") == [f"{TLS_NAME}:{tls_upstream.port}"]
    for failure in (wrong_name, bare_address):
        assert isinstance(failure, EgressFailed)
        assert failure.code == "upstream_unreachable"
        assert "certificate verify failed" in failure.message
    assert isinstance(again, EgressResponse) and again.status == 200


def test_closed_proxy_takes_no_more_requests(port: int) -> None:
    proxy = EgressProxy(allow_private=LOOPBACK)
    asyncio.run(proxy.aclose())

    with pytest.raises(RuntimeError):
        call(proxy, policy("127.0.0.1"), f"http://127.0.0.1:{port}/echo")
