"""The browser benchmark's harness at its shortest: it counts a five-tab browser's status
requests and times a push, and reports both figures. Its judgement of them is the full
run's (``python -m benchmarks.browser_figures``); tests/browser/test_tabs.py and
test_countdown.py hold the behaviour itself."""
from __future__ import annotations

from benchmarks.browser_figures import TABS, measure


def test_the_browser_benchmark_smoke_run_reports_both_figures(chromium):
    polls, push = measure(smoke=True, intervals=1, sessions=1, browser=chromium)

    assert polls.name == f"status requests per poll interval, {TABS} tabs"
    assert 0 < polls.value < TABS, "one poller for the five tabs, and it polls"
    assert push.name == "push after the deadline, latest"
    assert -1 < push.value < 5, "the page moved to the expired page near its deadline"
    assert polls.met is None and push.met is None
