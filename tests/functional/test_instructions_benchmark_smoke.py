"""The instruction count at toy size: the server runs under valgrind, serves the page to
the signed-in browser and stops itself, twice, and valgrind's counts are read. Nothing
here is about the figure's size (at 100 requests the warm-up still weighs): the full run
is ``python -m benchmarks.instructions``. 100 requests (~55M instructions) stand clear of
the ~2M by which two runs' start-ups differ; at 20, with random hash seeds, a CI run
counted fewer instructions for more requests."""
from __future__ import annotations

from benchmarks.instructions import measure


def test_the_instructions_smoke_run_counts_what_more_requests_cost():
    (figure,) = measure(smoke=True)
    assert figure.name == "session-expiry, memory store"
    assert figure.unit == "k instructions" and figure.met is None
    assert figure.value > 0  # 100 more requests executed more instructions
