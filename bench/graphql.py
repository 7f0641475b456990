"""GraphQL benchmark: one query for 50 plugins with their versions and usage, against the REST
calls a client needs for the same answer.

Run from the repository root::

    .venv/bin/python bench/graphql.py [--plugins 50] [--rounds 200]

It fills a throw-away SQLite database before the orchestrator starts: ``--plugins`` plugins
(LOADED, so nothing is started or reconciled), each with two stored versions, a grant and a
fresh usage sample, written with the store's own functions (building 50 images would time
Docker, not the API). Then it starts an orchestrator on that database (``bench/_harness.py``)
and times, ``--rounds`` times each after a few uncounted warm-up rounds:

* GraphQL: ``POST /graphql`` ``{ plugins(limit: N) { id state version manifest
  grantedPermissions versions { version installedAt } usage { at usage { memoryUsedMb
  cpuTimeMs calls } } } }``: one request, whose DataLoaders read each kind of part once;
* REST: ``GET /v1/plugins`` (the plugins with their manifests and grants), then
  ``GET /v1/plugins/{id}/usage`` for each plugin, one after the other over one keep-alive
  connection, as a simple client would (REST has no list of a plugin's stored versions; the
  GraphQL query answers more).

It prints p50 and p99 (ms) of each and their ratio. Figures are reported, never asserted.
Everything it creates (the orchestrator, its folder and database) is removed on exit, on error
and on Ctrl-C.

The orchestrator runs this module's :func:`app` (``create_app`` with ``/graphql`` mounted if
the app does not mount it itself), so the script does not depend on how the app is wired.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

BENCH = Path(__file__).resolve().parent

if __name__ == "graphql":
    # This file is named like graphql-core, and a script run from bench/ (or a test that puts
    # bench/ on sys.path) finds it first: whatever imported ``graphql`` gets graphql-core.
    import importlib.machinery
    import importlib.util

    _elsewhere = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    _spec = importlib.machinery.PathFinder.find_spec("graphql", _elsewhere)
    if _spec is None or _spec.loader is None:
        raise ImportError("graphql-core is not installed")
    _core = importlib.util.module_from_spec(_spec)
    sys.modules["graphql"] = _core  # the import system hands out what is here at the end
    _spec.loader.exec_module(_core)
QUERY = """query($n: Int!) { plugins(limit: $n) {
  id state version manifest grantedPermissions
  versions { version installedAt }
  usage { at usage { memoryUsedMb cpuTimeMs calls } }
} }"""
WARMUP = 10


def app() -> FastAPI:
    """The orchestrator app the benchmark's subprocess serves (``uvicorn --factory``)."""
    from orchestrator.api.graphql import make_graphql_router
    from orchestrator.app import create_app
    from orchestrator.config import get_settings

    settings = get_settings()
    application = create_app(settings)
    if not any(getattr(route, "path", None) == "/graphql" for route in application.routes):
        application.include_router(make_graphql_router(settings))
    return application


def fill(database_url: str, n: int) -> None:
    """``n`` LOADED plugins, each with two versions, a grant and a usage sample taken now."""
    from orchestrator.monitor.series import UsageSeries
    from orchestrator.store import crud
    from orchestrator.store.db import make_engine, migrate, session_scope

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            for i in range(n):
                pid = f"com.bench.plugin{i:03d}"
                crud.add_plugin(
                    session,
                    plugin_id=pid,
                    version="1.1.0",
                    state="LOADED",
                    config={},
                    resources={"memory_mb": 256, "cpu_percent": 50},
                )
                for version in ("1.0.0", "1.1.0"):
                    crud.add_version(
                        session,
                        plugin_id=pid,
                        version=version,
                        manifest={"id": pid, "name": f"Plugin {i}", "version": version},
                        image=f"summit/{pid}:{version}",
                        image_id=None,
                        source="image",
                        source_digest=None,
                    )
                crud.set_grants(session, plugin_id=pid, permissions=["read:data"])
        UsageSeries(engine).record(
            [
                {
                    "plugin_id": f"com.bench.plugin{i:03d}",
                    "memory_bytes": (20 + i) * 1024 * 1024,
                    "cpu_total_usec": 1_000_000 * i,
                    "calls_total": 10 * i,
                }
                for i in range(n)
            ]
        )
    finally:
        engine.dispose()


def timed(fn: Any, rounds: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--plugins", type=int, default=50, help="plugins in the database")
    ap.add_argument("--rounds", type=int, default=200, help="timed rounds of each")
    args = ap.parse_args(argv)
    if args.plugins < 1 or args.rounds < 1:
        ap.error("--plugins and --rounds must be >= 1")

    import docker
    from _harness import Orchestrator, machine_line, percentile, sigterm_as_interrupt

    class GraphQLOrchestrator(Orchestrator):
        """The harness's orchestrator, serving :func:`app`."""

        def start(self) -> None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
            env.update(
                SUMMIT_DATABASE_URL=f"sqlite:///{self.root / 'summit.db'}",
                SUMMIT_STATE_DIR=str(self.root / "state"),
                SUMMIT_INSTANCE=self.instance,
                SUMMIT_ADMIN_TOKEN=self.token,
                SUMMIT_SHUTDOWN_GRACE_S="3",
                SUMMIT_IDLE_PAUSE_S="0",
            )
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "bench.graphql:app",
                        "--factory",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--log-level",
                        "warning",
                    ],
                    cwd=BENCH.parent,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=60)
    root = Path(tempfile.mkdtemp(prefix="sb-gql-", dir="/tmp"))
    orch = GraphQLOrchestrator(
        root, f"summit-bench-{secrets.token_hex(3)}", token=secrets.token_urlsafe(24)
    )
    print("Summit GraphQL benchmark")
    print(machine_line(dk))
    try:
        fill(f"sqlite:///{root / 'summit.db'}", args.plugins)
        orch.start()
        orch.wait_ready()
        client = orch.client

        def graphql() -> None:
            r = client.post("/graphql", json={"query": QUERY, "variables": {"n": args.plugins}})
            body = r.json()
            if r.status_code != 200 or body.get("errors"):
                raise RuntimeError(f"/graphql -> {r.status_code}: {r.text[:2000]}")
            if len(body["data"]["plugins"]) != args.plugins:
                raise RuntimeError("/graphql answered the wrong number of plugins")

        def rest() -> None:
            plugins = orch.call("GET", "/v1/plugins").json()
            if len(plugins) != args.plugins:
                raise RuntimeError("GET /v1/plugins answered the wrong number of plugins")
            for plugin in plugins:
                orch.call("GET", f"/v1/plugins/{plugin['id']}/usage")

        gql_ms = timed(graphql, args.rounds)
        rest_ms = timed(rest, args.rounds)
        print(
            f"{args.plugins} plugins with versions and usage, {args.rounds} rounds each "
            f"(after {WARMUP} uncounted), SQLite, one keep-alive connection:"
        )
        rows = [("GraphQL: 1 request", gql_ms), (f"REST: {1 + args.plugins} requests", rest_ms)]
        for name, values in rows:
            print(
                f"  {name:<22} p50 {percentile(values, 50):8.2f} ms   "
                f"p99 {percentile(values, 99):8.2f} ms"
            )
        ratio = percentile(rest_ms, 50) / percentile(gql_ms, 50)
        print(f"  REST p50 / GraphQL p50: {ratio:.1f} x")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            orch.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
