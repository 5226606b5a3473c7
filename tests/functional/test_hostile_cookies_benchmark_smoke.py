"""The hostile-cookie benchmark runs end to end and reports every row (its speed is judged in
``make bench``, never here)."""
from __future__ import annotations

from benchmarks.hostile_cookies import SECTION, measure


def test_the_hostile_cookie_benchmark_smoke_run_reports_every_setup_and_header():
    figures = measure(smoke=True)
    names = [figure.name for figure in figures if figure.section == SECTION]
    assert len(names) == 2 + 4 + 2
    assert sum(name.endswith("normal header") for name in names) == 2
    assert all(figure.value > 0 for figure in figures)
    assert all(figure.met is None for figure in figures), "a smoke run judges nothing"
