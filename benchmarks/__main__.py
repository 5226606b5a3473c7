"""``make bench``: every benchmark, one after another, and one table of their figures.

    .venv/bin/python -m benchmarks            # the full run (tens of minutes)
    .venv/bin/python -m benchmarks --smoke    # every benchmark at toy sizes, in seconds

Each benchmark starts what it needs (its own PostgreSQL or Redis, the app servers, wrk)
and stops it again. The modules run alone too (``python -m benchmarks.<name>``);
docs/performance.md says what each measures and what limits it. Exit code 1
when a figure misses its target (never in ``--smoke``).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from benchmarks.figures import Figure, table

#: (module, its function returning figures), in the order they run.
BENCHMARKS = (
    ("benchmarks.http_peers", "measure"),
    ("benchmarks.instructions", "measure"),
    ("benchmarks.hostile_cookies", "measure"),
    ("benchmarks.report_scale", "figures"),
    ("benchmarks.sweeper_scale", "measure"),
    ("benchmarks.memory_scale", "measure"),
    ("benchmarks.browser_figures", "measure"),
    ("benchmarks.redis_peers", "measure"),
    ("benchmarks.redis_report", "figures"),
    ("benchmarks.redis_sweeper", "measure"),
    ("benchmarks.redis_memory", "measure"),
)


def run(smoke: bool) -> list[Figure]:
    figures: list[Figure] = []
    for module, function in BENCHMARKS:
        print(f"== {module} {'(smoke)' if smoke else ''}", flush=True)
        figures.extend(getattr(importlib.import_module(module), function)(smoke=smoke))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="toy sizes; nothing is judged")
    args = parser.parse_args(argv)
    figures = run(args.smoke)
    print("\n" + table(figures))
    missed = [figure for figure in figures if figure.met is False]
    for figure in missed:
        print(f"MISSED: {figure.section}: {figure.name}: {figure.comparison}")
    return 1 if missed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
