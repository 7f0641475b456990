"""The ``summit`` command: run the orchestrator and drive a running one over its REST API.

``summit serve`` starts the service. Every other command is an HTTP client of ``/v1``; it finds
the orchestrator through ``--url`` (``SUMMIT_URL``) and authenticates with ``--token``
(``SUMMIT_ADMIN_TOKEN``). The two options are accepted before the command
(``summit --url ... list``) or after it (``summit list --url ...``).

Failures never end in a traceback: the API's ``{"error": {"code", "message", "details"}}``
becomes one line ``error: <code>: <message>`` on stderr (details follow with ``--verbose``).
Exit status 2 means the request or the local input was refused (4xx, bad JSON, missing
directory); 1 means the orchestrator failed or could not be reached (5xx, connection errors).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator import __version__

DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_TOKEN = "dev-admin-token"
REQUEST_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 600.0
NDJSON = "application/x-ndjson"
REASON_WIDTH = 48

EXIT_FAILURE = 1  # the orchestrator failed or could not be reached
EXIT_REFUSED = 2  # the request or the local input was refused

app = typer.Typer(
    name="summit",
    help="Summit plugin orchestrator: run the service and manage its plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

P = ParamSpec("P")
R = TypeVar("R")


# --------------------------------------------------------------------------- plumbing


class CliError(Exception):
    """A failure reported as one ``error: code: message`` line and an exit status."""

    def __init__(
        self, code: str, message: str, *, exit_code: int = EXIT_REFUSED, details: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.details = details


class Mode(StrEnum):
    all = "all"
    pipeline = "pipeline"
    first = "first"


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(err: CliError, *, verbose: bool) -> NoReturn:
    typer.echo(f"error: {_one_line(err.code)}: {_one_line(err.message)}", err=True)
    if verbose and err.details not in (None, "", [], {}):
        if isinstance(err.details, list):
            for item in err.details:
                if isinstance(item, dict) and {"path", "message"} <= item.keys():
                    typer.echo(f"  {item['path']}: {item['message']}", err=True)
                else:
                    typer.echo(f"  {json.dumps(item, default=str)}", err=True)
        else:
            text = json.dumps(err.details, indent=2, default=str)
            typer.echo("\n".join("  " + line for line in text.splitlines()), err=True)
    raise typer.Exit(err.exit_code)


def _handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn :class:`CliError` (raised anywhere in a command) into a line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CliError as err:
            verbose = bool(kwargs.get("verbose"))
            obj = getattr(kwargs.get("ctx"), "obj", None)
            if isinstance(obj, dict):
                verbose = verbose or bool(obj.get("verbose"))
            _fail(err, verbose=verbose)

    return wrapper


class Api:
    """A thin client of the orchestrator's ``/v1`` API that raises :class:`CliError`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        if timeout is not None:
            kwargs["timeout"] = timeout
        with self._transport_errors(), _client(self.url, self.token) as client:
            response = client.request(method, path, **kwargs)
        return _decode(response)

    def stream_install(self, on_progress: Callable[[str], None], **kwargs: Any) -> Any:
        """POST an install asking for NDJSON progress lines; return the installed plugin."""
        headers = {"Accept": NDJSON}
        with (
            self._transport_errors(),
            _client(self.url, self.token) as client,
            client.stream("POST", "/v1/plugins", headers=headers, **kwargs) as response,
        ):
            if not response.headers.get("content-type", "").startswith(NDJSON):
                response.read()
                return _decode(response)
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                if "progress" in item:
                    on_progress(str(item["progress"]))
                elif "plugin" in item:
                    return item["plugin"]
                elif "error" in item:
                    err = item["error"]
                    status = int(item.get("status", 500))
                    raise CliError(
                        str(err.get("code")),
                        str(err.get("message")),
                        exit_code=EXIT_REFUSED if status < 500 else EXIT_FAILURE,
                        details=err.get("details"),
                    )
        raise CliError(
            "incomplete",
            "the orchestrator closed the progress stream before the install finished",
            exit_code=EXIT_FAILURE,
        )

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CliError("bad_url", f"--url {self.url!r} is not usable: {exc}") from None
        except httpx.TimeoutException as exc:
            kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
            raise CliError(
                "timeout",
                f"the orchestrator at {self.url} did not answer in time ({kind} timeout)",
                exit_code=EXIT_FAILURE,
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(
                "unreachable",
                f"cannot reach the orchestrator at {self.url}: {reason}",
                exit_code=EXIT_FAILURE,
            ) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


def _client(url: str, token: str) -> httpx.Client:
    """The one place the CLI builds its HTTP client (tests replace it)."""
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}", "User-Agent": f"summit-cli/{__version__}"},
        timeout=REQUEST_TIMEOUT_S,
    )


