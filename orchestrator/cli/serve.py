"""``summit serve`` and ``summit worker``: the commands that run the orchestrator's processes.

Both read the ``SUMMIT_*`` settings; the service's modules (FastAPI, Docker, SQL) are imported
inside the commands so that the client commands start quickly.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.errors import CliError, fail

if TYPE_CHECKING:
    from orchestrator.config import Settings


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
        fail(CliError("invalid_setting", str(exc)), verbose=False)
    if (
        settings.admin_token == DEV_ADMIN_TOKEN
        and not (dev or settings.dev)
        and not _loopback(host)
    ):
        fail(
            CliError(
                "insecure_admin_token",
                f"refusing to listen on {host} with the default admin token, which anyone "
                "who can reach the port may use: set SUMMIT_ADMIN_TOKEN to a secret, or pass "
                "--dev (SUMMIT_DEV=true) for a development machine",
            ),
            verbose=False,
        )
    _check_backend(settings)
    run_server(settings, host=host, port=port, log_level=log_level)


def _check_backend(settings: Settings) -> None:
    """Refuse, in one line, a container backend the settings cannot make (a Kubernetes
    runtime that does not know its namespace, a host API nobody could be told of), before
    anything starts."""
    from orchestrator.api.host.server import advertised_host_url
    from orchestrator.runtime.select import make_backend

    try:
        make_backend(settings)
        if settings.host_api_port:
            advertised_host_url(
                settings.host_api_address, settings.host_api_port, os.environ.get("POD_IP")
            )
    except (ValueError, OSError) as exc:
        fail(CliError("invalid_setting", str(exc)), verbose=False)


def _loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


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
        fail(CliError("invalid_settings", str(exc)), verbose=False)
    missing = [
        env
        for env, field in (
            ("SUMMIT_DATABASE_URL", "database_url"),
            ("SUMMIT_REDIS_URL", "redis_url"),
        )
        if field not in settings.model_fields_set or not getattr(settings, field)
    ]
    if missing:
        needs = " and ".join(missing)
        fail(CliError("not_configured", f"summit worker needs {needs}"), verbose=False)
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
