"""The instruction count at toy size: the server runs under valgrind, serves the page to
the signed-in browser and stops itself, twice, and valgrind's counts are read. Nothing
here is about the figure's size (20 requests are mostly warm-up): the full run is
``python -m benchmarks.instructions``."""
from __future__ import annotations

from benchmarks.instructions import measure


def test_the_instructions_smoke_run_counts_what_more_requests_cost():
    (figure,) = measure(smoke=True)
    assert figure.name == "session-expiry, memory store"
    assert figure.unit == "k instructions" and figure.met is None
    assert figure.value > 0  # 20 more requests executed more instructions
