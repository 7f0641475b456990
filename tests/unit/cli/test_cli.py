"""The ``summit`` CLI against a fake orchestrator (``httpx.MockTransport``); no Docker."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.cli import connection, plugins

BASE = "http://summit.test"

PLUGIN = {
    "id": "com.example.word-count",
    "version": "1.0.0",
    "pending_version": None,
    "state": "ACTIVE",
    "state_reason": None,
    "manifest": {
        "id": "com.example.word-count",
        "name": "Word Count",
        "extensions": [{"point": "analyzer", "name": "word-count"}],
    },
    "granted_permissions": ["read:data"],
    "resources": {"memory_mb": 128},
    "config": {},
    "container": {"id": "0123456789abcdef0123", "image": "summit/x:1", "name": "x"},
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-01T00:00:00Z",
}

MANIFEST = """\
schema_version: 1
id: com.example.tiny
name: Tiny
version: 0.1.0
runtime: { base: python, entrypoint: tiny:plugin }
extensions:
  - { point: analyzer, name: tiny }
permissions: [read:data, events:publish]
"""

Handler = Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Records requests and answers them with a handler the test sets."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = lambda request: httpx.Response(200, json=PLUGIN)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    made: list[tuple[str, str]] = []

    def client(url: str, token: str) -> httpx.Client:
        made.append((url, token))
        return httpx.Client(
            transport=httpx.MockTransport(fake),
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
        )

    monkeypatch.setattr(connection, "_client", client)
    fake.made = made  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str, **kwargs: Any) -> Any:
    return runner.invoke(cli.app, ["--url", BASE, *args], **kwargs)


def error(status: int, code: str, message: str, details: Any = None) -> Handler:
    body = {"error": {"code": code, "message": message, "details": details}}
    return lambda request: httpx.Response(status, json=body)


def multipart_fields(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    assert msg.is_multipart()
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload)
    return fields


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "plugin.yaml").write_text(MANIFEST)
    (d / "tiny.py").write_text("plugin = None\n")
    return d


# ----------------------------------------------------------------------------- reading


def test_list_prints_a_table(server: FakeServer, runner: CliRunner) -> None:
    failed = {
        **PLUGIN,
        "id": "com.example.broken",
        "state": "FAILED",
        "state_reason": "health check failed 3 times in a row: connection refused " * 3,
        "container": None,
    }
    server.handler = lambda request: httpx.Response(200, json=[PLUGIN, failed])
    result = run(runner, "list", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ID" in out and "STATE" in out and "CONTAINER" in out
    assert "com.example.word-count" in out and "com.example.broken" in out
    assert "ACTIVE" in out and "FAILED" in out
    assert "0123456789ab" in out and "0123456789abcdef" not in out  # short container id
    assert "health check failed" in out and "…" in out  # reason shortened
    assert server.last.method == "GET" and server.last.url.path == "/v1/plugins"
    assert server.last.headers["authorization"] == "Bearer dev-admin-token"


def test_list_state_filter_and_json(server: FakeServer, runner: CliRunner) -> None:
    server.handler = lambda request: httpx.Response(200, json=[PLUGIN])
    result = run(runner, "list", "--state", "active", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [PLUGIN]
    assert server.last.url.params["state"] == "ACTIVE"


def test_list_empty(server: FakeServer, runner: CliRunner) -> None:
    server.handler = lambda request: httpx.Response(200, json=[])
    result = run(runner, "list")
    assert result.exit_code == 0
    assert "no plugins" in result.stdout


def test_show_json(server: FakeServer, runner: CliRunner) -> None:
    result = run(runner, "show", "com.example.word-count", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == PLUGIN
    assert server.last.url.path == "/v1/plugins/com.example.word-count"


def test_show_human(server: FakeServer, runner: CliRunner) -> None:
    result = run(runner, "show", "com.example.word-count", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("com.example.word-count", "ACTIVE", "read:data", "analyzer/word-count"):
        assert text in result.stdout


def test_url_and_token_from_env_and_per_command(server: FakeServer, runner: CliRunner) -> None:
    env = {"SUMMIT_URL": "http://env.test:1", "SUMMIT_ADMIN_TOKEN": "s3cret"}
    result = runner.invoke(cli.app, ["show", "x", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert server.made[-1] == ("http://env.test:1", "s3cret")  # type: ignore[attr-defined]
    assert server.last.headers["authorization"] == "Bearer s3cret"
    result = runner.invoke(
        cli.app, ["show", "x", "--json", "--url", "http://cmd.test/", "--token", "t2"], env=env
    )
    assert result.exit_code == 0, result.output
    assert server.made[-1] == ("http://cmd.test", "t2")  # type: ignore[attr-defined]


def test_logs(server: FakeServer, runner: CliRunner) -> None:
    logs = {"plugin": "p", "logs": "line [bold]one[/bold]\nline two\n"}
    server.handler = lambda request: httpx.Response(200, json=logs)
    result = run(runner, "logs", "p", "--tail", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == "line [bold]one[/bold]\nline two\n"  # no markup interpretation
    assert server.last.url.params["tail"] == "5"


# ----------------------------------------------------------------------------- install


def test_install_directory_sends_multipart_bundle(
    server: FakeServer, runner: CliRunner, plugin_dir: Path
) -> None:
    server.handler = lambda request: httpx.Response(201, json={**PLUGIN, "state": "LOADED"})
    result = run(
        runner,
        "install",
        str(plugin_dir),
        "--approve",
        "read:data",
        "--config",
        '{"top": 3}',
    )
    assert result.exit_code == 0, result.output
    assert "Installed" in result.stdout and "LOADED" in result.stdout
    req = server.last
    assert req.method == "POST" and req.url.path == "/v1/plugins"
    assert req.headers["content-type"].startswith("multipart/form-data")
    fields = multipart_fields(req)
    filename, bundle = fields["bundle"]
    assert filename and filename.endswith(".tar.gz")
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        names = tar.getnames()
        member = tar.extractfile("plugin.yaml")
        assert member is not None
        assert member.read().decode() == MANIFEST
    assert "tiny.py" in names
    assert json.loads(fields["approved_permissions"][1]) == ["read:data"]
    assert json.loads(fields["config"][1]) == {"top": 3}


def test_install_approve_all_reads_plugin_yaml(
    server: FakeServer, runner: CliRunner, plugin_dir: Path
) -> None:
    result = run(runner, "install", str(plugin_dir), "--approve-all")
    assert result.exit_code == 0, result.output
    fields = multipart_fields(server.last)
    assert json.loads(fields["approved_permissions"][1]) == ["read:data", "events:publish"]
    assert json.loads(fields["config"][1]) == {}


def test_install_tarball_uploads_as_is_and_approve_all_reads_it(
    server: FakeServer, runner: CliRunner, plugin_dir: Path, tmp_path: Path
) -> None:
    from orchestrator.services.bundles import pack_directory

    data = pack_directory(plugin_dir)
    bundle = tmp_path / "tiny-0.1.0.tar.gz"
    bundle.write_bytes(data)
    result = run(runner, "install", str(bundle), "--approve-all")
    assert result.exit_code == 0, result.output
    fields = multipart_fields(server.last)
    assert fields["bundle"] == ("tiny-0.1.0.tar.gz", data)
    assert json.loads(fields["approved_permissions"][1]) == ["read:data", "events:publish"]


def test_install_image_sends_json(server: FakeServer, runner: CliRunner) -> None:
    image = "127.0.0.1:5000/plugins/word-count:1.0.0"
    result = run(
        runner, "install", image, "--approve", "read:data", "--approve", "storage", "--config", "{}"
    )
    assert result.exit_code == 0, result.output
    req = server.last
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {
        "image": image,
        "approved_permissions": ["read:data", "storage"],
        "config": {},
    }


def test_install_approve_all_refused_for_image(server: FakeServer, runner: CliRunner) -> None:
    result = run(runner, "install", "registry.example.com/p:1", "--approve-all")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: bad_input:")
    assert server.requests == []


def test_install_then_enable(server: FakeServer, runner: CliRunner, plugin_dir: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/enable"):
            return httpx.Response(200, json=PLUGIN)
        return httpx.Response(201, json={**PLUGIN, "state": "LOADED"})

    server.handler = handler
    result = run(runner, "install", str(plugin_dir), "--enable")
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in server.requests] == [
        "/v1/plugins",
        "/v1/plugins/com.example.word-count/enable",
    ]
    assert "Enabled" in result.stdout and "ACTIVE" in result.stdout


def test_install_bad_config_json_exits_2(
    server: FakeServer, runner: CliRunner, plugin_dir: Path
) -> None:
    result = run(runner, "install", str(plugin_dir), "--config", "{not json")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad_input: --config is not valid JSON")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert server.requests == []


def test_install_config_must_be_object(
    server: FakeServer, runner: CliRunner, plugin_dir: Path
) -> None:
    result = run(runner, "install", str(plugin_dir), "--config", "[1, 2]")
    assert result.exit_code == 2
    assert "JSON object" in result.stderr


def test_install_missing_directory_exits_2(
    server: FakeServer, runner: CliRunner, tmp_path: Path
) -> None:
    result = run(runner, "install", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no such file or directory" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(runner, "install", str(empty))
    assert result.exit_code == 2
    assert "has no plugin.yaml" in result.stderr
    assert server.requests == []


# ----------------------------------------------------------------------------- errors


def test_api_error_is_one_line_and_exit_2(server: FakeServer, runner: CliRunner) -> None:
    details = {"missing": ["network:access"]}
    server.handler = error(409, "permissions_not_approved", "approve the permissions", details)
    result = run(runner, "install", "img:1")
    assert result.exit_code == 2
    assert result.stderr == "error: permissions_not_approved: approve the permissions\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_api_error_details_with_verbose(server: FakeServer, runner: CliRunner) -> None:
    details = [{"path": "extensions.0.point", "message": "unknown point"}]
    server.handler = error(422, "invalid_manifest", "plugin.yaml is not valid", details)
    for args in (["--verbose", "show", "x"], ["show", "x", "-v"]):
        result = run(runner, *args)
        assert result.exit_code == 2
        lines = result.stderr.splitlines()
        assert lines[0] == "error: invalid_manifest: plugin.yaml is not valid"
        assert lines[1].strip() == "extensions.0.point: unknown point"


def test_not_found_exit_2(server: FakeServer, runner: CliRunner) -> None:
    server.handler = error(404, "plugin_not_found", "plugin 'x' is not installed")
    result = run(runner, "enable", "x")
    assert result.exit_code == 2
    assert result.stderr == "error: plugin_not_found: plugin 'x' is not installed\n"


def test_server_error_exit_1(server: FakeServer, runner: CliRunner) -> None:
    server.handler = error(503, "runtime_unavailable", "Docker is not reachable")
    result = run(runner, "list")
    assert result.exit_code == 1
    assert result.stderr == "error: runtime_unavailable: Docker is not reachable\n"


def test_non_json_error_body(server: FakeServer, runner: CliRunner) -> None:
    server.handler = lambda request: httpx.Response(502, text="<html>\nBad gateway\n</html>")
    result = run(runner, "list")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: http_502:")


def test_connection_refused_exit_1(runner: CliRunner) -> None:
    # the real client, a closed port
    result = runner.invoke(cli.app, ["--url", "http://127.0.0.1:9", "list"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "error: unreachable: cannot reach the orchestrator at http://127.0.0.1:9: "
    )
    assert "Traceback" not in result.output


def test_bad_url_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["--url", "ftp://example.com", "list"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad_url:")


# ----------------------------------------------------------------------------- lifecycle


def test_disable_cascade_and_reload(server: FakeServer, runner: CliRunner) -> None:
    server.handler = lambda request: httpx.Response(200, json={**PLUGIN, "state": "LOADED"})
    result = run(runner, "disable", "p", "--cascade")
    assert result.exit_code == 0, result.output
    assert server.last.url.path == "/v1/plugins/p/disable"
    assert server.last.url.params["cascade"] == "true"
    assert "Disabled" in result.stdout
    result = run(runner, "reload", "p")
    assert result.exit_code == 0, result.output
    assert server.last.method == "POST" and server.last.url.path == "/v1/plugins/p/reload"


def test_uninstall_non_interactive_without_yes_exits_2(
    server: FakeServer, runner: CliRunner
) -> None:
    result = run(runner, "uninstall", "p")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--yes" in result.stderr
    assert server.requests == []


def test_uninstall_with_yes(server: FakeServer, runner: CliRunner) -> None:
    server.handler = lambda request: httpx.Response(204)
    result = run(runner, "uninstall", "p", "--yes")
    assert result.exit_code == 0, result.output
    assert server.last.method == "DELETE" and server.last.url.path == "/v1/plugins/p"
    assert "Uninstalled p" in result.stdout


def test_uninstall_interactive_confirmation(
    server: FakeServer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins, "_interactive", lambda: True)
    server.handler = lambda request: httpx.Response(204)
    result = run(runner, "uninstall", "p", input="n\n")
    assert result.exit_code == 1
    assert server.requests == []
    result = run(runner, "uninstall", "p", input="y\n")
    assert result.exit_code == 0, result.output
    assert server.last.method == "DELETE"


# ----------------------------------------------------------------------------- execute


def test_execute_prints_the_result(server: FakeServer, runner: CliRunner) -> None:
    answer = {"point": "analyzer", "mode": "first", "results": [{"output": {"words": 2}}]}
    server.handler = lambda request: httpx.Response(200, json=answer)
    result = run(
        runner,
        "execute",
        "analyzer",
        "--input",
        '{"text": "hello world"}',
        "--mode",
        "first",
        "--plugin",
        "com.example.word-count",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == answer
    req = server.last
    assert req.method == "POST" and req.url.path == "/v1/extension-points/analyzer/execute"
    assert json.loads(req.content) == {
        "input": {"text": "hello world"},
        "mode": "first",
        "plugins": ["com.example.word-count"],
    }


def test_execute_bad_input_json_exits_2(server: FakeServer, runner: CliRunner) -> None:
    result = run(runner, "execute", "analyzer", "--input", "{oops")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad_input: --input is not valid JSON")
    assert server.requests == []


def test_execute_input_from_file(server: FakeServer, runner: CliRunner, tmp_path: Path) -> None:
    server.handler = lambda request: httpx.Response(200, json={"results": []})
    data = tmp_path / "in.json"
    data.write_text('{"text": "a b c"}')
    result = run(runner, "execute", "analyzer", "--input", f"@{data}")
    assert result.exit_code == 0, result.output
    assert json.loads(server.last.content)["input"] == {"text": "a b c"}


# ----------------------------------------------------------------------------- serve


def _capture_serve(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import orchestrator.app

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        orchestrator.app, "serve", lambda settings, **kw: calls.append({"settings": settings, **kw})
    )
    return calls


def test_serve_runs_the_orchestrator(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _capture_serve(monkeypatch)
    result = runner.invoke(cli.app, ["serve", "--port", "8711", "--log-level", "DEBUG"])
    assert result.exit_code == 0, result.output
    ((call),) = calls
    assert (call["host"], call["port"], call["log_level"]) == ("127.0.0.1", 8711, "DEBUG")


def test_serve_says_which_setting_is_bad_in_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _capture_serve(monkeypatch)
    monkeypatch.setenv("SUMMIT_WEBHOOK_ALLOW_PRIVATE", "[127.0.0.0/8")
    result = runner.invoke(cli.app, ["serve"])
    assert result.exit_code == 2 and not calls
    assert result.output.strip().splitlines() == [
        "error: invalid_setting: SUMMIT_WEBHOOK_ALLOW_PRIVATE: expected a JSON list "
        '(["a", "b"]) or a comma-separated list (a,b)'
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "summit.example.com"])
def test_serve_refuses_the_default_token_beyond_loopback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    calls = _capture_serve(monkeypatch)
    result = runner.invoke(cli.app, ["serve", "--host", host])
    assert result.exit_code == 2 and not calls
    assert result.output.startswith("error: insecure_admin_token: refusing to listen on")
    assert "SUMMIT_ADMIN_TOKEN" in result.output and "--dev" in result.output


@pytest.mark.parametrize(
    ("host", "args", "env"),
    [
        ("127.0.0.1", [], {}),
        ("::1", [], {}),
        ("localhost", [], {}),
        ("0.0.0.0", ["--dev"], {}),
        ("0.0.0.0", [], {"SUMMIT_DEV": "true"}),
        ("0.0.0.0", [], {"SUMMIT_ADMIN_TOKEN": "a-real-secret"}),
    ],
)
def test_serve_allows_loopback_dev_mode_or_a_real_token(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    args: list[str],
    env: dict[str, str],
) -> None:
    calls = _capture_serve(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(cli.app, ["serve", "--host", host, *args])
    assert result.exit_code == 0, result.output
    assert calls[0]["host"] == host


def test_the_server_is_guarded_and_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.app
    from orchestrator.api.http_guard import GuardedHttpToolsProtocol
    from orchestrator.config import Settings

    configs: list[Any] = []
    monkeypatch.setattr(orchestrator.app._Server, "run", lambda self: configs.append(self.config))
    settings = Settings(http_max_head_bytes=32768, shutdown_grace_s=7)
    orchestrator.app.serve(settings, host="127.0.0.1", port=8711, log_level="DEBUG")
    (config,) = configs
    assert (config.host, config.port, config.log_level) == ("127.0.0.1", 8711, "debug")
    assert config.timeout_graceful_shutdown == 7
    assert issubclass(config.http, GuardedHttpToolsProtocol)
    assert (config.http.max_head_bytes, config.http.max_connections) == (32768, None)


def test_importing_the_cli_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.cli; "
        "heavy = [m for m in ('orchestrator.app', 'fastapi', 'docker', 'sqlmodel', 'uvicorn') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_install_shows_streamed_progress_and_returns_plugin(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from orchestrator import cli
    from orchestrator.cli import connection

    plugin_dir = tmp_path / "p"
    plugin_dir.mkdir()
    (plugin_dir / "plugin.yaml").write_text("id: com.example.p\npermissions: []\n")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept", ""))
        body = (
            b'{"progress": "building summit-plugin/com.example.p"}\n'
            b'{"progress": "Step 1/4 : FROM base"}\n'
            b'{"plugin": {"id": "com.example.p", "version": "1.0.0", "state": "LOADED",'
            b' "state_reason": "installed 1.0.0"}}\n'
        )
        return httpx.Response(201, content=body, headers={"content-type": "application/x-ndjson"})

    monkeypatch.setattr(
        connection,
        "_client",
        lambda url, token: httpx.Client(base_url=url, transport=httpx.MockTransport(handler)),
    )
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["install", str(plugin_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert seen == ["application/x-ndjson"]
    assert '"state": "LOADED"' in result.stdout


def test_install_stream_error_line_exits_by_status(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from orchestrator import cli
    from orchestrator.cli import connection

    plugin_dir = tmp_path / "p"
    plugin_dir.mkdir()
    (plugin_dir / "plugin.yaml").write_text("id: com.example.p\n")

    def handler(request: httpx.Request) -> httpx.Response:
        body = (
            b'{"progress": "building"}\n'
            b'{"status": 422, "error": {"code": "build_failed", "message": "the plugin image'
            b' failed to build: boom", "details": null}}\n'
        )
        return httpx.Response(201, content=body, headers={"content-type": "application/x-ndjson"})

    monkeypatch.setattr(
        connection,
        "_client",
        lambda url, token: httpx.Client(base_url=url, transport=httpx.MockTransport(handler)),
    )
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["install", str(plugin_dir)])
    assert result.exit_code == 2
    assert "build_failed" in result.output and "boom" in result.output


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SUMMIT_RUNTIME": "kubernetes"}, "SUMMIT_KUBE_ORCHESTRATOR_NAMESPACE"),
        ({"SUMMIT_HOST_API_PORT": "8701"}, "SUMMIT_HOST_API_ADDRESS"),
    ],
)
def test_serve_refuses_a_backend_it_cannot_make_in_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    calls = _capture_serve(monkeypatch)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("POD_IP", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(cli.app, ["serve"])
    assert result.exit_code == 2 and not calls
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: invalid_setting: ") and named in line