def _decode(response: httpx.Response) -> Any:
    if response.status_code < 400:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text
    exit_code = EXIT_REFUSED if response.status_code < 500 else EXIT_FAILURE
    code, message, details = f"http_{response.status_code}", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        details = err.get("details")
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    if not message:
        text = response.text.strip()
        message = text[:200] if text else response.reason_phrase or "request failed"
    message = f"{message} (HTTP {response.status_code})" if code.startswith("http_") else message
    raise CliError(code, message, exit_code=exit_code, details=details)


def _api(ctx: typer.Context, url: str | None, token: str | None) -> Api:
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    return Api(
        (url or obj.get("url") or DEFAULT_URL).rstrip("/"),
        token or obj.get("token") or DEFAULT_TOKEN,
    )


def _json_arg(raw: str, option: str) -> Any:
    """Parse JSON text given on the command line; ``@path`` reads it from a file."""
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError("bad_input", f"{option}: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError("bad_input", f"{option} is not valid JSON: {exc}") from None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _shorten(text: str | None, width: int = REASON_WIDTH) -> str:
    if not text:
        return ""
    flat = _one_line(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


_STATE_STYLES = {
    "ACTIVE": "green",
    "LOADED": "cyan",
    "INITIALIZING": "yellow",
    "UNLOADING": "yellow",
    "FAILED": "bold red",
}


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLES.get(state, ""))


def _plugin_line(plugin: dict[str, Any], verb: str) -> None:
    line = Text(f"{verb} ")
    line.append(str(plugin.get("id", "?")), style="bold")
    line.append(f" {plugin.get('version', '')} ")
    line.append_text(_state(str(plugin.get("state", ""))))
    if plugin.get("state_reason"):
        line.append(f" ({_one_line(plugin['state_reason'])})", style="dim")
    _stdout().print(line)


# Options shared by every client command. Given after the command they win over the ones
# given before it (``summit --url A list --url B`` talks to B).
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Orchestrator base URL (env SUMMIT_URL).", show_default=False),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help="Admin bearer token (env SUMMIT_ADMIN_TOKEN).", show_default=False
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print error details on failure.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="SUMMIT_URL", help="Orchestrator base URL.")
    ] = DEFAULT_URL,
    token: Annotated[
        str,
        typer.Option(
            "--token", envvar="SUMMIT_ADMIN_TOKEN", help="Admin bearer token.", show_default=False
        ),
    ] = DEFAULT_TOKEN,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print error details on failure.")
    ] = False,
) -> None:
    """Summit plugin orchestrator: run the service and manage its plugins."""
    ctx.obj = {"url": url, "token": token, "verbose": verbose}


# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8700,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical|error|warning|info|debug|trace")
    ] = "info",
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development mode: allow the default admin token on a non-loopback address "
            "(env SUMMIT_DEV).",
        ),
    ] = False,
) -> None:
    """Run the orchestrator service (REST API, supervisor, broker)."""
    from orchestrator.app import serve as run_server
    from orchestrator.config import DEV_ADMIN_TOKEN, SettingsProblem, load_settings

    try:
        settings = load_settings()
    except SettingsProblem as exc:
        _fail(CliError("invalid_setting", str(exc)), verbose=False)
    if (
        settings.admin_token == DEV_ADMIN_TOKEN
        and not (dev or settings.dev)
        and not _loopback(host)
    ):
        _fail(
            CliError(
                "insecure_admin_token",
                f"refusing to listen on {host} with the default admin token, which anyone "
                "who can reach the port may use: set SUMMIT_ADMIN_TOKEN to a secret, or pass "
                "--dev (SUMMIT_DEV=true) for a development machine",
            ),
            verbose=False,
        )
    run_server(settings, host=host, port=port, log_level=log_level)


