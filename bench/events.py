"""Event delivery benchmark: a burst of events to one webhook on a local receiver.

Run from the repository root::

    .venv/bin/python bench/events.py [--events 10000] [--batch 1000] [--subscriptions 1]

One run:

1. starts its own orchestrator on a free port with a throw-away SQLite database and state
   folder, allowed to deliver to 127.0.0.0/8 (``SUMMIT_WEBHOOK_ALLOW_PRIVATE``);
2. starts a keep-alive HTTP receiver on loopback (``tests/fixtures/receiver.py``, asyncio in
   this process) and registers ``--subscriptions`` webhooks on it for ``bench.*``;
3. emits ``--events`` events through ``POST /v1/events/batch`` (``--batch`` per request),
   timing acceptance, then waits until the receiver has every delivery;
4. prints the accept rate, the delivery rate (deliveries / time from the first emit to the
   last delivery), the deliveries' own latency percentiles from the history, retries and
   duplicates. Target: at least 1000 deliveries per second. Figures are printed, never asserted.

The receiver and the load generator share this machine's two cores with the orchestrator.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

from _harness import REPO, Orchestrator, machine_line, nproc, percentile, process_cpu_s

sys.path.insert(0, str(REPO))

import docker
import sqlalchemy as sa

from tests.conftest import temp_database
from tests.fixtures.receiver import Receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--subscriptions", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--postgres", action="store_true", help="a throw-away PostgreSQL database, not SQLite"
    )
    args = parser.parse_args()

    dk = docker.from_env()
    print(machine_line(dk), f"cores={nproc()}")
    with (
        tempfile.TemporaryDirectory(prefix="summit-bench-events-") as tmp,
        temp_database("postgres" if args.postgres else "sqlite", Path(tmp)) as database_url,
        Receiver() as rx,
    ):
        rx.record_bodies = False
        orch = Orchestrator(
            Path(tmp),
            f"summit-bench-{secrets.token_hex(3)}",
            secrets.token_urlsafe(16),
            {
                "SUMMIT_DATABASE_URL": database_url,
                "SUMMIT_WEBHOOK_ALLOW_PRIVATE": '["127.0.0.0/8"]',
                "SUMMIT_DELIVERY_POLL_S": "0.2",
            },
        )
        orch.start()
        try:
            orch.wait_ready()
            paths = [f"/bench{i}" for i in range(args.subscriptions)]
            for path in paths:
                orch.call("POST", "/v1/webhooks", json={"url": rx.url(path), "types": ["bench.*"]})
            owed = args.events * len(paths)
            assert orch.pid is not None
            cpu_before = process_cpu_s(orch.pid) or 0.0
            own_before = time.process_time()
            started = time.perf_counter()
            for start in range(0, args.events, args.batch):
                batch = [
                    {"type": "bench.tick", "subject": f"s{i % 16}", "payload": {"n": i}}
                    for i in range(start, min(args.events, start + args.batch))
                ]
                orch.call("POST", "/v1/events/batch", json={"events": batch})
            accepted = time.perf_counter() - started
            deadline = time.monotonic() + args.timeout
            while rx.count < owed and time.monotonic() < deadline:
                time.sleep(0.02)
            done = time.perf_counter() - started
            orch_cpu = (process_cpu_s(orch.pid) or 0.0) - cpu_before
            own_cpu = time.process_time() - own_before
            got = rx.count
            distinct = sum(len(set(rx.event_ids(p))) for p in paths)
            time.sleep(1.0)  # let the last results reach the database
        finally:
            orch.stop()
        engine = sa.create_engine(database_url)
        with engine.connect() as db:
            latencies = [
                r[0] for r in db.execute(sa.text("SELECT latency_ms FROM delivery_attempts"))
            ]
            retried = db.execute(
                sa.text("SELECT count(*) FROM deliveries WHERE attempts > 1")
            ).scalar_one()
            errors = db.execute(
                sa.text(
                    "SELECT a.error, count(*) FROM delivery_attempts a "
                    "WHERE a.error IS NOT NULL GROUP BY 1 LIMIT 5"
                )
            ).all()
        engine.dispose()

    print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}")
    print(f"events {args.events} x subscriptions {len(paths)} = {owed} deliveries owed")
    print(f"accepted in {accepted:.2f} s ({args.events / accepted:,.0f} events/s)")
    print(
        f"delivered {got} ({distinct} distinct) in {done:.2f} s from the first emit: "
        f"{got / done:,.0f} deliveries/s (target >= 1,000)"
    )
    if latencies:
        print(
            f"attempt latency p50 {percentile(latencies, 50):.2f} ms, "
            f"p99 {percentile(latencies, 99):.2f} ms; retried deliveries {retried}"
        )
    for error, n in errors:
        print(f"  errors: {n} x {error}")
    print(f"duplicates: {got - distinct}")
    print(
        f"CPU: orchestrator {orch_cpu:.1f} s ({orch_cpu / owed * 1e3:.2f} ms per delivery, "
        f"emitting included), receiver + emitter {own_cpu:.1f} s, over {done:.1f} s wall "
        f"on {nproc()} cores"
    )
    return 0 if distinct == owed else 1


if __name__ == "__main__":
    sys.exit(main())
