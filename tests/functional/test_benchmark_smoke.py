"""The HTTP benchmark's harness runs end to end (every variant serves, signs in and is
loaded by wrk for a second) and reports every figure. Nothing here is about speed: the
figures of a one-second run on a shared machine mean nothing."""
from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.http_peers import FREE, LABELS, ORDER, PLACEMENT, measure, on


def test_the_http_benchmark_smoke_run_measures_every_variant_and_counts_writes():
    figures = measure(smoke=True)
    rates = {figure.name: figure.value for figure in figures if figure.section == "HTTP"}
    assert set(rates) == {LABELS[name] for name in ORDER}
    assert all(rate > 0 for rate in rates.values()), rates
    assert all(figure.met is None for figure in figures), "a smoke run judges nothing"
    writes = {figure.name: figure for figure in figures if figure.section == "Store writes"}
    classic = writes[LABELS["classic_database"]]
    ours = writes[LABELS["expiry_postgresql"]]
    # Beaker's ext:database writes on every request; session-expiry at most once per
    # touch_interval (two minutes here: the smoke run is over long before).
    assert classic.value >= 10, classic
    assert ours.value <= 1, ours
    # The memory variants again, their threads free on every core (where there are two).
    free = {figure.name for figure in figures if figure.section == "HTTP, threads free"}
    assert free == ({LABELS[name] for name in FREE} if PLACEMENT else set())


def test_a_placed_command_and_every_thread_it_starts_run_on_the_core_given():
    core = max(os.sched_getaffinity(0))
    script = ("import os, threading; seen = []; "
              "thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0))); "
              "thread.start(); thread.join(); print(sorted(os.sched_getaffinity(0)), "
              "sorted(seen[0]))")
    out = subprocess.run(on({core}, [sys.executable, "-c", script]), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [f"[{core}]", f"[{core}]"]
    assert on(None, ["wrk"]) == ["wrk"]
