"""The sweeper benchmark's harness at toy size: it sweeps with the real ``session-sweeper``
command (one process and four at once), checks the database after each sweep, and
reports every figure. Nothing here is about speed: the full run
(``python -m benchmarks.sweeper_scale``) is not part of the suite."""
from __future__ import annotations

import time

import pytest
from benchmarks.sweeper_scale import PROCESSES, Bench, figures

from session_expiry.settings import Policy
from session_expiry.stores.sql import SqlStore, engine_for

SESSIONS = 400


@pytest.fixture(scope="module")
def bench(postgres, tmp_path_factory):
    bench = Bench(postgres, SESSIONS, tmp_path_factory.mktemp("sweeper-scale"))
    bench.load()
    yield bench
    bench.close()


def test_every_sweeper_run_ends_each_session_once_and_the_figures_are_reported(bench):
    runs = {"bare": [bench.bare()]}
    runs.update({f"{n}": [bench.sweepers(n)] for n in PROCESSES})  # each run is checked

    found = {figure.name: figure for figure in figures(runs, SESSIONS, smoke=True)}

    assert set(found) == {"bare DELETE ... RETURNING into the log (floor)",
                          "session-sweeper, 1 process", "session-sweeper, 4 processes",
                          "peak RSS of a sweeper process"}
    assert all(figure.value > 0 for figure in found.values()), found
    assert all(figure.met is None for figure in found.values()), "a smoke run judges nothing"
    assert 20 < found["peak RSS of a sweeper process"].value < 1000, "MB, from wait4"


def test_the_check_refuses_a_sweep_that_left_sessions_open(bench):
    url = bench.copy()  # nothing swept
    try:
        with pytest.raises(SystemExit, match="'still_open': 400"):
            bench.check(url, log_lines=0)
    finally:
        bench.drop(url)


def test_the_check_refuses_a_sweep_whose_log_lines_do_not_match(bench):
    url = bench.copy()
    try:
        store = SqlStore(engine_for(url), Policy(store_type="expiry:sql", sweep_interval=None),
                         clock=time.time)
        store.sweep(int(time.time()))
        store.close()
        bench.check(url, log_lines=SESSIONS)  # the database is right
        with pytest.raises(SystemExit, match="log lines"):
            bench.check(url, log_lines=SESSIONS - 1)
    finally:
        bench.drop(url)
