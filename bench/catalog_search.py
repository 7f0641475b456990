"""Catalog search latency over a generated catalog of 10,000 plugins, on SQLite and PostgreSQL.

Builds a seeded catalog (same seed, same catalog): plugin names, descriptions, keywords and
READMEs (80-400 words) drawn from a 3,000-word made-up vocabulary with a Zipf-like skew, as in
real text, plus a few domain words; 1-2 extension points, 1-2 of 12 categories, 0-3
permissions, a third of them signed, one in ten with a second version. Every plugin goes
through ``store.catalog.publish_version`` (the real path: namespace check, version row, tags,
full-text index), into a fresh SQLite file and into a fresh PostgreSQL database that is
dropped afterwards (``tests.conftest.temp_database``).

Then it times ``store.catalog.search`` as the API calls it: one session per search, a page of
20 with the facet counts and the total. The same seeded query mix runs on both databases, a
quarter of each kind: one word, a prefix of 3-4 letters (what someone typing sends), two
words, and one word with a facet filter (an extension point or a category). Twenty uncounted
searches warm each database first.

Prints p50/p99 (ms) per database and per kind, the fill time, and a one-line summary. No figure
is asserted anywhere; ``search_figures()`` returns the lines so another benchmark
(``bench/catalog.py``) can print them too.

    .venv/bin/python bench/catalog_search.py [--entries 10000] [--searches 400] [--seed 11]
        [--only sqlite|postgres]

PostgreSQL is reached as the tests reach it (``SUMMIT_TEST_PG``, by default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from summit_sdk.manifest import parse_manifest  # noqa: E402

from orchestrator.store import catalog  # noqa: E402
from orchestrator.store.db import Engine, make_engine, migrate, session_scope  # noqa: E402
from tests.conftest import temp_database  # noqa: E402

POINTS = ("data_source", "analyzer", "visualization", "export", "auth_provider", "workflow")
CATEGORIES = (
    "text",
    "charts",
    "files",
    "weather",
    "finance",
    "security",
    "maps",
    "ops",
    "crm",
    "media",
    "science",
    "social",
)
PERMISSIONS = ("read:data", "write:data", "network:access", "storage", "secrets:read")
DOMAIN_WORDS = (
    "weather",
    "forecast",
    "chart",
    "export",
    "spreadsheet",
    "invoice",
    "login",
    "scanner",
    "tiles",
    "translate",
    "summary",
    "sentiment",
)
# Consonant-vowel syllables, glued into made-up words of two to four.
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
BATCH = 250
WARMUP = 20


@dataclass
class Vocabulary:
    words: list[str]
    weights: list[float]
    rng: random.Random

    def pick(self, n: int) -> list[str]:
        return self.rng.choices(self.words, weights=self.weights, k=n)


def make_vocabulary(rng: random.Random, size: int = 3000) -> Vocabulary:
    words: set[str] = set(DOMAIN_WORDS)
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    # Zipf-like: the k-th most common word appears about 1/k as often as the first.
    return Vocabulary(ordered, [1.0 / (k + 1) for k in range(len(ordered))], rng)


@dataclass
class Entry:
    plugin_id: str
    name: str
    description: str
    readme: str
    keywords: list[str]
    categories: list[str]
    points: list[str]
    permissions: list[str]
    signed: bool
    versions: list[str]


def make_entries(count: int, seed: int) -> tuple[list[Entry], Vocabulary]:
    rng = random.Random(seed)
    vocab = make_vocabulary(rng)
    entries = []
    for i in range(count):
        name_words = vocab.pick(2)
        entries.append(
            Entry(
                plugin_id=f"com.bench.{name_words[0]}-{i:05d}",
                name=" ".join(w.capitalize() for w in name_words),
                description=" ".join(vocab.pick(rng.randint(6, 16))),
                readme=" ".join(vocab.pick(rng.randint(80, 400))),
                keywords=sorted(set(vocab.pick(3))),
                categories=rng.sample(CATEGORIES, rng.randint(1, 2)),
                points=rng.sample(POINTS, rng.randint(1, 2)),
                permissions=rng.sample(PERMISSIONS, rng.randint(0, 3)),
                signed=rng.random() < 0.33,
                versions=["1.0.0", "1.1.0"] if rng.random() < 0.1 else ["1.0.0"],
            )
        )
    return entries, vocab


@dataclass(frozen=True)
class Query:
    kind: str
    arguments: dict[str, Any]


def make_queries(vocab: Vocabulary, count: int, seed: int) -> list[Query]:
    rng = random.Random(seed + 1)
    vocab.rng = rng
    queries = []
    for i in range(count):
        kind = ("word", "prefix", "two words", "word + facet")[i % 4]
        # Words people search for are the commoner ones: draw from the top fifth.
        word = rng.choice(vocab.words[: len(vocab.words) // 5])
        if kind == "word":
            arguments: dict[str, Any] = {"q": word}
        elif kind == "prefix":
            arguments = {"q": word[: rng.randint(3, 4)]}
        elif kind == "two words":
            arguments = {"q": f"{word} {rng.choice(vocab.words[:300])}"}
        elif rng.random() < 0.5:
            arguments = {"q": word, "point": rng.choice(POINTS)}
        else:
            arguments = {"q": word, "category": rng.choice(CATEGORIES)}
        queries.append(Query(kind, arguments))
    return queries


def fill(engine: Engine, entries: Sequence[Entry]) -> None:
    with session_scope(engine) as s:
        catalog.add_publisher(s, publisher_id="bench", name="Bench")
        catalog.claim_namespace(s, publisher_id="bench", prefix="com.bench.")
    for start in range(0, len(entries), BATCH):
        with session_scope(engine) as s:
            for entry in entries[start : start + BATCH]:
                for n, version in enumerate(entry.versions):
                    manifest = parse_manifest(
                        {
                            "schema_version": 1,
                            "id": entry.plugin_id,
                            "name": entry.name,
                            "version": version,
                            "description": entry.description,
                            "runtime": {"image": "registry.example.com/bench"},
                            "extensions": [
                                {"point": p, "name": f"ext-{k}"} for k, p in enumerate(entry.points)
                            ],
                            "permissions": entry.permissions,
                        }
                    )
                    catalog.publish_version(
                        s,
                        manifest=manifest,
                        image=f"registry.example.com/bench@sha256:{n:064x}",
                        publisher="bench",
                        published_by="bench",
                        readme=entry.readme,
                        keywords=entry.keywords,
                        categories=entry.categories,
                        signature={"key_id": "bench"} if entry.signed else None,
                        signature_status="verified" if entry.signed else "unsigned",
                    )


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Run:
    database: str
    fill_s: float
    times_ms: dict[str, list[float]] = field(default_factory=dict)
    hits: int = 0

    @property
    def all_ms(self) -> list[float]:
        return [t for series in self.times_ms.values() for t in series]


def timed_searches(engine: Engine, queries: Sequence[Query], run: Run) -> None:
    for query in queries[:WARMUP]:
        with session_scope(engine) as s:
            catalog.search(s, **query.arguments)
    for query in queries:
        started = time.perf_counter()
        with session_scope(engine) as s:
            page = catalog.search(s, **query.arguments)
        run.times_ms.setdefault(query.kind, []).append((time.perf_counter() - started) * 1000)
        run.hits += page.total


def server_version(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    return f"PostgreSQL {str(version).split()[0]}"


@contextmanager
def database(kind: str) -> Iterator[Engine]:
    with (
        tempfile.TemporaryDirectory(prefix="summit-bench-catalog-") as tmp,
        temp_database(kind, Path(tmp)) as url,
    ):
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def run_database(kind: str, entries: Sequence[Entry], queries: Sequence[Query]) -> Run:
    with database(kind) as engine:
        started = time.perf_counter()
        fill(engine, entries)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # fresh statistics, as autovacuum would soon give
                conn.execute(sa.text("ANALYZE"))
        run = Run(server_version(engine), time.perf_counter() - started)
        timed_searches(engine, queries, run)
    return run


def search_figures(
    entries: int = 10_000,
    searches: int = 400,
    seed: int = 11,
    databases: Sequence[str] = ("sqlite", "postgres"),
) -> list[str]:
    """The benchmark's lines, for this script or another one to print."""
    catalog_entries, vocab = make_entries(entries, seed)
    queries = make_queries(vocab, searches, seed)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"nproc {len(os.sched_getaffinity(0))}, load average {load}, "
        f"python {platform.python_version()}",
        f"catalog search: {entries:,} plugins, {searches} searches (word, prefix, two words, "
        f"word + facet filter), page of 20 with facets and total, seed {seed}",
    ]
    summary = []
    for kind in databases:
        run = run_database(kind, catalog_entries, queries)
        all_ms = run.all_ms
        p50, p99 = percentile(all_ms, 50), percentile(all_ms, 99)
        lines.append(
            f"{run.database}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(fill {run.fill_s:.0f} s, {run.hits / len(all_ms):.0f} matches per search)"
        )
        for series, times in run.times_ms.items():
            lines.append(
                f"  {series:<13} p50 {percentile(times, 50):6.1f} ms  "
                f"p99 {percentile(times, 99):6.1f} ms  (n={len(times)})"
            )
        summary.append(f"{run.database.split()[0]} p50 {p50:.1f} / p99 {p99:.1f} ms")
    lines.append(f"summary: catalog search over {entries:,} plugins: " + "; ".join(summary))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    databases = (args.only,) if args.only else ("sqlite", "postgres")
    for line in search_figures(args.entries, args.searches, args.seed, databases):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