def _loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


# --------------------------------------------------------------------------- worker


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Jobs run at a time (env SUMMIT_WORKER_CONCURRENCY).", show_default=False
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical|error|warning|info|debug")
    ] = "info",
) -> None:
    """Run queued jobs (async execute calls) from Redis until SIGTERM or SIGINT.

    Needs SUMMIT_REDIS_URL and SUMMIT_DATABASE_URL (the orchestrator's own), and runs on a host
    that reaches the plugins' endpoints. The first signal lets the jobs in flight finish; a
    second one exits at once (other workers take those jobs back when their leases expire).
    """
    import logging
    import os
    import signal

    from pydantic import ValidationError

    from orchestrator.config import Settings
    from orchestrator.jobs.process import run_worker_process

    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"error: invalid_settings: {_one_line(str(exc))}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    missing = [
        env
        for env, field in (
            ("SUMMIT_DATABASE_URL", "database_url"),
            ("SUMMIT_REDIS_URL", "redis_url"),
        )
        if field not in settings.model_fields_set or not getattr(settings, field)
    ]
    if missing:
        typer.echo(f"error: not_configured: summit worker needs {' and '.join(missing)}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        for noisy in ("httpx", "httpcore"):  # a line per plugin call
            logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("orchestrator.jobs")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("%s: finishing the jobs in flight", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_worker_process(settings, stop)


# --------------------------------------------------------------------------- install


# Only bounds the work a hostile file can cause here; the orchestrator applies its own
# SUMMIT_BUNDLE_MAX_BYTES to what is uploaded.
CLI_BUNDLE_BUDGET = 1 << 30


def _manifest_from_bundle(data: bytes) -> dict[str, Any]:
    from orchestrator.domain.errors import SummitError
    from orchestrator.services.bundles import read_bundle_manifest

    try:
        text = read_bundle_manifest(data, max_bytes=CLI_BUNDLE_BUDGET)
    except SummitError as exc:
        raise CliError(exc.code, f"cannot read the bundle: {exc.message}") from None
    return _parse_manifest(text, "plugin.yaml")


def _parse_manifest(text: str | bytes, where: str) -> dict[str, Any]:
    from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_yaml

    try:
        manifest = load_manifest_yaml(text)
    except ManifestTextError as exc:
        raise CliError(
            "invalid_manifest", f"{where} {exc.headline}: {_one_line(str(exc))}"
        ) from None
    if not isinstance(manifest, dict):
        raise CliError("invalid_manifest", f"{where} is not a mapping")
    return manifest


def _requested_permissions(manifest: dict[str, Any]) -> list[str]:
    perms = manifest.get("permissions") or []
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise CliError("invalid_manifest", "plugin.yaml: 'permissions' must be a list of strings")
    return perms


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.endswith((".tar.gz", ".tgz", ".yaml", ".yml"))
        or "\\" in source
    )


def _load_source(source: str) -> tuple[str, bytes | None, str, dict[str, Any] | None]:
    """Return ``(kind, bundle bytes, label, manifest)``; kind is ``bundle`` or ``image``."""
    path = Path(source).expanduser()
    if path.is_file() and path.name in ("plugin.yaml", "plugin.yml"):
        path = path.parent
    if path.is_dir():
        manifest_path = path / "plugin.yaml"
        if not manifest_path.is_file():
            raise CliError("bad_input", f"{path} has no plugin.yaml")
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError("bad_input", f"cannot read {manifest_path}: {exc}") from None
        manifest = _parse_manifest(text, str(manifest_path))
        from orchestrator.services.bundles import pack_directory

        try:
            data = pack_directory(path)
        except OSError as exc:
            raise CliError("bad_input", f"cannot pack {path}: {exc}") from None
        return "bundle", data, f"{path.resolve().name}.tar.gz", manifest
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise CliError(
                "bad_input",
                f"{path} is neither a plugin directory nor a .tar.gz bundle",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError("bad_input", f"cannot read {path}: {exc.strerror}") from None
        return "bundle", data, path.name, None
    if _looks_like_path(source):
        raise CliError("bad_input", f"{source}: no such file or directory")
    return "image", None, source, None


def _with_spinner(
    label: str, call: Callable[[], Any], detail: Callable[[], str] = lambda: ""
) -> Any:
    """Run ``call`` in a worker thread while stderr shows a spinner with elapsed seconds.

    The worker is a daemon thread, so Ctrl-C leaves at once instead of waiting for the request.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="summit-cli-request", daemon=True)
    started = time.monotonic()
    with _stderr().status(f"{label} (0s)", spinner="dots") as status:
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.25)
            line = detail()
            shown = f": {escape(line[:100])}" if line else ""
            status.update(f"{label} ({int(time.monotonic() - started)}s){shown}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@app.command()
@_handle_errors
def install(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            help="A plugin directory (with plugin.yaml), a .tar.gz bundle, or an image reference."
        ),
    ],
    approve: Annotated[
        list[str] | None,
        typer.Option("--approve", help="Grant this permission (repeatable).", show_default=False),
    ] = None,
    approve_all: Annotated[
        bool,
        typer.Option("--approve-all", help="Grant every permission the plugin.yaml requests."),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", help="Plugin config as a JSON object (or @file).", show_default=False
        ),
    ] = None,
    enable: Annotated[
        bool, typer.Option("--enable", help="Enable the plugin once installed.")
    ] = False,
    signature: Annotated[
        str | None,
        typer.Option(
            "--signature", help="Signature file from `summit-plugin sign`.", show_default=False
        ),
    ] = None,
    allow_findings: Annotated[
        str | None,
        typer.Option(
            "--allow-findings",
            metavar="REASON",
            help="Install despite blocking scanner findings (admin; the reason is recorded).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Install a plugin from a directory, a .tar.gz bundle or an image reference."""
    envelope = _json_arg(f"@{signature}", "--signature") if signature else None
    if envelope is not None and not isinstance(envelope, dict):
        raise CliError("bad_input", "--signature must be a JSON object (a signature file)")
    cfg: Any = {}
    if config is not None:
        cfg = _json_arg(config, "--config")
        if not isinstance(cfg, dict):
            raise CliError("bad_input", "--config must be a JSON object")
    kind, data, label, manifest = _load_source(source)
    approved = list(dict.fromkeys(approve or []))
    if approve_all:
        if kind != "bundle" or data is None:
            raise CliError(
                "bad_input",
                "--approve-all needs a plugin directory or bundle; for an image, list the "
                "permissions with --approve",
            )
        if manifest is None:
            manifest = _manifest_from_bundle(data)
        approved = list(dict.fromkeys([*approved, *_requested_permissions(manifest)]))

    api = _api(ctx, url, token)
    latest = [""]

    def on_progress(line: str) -> None:
        latest[0] = line

    if kind == "bundle":
        assert data is not None
        form = {"approved_permissions": json.dumps(approved), "config": json.dumps(cfg)}
        if envelope is not None:
            form["signature"] = json.dumps(envelope)
        if allow_findings is not None:
            form["allow_findings"] = "true"
            form["override_reason"] = allow_findings
        request: dict[str, Any] = {
            "files": {"bundle": (label, data, "application/gzip")},
            "data": form,
        }
    else:
        body: dict[str, Any] = {"image": label, "approved_permissions": approved, "config": cfg}
        if envelope is not None:
            body["signature"] = envelope
        if allow_findings is not None:
            body["allow_findings"], body["override_reason"] = True, allow_findings
        request = {"json": body}
    plugin = _with_spinner(
        f"Installing {label}",
        lambda: api.stream_install(on_progress, timeout=INSTALL_TIMEOUT_S, **request),
        detail=lambda: latest[0],
    )
    if enable and isinstance(plugin, dict) and plugin.get("id"):
        if not json_out:
            _plugin_line(plugin, "Installed")
        plugin = _with_spinner(
            f"Enabling {plugin['id']} ...",
            lambda: api.post(f"/v1/plugins/{plugin['id']}/enable", timeout=INSTALL_TIMEOUT_S),
        )
        verb = "Enabled"
    else:
        verb = "Installed"
    if json_out:
        _print_json(plugin)
    elif isinstance(plugin, dict):
        _plugin_line(plugin, verb)


# --------------------------------------------------------------------------- inspect


@app.command("list")
@_handle_errors
def list_plugins(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only plugins in this state (e.g. ACTIVE).", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """List installed plugins."""
    params = {"state": state.upper()} if state else None
    plugins = _api(ctx, url, token).get("/v1/plugins", params=params) or []
    if json_out:
        _print_json(plugins)
        return
    console = _stdout()
    if not plugins:
        console.print("no plugins installed" + (f" in state {state.upper()}" if state else ""))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", overflow="fold")
    table.add_column("VERSION", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("REASON")
    table.add_column("CONTAINER", no_wrap=True)
    for p in plugins:
        container = p.get("container") or {}
        table.add_row(
            Text(str(p.get("id", ""))),
            Text(str(p.get("version", ""))),
            _state(str(p.get("state", ""))),
            Text(_shorten(p.get("state_reason"))),
            Text(str(container.get("id") or "")[:12]),
        )
    console.print(table)


@app.command()
@_handle_errors
def show(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Show one plugin: state, permissions, extensions, resources, container."""
    plugin = _api(ctx, url, token).get(f"/v1/plugins/{plugin_id}")
    if json_out or not isinstance(plugin, dict):
        _print_json(plugin)
        return
    manifest = plugin.get("manifest") or {}
    container = plugin.get("container") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(key: str, value: Any) -> None:
        grid.add_row(key, value if isinstance(value, Text) else Text(str(value)))

    row("id", plugin.get("id", ""))
    if manifest.get("name"):
        row("name", manifest["name"])
    version = str(plugin.get("version", ""))
    if plugin.get("pending_version"):
        version += f" (pending {plugin['pending_version']})"
    row("version", version)
    row("state", _state(str(plugin.get("state", ""))))
    if plugin.get("state_reason"):
        row("reason", _one_line(plugin["state_reason"]))
    if manifest.get("description"):
        row("description", manifest["description"])
    row("permissions", ", ".join(plugin.get("granted_permissions") or []) or "-")
    exts = manifest.get("extensions") or []
    row(
        "extensions",
        ", ".join(f"{e.get('point')}/{e.get('name')}" for e in exts if isinstance(e, dict)) or "-",
    )
    deps = manifest.get("dependencies") or []
    if deps:
        row(
            "dependencies",
            ", ".join(f"{d.get('id')} {d.get('version', '')}".strip() for d in deps),
        )
    resources = plugin.get("resources") or {}
    if resources:
        row("resources", ", ".join(f"{k}={v}" for k, v in resources.items()))
    row("container", str(container.get("id") or "-")[:12])
    if container.get("image"):
        row("image", container["image"])
    row("created", plugin.get("created_at", ""))
    row("updated", plugin.get("updated_at", ""))
    _stdout().print(grid)


@app.command()
@_handle_errors
def logs(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    tail: Annotated[
        int, typer.Option("--tail", "-n", min=1, max=10000, help="Last N lines.")
    ] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Print the last lines of a plugin container's log."""
    answer = _api(ctx, url, token).get(f"/v1/plugins/{plugin_id}/logs", params={"tail": tail})
    text = answer.get("logs", "") if isinstance(answer, dict) else str(answer or "")
    if text:
        typer.echo(text, nl=not text.endswith("\n"))


# --------------------------------------------------------------------------- lifecycle


@app.command()
@_handle_errors
def enable(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Start a plugin (and the plugins it depends on)."""
    _lifecycle_action(_api(ctx, url, token), plugin_id, "enable", "Enabling", "Enabled")


@app.command()
@_handle_errors
def disable(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    cascade: Annotated[
        bool, typer.Option("--cascade", help="Also disable ACTIVE plugins that depend on it.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop a plugin; its container is removed, its installation kept."""
    params = {"cascade": "true"} if cascade else None
    _lifecycle_action(
        _api(ctx, url, token), plugin_id, "disable", "Disabling", "Disabled", params=params
    )


@app.command()
@_handle_errors
def reload(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Replace a plugin's container with a fresh one (new one healthy before the old stops)."""
    _lifecycle_action(_api(ctx, url, token), plugin_id, "reload", "Reloading", "Reloaded")


def _lifecycle_action(
    api: Api,
    plugin_id: str,
    action: str,
    doing: str,
    done: str,
    params: dict[str, str] | None = None,
) -> None:
    plugin = _with_spinner(
        f"{doing} {plugin_id} ...",
        lambda: api.post(
            f"/v1/plugins/{plugin_id}/{action}", params=params, timeout=INSTALL_TIMEOUT_S
        ),
    )
    _plugin_line(plugin, done)


def _interactive() -> bool:
    return sys.stdin.isatty()


@app.command()
@_handle_errors
def uninstall(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove a plugin (it must be disabled first)."""
    if not yes:
        if not _interactive():
            raise CliError("confirmation_required", f"not uninstalling {plugin_id} without --yes")
        if not typer.confirm(f"Uninstall {plugin_id}?", default=False):
            typer.echo("aborted", err=True)
            raise typer.Exit(EXIT_FAILURE)
    api = _api(ctx, url, token)
    _with_spinner(
        f"Uninstalling {plugin_id} ...",
        lambda: api.delete(f"/v1/plugins/{plugin_id}", timeout=INSTALL_TIMEOUT_S),
    )
    line = Text("Uninstalled ")
    line.append(plugin_id, style="bold")
    _stdout().print(line)


# --------------------------------------------------------------------------- execute


@app.command()
@_handle_errors
def execute(
    ctx: typer.Context,
    point: Annotated[str, typer.Argument(help="Extension point, e.g. analyzer or data_source.")],
    input_json: Annotated[
        str,
        typer.Option("--input", help="Input as JSON text (or @file).", show_default=False),
    ],
    mode: Annotated[Mode, typer.Option("--mode", help="How to combine the providers.")] = Mode.all,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Only this provider (repeatable).", show_default=False),
    ] = None,
    timeout_ms: Annotated[
        int | None,
        typer.Option(
            "--timeout-ms", min=1, max=600_000, help="Per-call deadline.", show_default=False
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Call the providers of an extension point and print the JSON result."""
    body: dict[str, Any] = {"input": _json_arg(input_json, "--input"), "mode": mode.value}
    if plugin:
        body["plugins"] = plugin
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    wait = max(REQUEST_TIMEOUT_S, (timeout_ms or 0) / 1000 + 10)
    result = _api(ctx, url, token).post(
        f"/v1/extension-points/{point}/execute", json=body, timeout=wait
    )
    _print_json(result)


# --------------------------------------------------------------------------- access


token_app = typer.Typer(
    help="API tokens with roles (admin, operator, viewer).", no_args_is_help=True
)
secret_app = typer.Typer(
    help="Plugin secrets (write-only; read by plugins with secrets:read).", no_args_is_help=True
)
trust_app = typer.Typer(help="Publisher keys trusted to sign plugins.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(trust_app, name="trust")
app.add_typer(secret_app, name="secret")
webhook_app = typer.Typer(
    help="Webhooks: outside receivers of events (signed, retried, replayable).",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")


@token_app.command("create")
@_handle_errors
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    role: Annotated[str, typer.Option("--role", help="admin, operator or viewer.")] = "viewer",
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Create a token; it is printed once (store it now)."""
    created = _api(ctx, url, token).post("/v1/tokens", json={"name": name, "role": role})
    _stderr().print(f"created {created['id']} ({created['role']}); the token is shown only once:")
    typer.echo(created["token"])


@token_app.command("list")
@_handle_errors
def token_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """API tokens (never their values)."""
    tokens = _api(ctx, url, token).get("/v1/tokens")
    if as_json:
        _print_json(tokens)
        return
    table = Table("id", "name", "role", "created", "revoked", box=None)
    for t in tokens:
        table.add_row(t["id"], t["name"], t["role"], t["created_at"], t.get("revoked_at") or "")
    _stdout().print(table)


@token_app.command("revoke")
@_handle_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id (tok_...).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Revoke a token at once."""
    revoked = _api(ctx, url, token).delete(f"/v1/tokens/{token_id}")
    _stdout().print(f"revoked {revoked['id']} ({revoked['name']})")


@trust_app.command("add")
@_handle_errors
def trust_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The publisher's name.")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 public key (PEM file).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Trust a publisher's key to sign plugins."""
    try:
        pem = key.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError("bad_input", f"cannot read {key}: {exc.strerror}") from None
    added = _api(ctx, url, token).post("/v1/trust/keys", json={"name": name, "public_key": pem})
    _stdout().print(f"trusted key {added['key_id']} ({added['name']})")


@trust_app.command("list")
@_handle_errors
def trust_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Trusted publisher keys."""
    table = Table("key id", "name", "added", "revoked", box=None)
    for k in _api(ctx, url, token).get("/v1/trust/keys"):
        table.add_row(k["key_id"], k["name"], k["added_at"], k.get("revoked_at") or "")
    _stdout().print(table)


@trust_app.command("revoke")
@_handle_errors
def trust_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop trusting a key (for good)."""
    revoked = _api(ctx, url, token).delete(f"/v1/trust/keys/{key_id}")
    _stdout().print(f"revoked key {revoked['key_id']} ({revoked['name']})")


@secret_app.command("set")
@_handle_errors
def secret_set(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    name: Annotated[str, typer.Argument(help="Secret name.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Set a secret from standard input (so it stays out of the shell history)."""
    value = sys.stdin.read().rstrip("\n")
    if not value:
        raise CliError("bad_input", "the secret's value is read from standard input; it was empty")
    _api(ctx, url, token).request(
        "PUT", f"/v1/plugins/{plugin_id}/secrets/{name}", json={"value": value}
    )
    _stdout().print(f"set secret {name} of {plugin_id}")


@secret_app.command("list")
@_handle_errors
def secret_list(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Names of a plugin's secrets (values are never shown)."""
    for item in _api(ctx, url, token).get(f"/v1/plugins/{plugin_id}/secrets"):
        _stdout().print(f"{item['name']}  (set {item['updated_at']})")


@app.command()
@_handle_errors
def audit(
    ctx: typer.Context,
    plugin: Annotated[
        str | None, typer.Option("--plugin", help="Only this plugin.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Refused host API calls and other security events, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if plugin:
        params["plugin"] = plugin
    records = _api(ctx, url, token).get("/v1/audit", params=params)["records"]
    table = Table("at", "count", "actor", "action", "outcome", "permission", box=None)
    for r in records:
        table.add_row(
            r["at"],
            str(r.get("count", 1)),
            r["actor"],
            r["action"],
            r["outcome"],
            r.get("permission") or "",
        )
    _stdout().print(table)


def _json_option(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise CliError("bad_input", f"{what} is not JSON: {exc}") from None


@webhook_app.command("add")
@_handle_errors
def webhook_add(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="URL", help="The receiver (http or https).")],
    types: Annotated[
        list[str], typer.Option("--type", help="Event type pattern (repeatable), e.g. plugin.*")
    ],
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help='JSON list of predicates, e.g. \'[{"field": "payload.total", "op": "gt", '
            '"value": 100}]\'',
            show_default=False,
        ),
    ] = None,
    jmespath: Annotated[
        str | None,
        typer.Option(
            "--jmespath", help="Reshape each event with this expression.", show_default=False
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="JSON, e.g. '{\"max_attempts\": 5}'", show_default=False),
    ] = None,
    description: Annotated[str | None, typer.Option("--description", show_default=False)] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Register a receiver; its signing secret is printed once (store it now)."""
    spec: dict[str, Any] = {"url": target, "types": types}
    if where is not None:
        spec["where"] = _json_option(where, "--where")
    if jmespath is not None:
        spec["transform"] = {"jmespath": jmespath}
    if policy is not None:
        spec["policy"] = _json_option(policy, "--policy")
    if description is not None:
        spec["description"] = description
    created = _api(ctx, url, token).post("/v1/webhooks", json=spec)
    _stderr().print(f"created {created['id']}; its signing secret is shown only once:")
    typer.echo(created["secret"])


@webhook_app.command("list")
@_handle_errors
def webhook_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Subscriptions with their status and delivery counts."""
    hooks = _api(ctx, url, token).get("/v1/webhooks")["webhooks"]
    if as_json:
        _print_json(hooks)
        return
    table = Table("id", "status", "types", "url", "delivered", "pending", "dead", box=None)
    for h in hooks:
        counts = h["deliveries"]
        table.add_row(
            h["id"],
            h["status"],
            ",".join(h["types"]),
            h["url"],
            str(counts["delivered"]),
            str(counts["pending"]),
            str(counts["dead"]),
        )
    _stdout().print(table)


@webhook_app.command("deliveries")
@_handle_errors
def webhook_deliveries(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    dead: Annotated[bool, typer.Option("--dead", help="Only dead letters.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delivery history, newest first."""
    path = f"/v1/webhooks/{webhook_id}/" + ("dead-letters" if dead else "deliveries")
    found = _api(ctx, url, token).get(path, params={"limit": limit})["deliveries"]
    if as_json:
        _print_json(found)
        return
    table = Table("id", "event", "type", "status", "attempts", "code", "ms", "error", box=None)
    for d in found:
        table.add_row(
            str(d["id"]),
            d["event_id"],
            d.get("event_type") or "",
            d["status"],
            str(d["attempts"]),
            str(d.get("last_status") or ""),
            str(d.get("latency_ms") or ""),
            d.get("last_error") or "",
        )
    _stdout().print(table)


@webhook_app.command("replay")
@_handle_errors
def webhook_replay(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    delivery: Annotated[
        int | None, typer.Option("--delivery", help="One delivery.", show_default=False)
    ] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead letter.")] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Every matching event from (ISO time).", show_default=False),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", show_default=False)] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Send again: one delivery, every dead letter, or a time range of events."""
    body: dict[str, Any] = {"dead_letters": dead}
    if delivery is not None:
        body["delivery_id"] = delivery
    if since is not None:
        body["since"] = since
    if until is not None:
        body["until"] = until
    answer = _api(ctx, url, token).post(f"/v1/webhooks/{webhook_id}/replay", json=body)
    _stdout().print(
        f"queued {answer['queued']} deliveries"
        + (f" ({answer['note']})" if answer.get("note") else "")
    )


def _set_status(
    ctx: typer.Context, webhook_id: str, status: str, url: str | None, token: str | None
) -> None:
    changed = _api(ctx, url, token).request(
        "PATCH", f"/v1/webhooks/{webhook_id}", json={"status": status}
    )
    _stdout().print(f"{changed['id']} is {changed['status']}")


@webhook_app.command("pause")
@_handle_errors
def webhook_pause(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop sending (deliveries wait); resume sends them."""
    _set_status(ctx, webhook_id, "paused", url, token)


@webhook_app.command("resume")
@_handle_errors
def webhook_resume(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Send again after a pause (automatic or not)."""
    _set_status(ctx, webhook_id, "active", url, token)


@webhook_app.command("rm")
@_handle_errors
def webhook_rm(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove a subscription with its deliveries and history."""
    _api(ctx, url, token).delete(f"/v1/webhooks/{webhook_id}")
    _stdout().print(f"removed {webhook_id}")


if __name__ == "__main__":  # pragma: no cover
    app()
