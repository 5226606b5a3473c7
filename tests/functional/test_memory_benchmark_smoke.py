"""The memory-store benchmark at toy size: both sides run in their own processes, the
sweep ends and reports every session once (the benchmark checks it), and every figure
is reported. Nothing here is about speed or size: the full run is
``python -m benchmarks.memory_scale``."""
from __future__ import annotations

from benchmarks.memory_scale import measure


def test_the_memory_benchmark_smoke_run_reports_every_figure():
    found = {figure.name: figure for figure in measure(smoke=True, sessions=500)}

    assert set(found) == {
        "RSS per session, session-expiry memory store", "RSS per session, pyramid_beaker memory",
        "sweep pass with nothing due", "touch of one session",
        "sweep pass ending every session",
        "sessions held after their timeout, pyramid_beaker memory"}
    assert found["sessions held after their timeout, pyramid_beaker memory"].value == 500
    assert "session-expiry: 0 after" in found[
        "sessions held after their timeout, pyramid_beaker memory"].comparison
    assert all(figure.value > 0 for name, figure in found.items()
               if not name.startswith("RSS")), found  # RSS of 500 sessions may round to 0
    assert all(figure.met is None for figure in found.values())
