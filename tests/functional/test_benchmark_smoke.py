"""The HTTP benchmark's harness runs end to end (every variant serves, signs in and is
loaded by wrk for a second) and reports every figure. Nothing here is about speed: the
figures of a one-second run on a shared machine mean nothing."""
from __future__ import annotations

from benchmarks.http_peers import LABELS, ORDER, measure


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
