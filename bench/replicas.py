"""Replicas benchmark: how long a route change through one replica takes to reach another, and
how long a new supervisor takes to be elected when the old one dies.

Run from the repository root (needs Docker, PostgreSQL and Redis, as the tests do)::

    .venv/bin/python bench/replicas.py [--changes 20] [--failovers 3]

It starts two orchestrators (A and B) of one deployment: one fresh PostgreSQL database, one
Redis, one owner label, one socket folder. It installs ``examples/word-count`` through A, then:

1. "route change": ``enable`` through A, then, from the moment A answers, B is asked (every
   ~2 ms) for an ``all`` fan-out over the analyzer point until the plugin answers in it; then
   ``disable`` through A and B is asked until the plugin is gone from its fan-out. A fan-out
   without a plugin list uses only B's own routes (a named plugin B does not know would be
   looked up in the database at once, which is not what this measures). Each delay is what the
   event stream plus B's re-read took.
2. "failover": the supervisor is SIGKILLed and the time until the other one says it is the
   supervisor (``/readyz`` ``role``, polled every 50 ms) is measured; the killed one is started
   again (as a replica) before the next round.

It prints p50/p99/max of each series with the settings that bound them (``LEADER_LEASE_S``,
``LEADER_RENEW_S``). Figures are printed, never asserted. Everything it made is removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
import psycopg
from _harness import (
    WORD_COUNT_ID,
    Orchestrator,
    copy_word_count,
    machine_line,
    percentile,
    remove_owned_containers,
    sigterm_as_interrupt,
)

from orchestrator.services.bundles import pack_directory

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
POLL_S = 0.002


def fan_out_has(orch: Orchestrator, plugin_id: str) -> bool:
    r = orch.client.post(
        "/v1/extension-points/analyzer/execute", json={"input": {"text": "a b"}, "mode": "all"}
    )
    if r.status_code == 404:  # no provider at all
        return False
    r.raise_for_status()
    return any(item.get("plugin") == plugin_id for item in r.json()["results"])


def wait_for(check, timeout_s: float = 30.0, poll_s: float = POLL_S) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``check()`` is true."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError("the change did not arrive")
        time.sleep(poll_s)
    return time.perf_counter() - started


def role(orch: Orchestrator) -> str | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        return str(httpx.get(f"{orch.url}/readyz", timeout=1).json().get("role"))
    return None


def row(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"{name:<28} n={len(ms):<3} p50={percentile(ms, 50):8.1f} ms  "
        f"p99={percentile(ms, 99):8.1f} ms  max={ms[-1]:8.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20, help="enable/disable rounds")
    parser.add_argument("--failovers", type=int, default=3, help="supervisor kills")
    args = parser.parse_args(argv)
    sigterm_as_interrupt()

    dk = docker.from_env()
    instance = f"summit-bench-{secrets.token_hex(4)}"
    token = secrets.token_urlsafe(16)
    db = f"summit_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    root = Path(tempfile.mkdtemp(prefix="summit-replicas-"))
    settings = {
        "SUMMIT_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "SUMMIT_REDIS_URL": REDIS_URL,
        "SUMMIT_RUN_DIR": str(root / "run"),
        "SUMMIT_SCAN_FAIL_ON": "never",
    }
    replicas: list[Orchestrator] = []

    def start(name: str) -> Orchestrator:
        (root / name).mkdir(exist_ok=True)
        orch = Orchestrator(root / name, instance, token, settings)
        orch.start()
        orch.wait_ready()
        return orch

    try:
        a = start("a")
        replicas.append(a)
        b = start("b")
        replicas.append(b)
        print(machine_line(dk))
        bundle = pack_directory(copy_word_count(root / "src", WORD_COUNT_ID))
        a.call("POST", "/v1/plugins", files={"bundle": ("p.tar.gz", bundle, "application/gzip")})

        reached, dropped = [], []
        for _ in range(args.changes):
            a.call("POST", f"/v1/plugins/{WORD_COUNT_ID}/enable")
            reached.append(wait_for(lambda: fan_out_has(b, WORD_COUNT_ID)))
            a.call("POST", f"/v1/plugins/{WORD_COUNT_ID}/disable")
            dropped.append(wait_for(lambda: not fan_out_has(b, WORD_COUNT_ID)))

        failovers = []
        for _ in range(args.failovers):
            leader = next(r for r in replicas if role(r) == "supervisor")
            other = next(r for r in replicas if r is not leader)
            assert leader.proc is not None
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait(10)
            failovers.append(
                wait_for(lambda other=other: role(other) == "supervisor", 60, poll_s=0.05)
            )
            replicas.remove(leader)
            leader.client.close()
            replicas.append(start(leader.root.name))

        print(row("route change: enable", reached))
        print(row("route change: disable", dropped))
        print(row("failover: new supervisor", failovers))
        print(
            "settings: LEADER_LEASE_S=10 LEADER_RENEW_S=2 (defaults): a new supervisor within "
            "lease + renew = 12 s of the last renewal"
        )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for orch in replicas:
            with contextlib.suppress(Exception):
                orch.uninstall(WORD_COUNT_ID)
                break
        for orch in replicas:
            orch.stop()
        remove_owned_containers(dk, instance)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
