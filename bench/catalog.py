"""Catalog benchmark: search latency over 10,000 catalog entries on SQLite and PostgreSQL, and
the dependency solver's time for a set of 200 plugins with deep ranges.

Run from the repository root::

    .venv/bin/python bench/catalog.py [--entries 10000] [--searches 400] [--runs 20]

The two halves are ``bench/catalog_search.py`` and ``bench/catalog_solver.py`` (each runs on
its own too, with more options); this prints both, one after the other. Figures are reported,
never asserted. The PostgreSQL half needs the server on 127.0.0.1:5432 (the test scripts start
it) and uses a throw-away database it drops afterwards.
"""

from __future__ import annotations

import argparse
import sys

from catalog_search import search_figures
from catalog_solver import solver_figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=10_000, help="catalog entries to search")
    ap.add_argument("--searches", type=int, default=400, help="searches timed per database")
    ap.add_argument("--runs", type=int, default=20, help="solver runs per series")
    args = ap.parse_args(argv)
    print("Summit catalog benchmark")
    print("search")
    for line in search_figures(entries=args.entries, searches=args.searches):
        print(f"  {line}")
    print("solver")
    for line in solver_figures(runs=args.runs):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
