"""How the benchmarks turn rounds into the figures they judge."""
from __future__ import annotations

import pytest
from benchmarks.figures import median, paired_ratio, ratio_note


def test_a_ratio_is_the_median_of_the_rounds_ratios_not_a_ratio_of_medians():
    # Round 2 ran in a spell of load that slowed both variants alike.
    ours, theirs = [3000, 1600, 3300], [2000, 1000, 2000]
    assert paired_ratio(ours, theirs) == 1.6  # the rounds: 1.5, 1.6, 1.65
    assert median(ours) / median(theirs) == 1.5  # what the two medians would have said


def test_rounds_must_pair_up():
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_a_ratio_is_judged_against_its_target():
    assert ratio_note(1.62, "classic memory", 1.5) == (
        "1.62x classic memory (target >= 1.5x)", True)
    assert ratio_note(1.49, "classic memory", 1.5)[1] is False
    assert ratio_note(0.7, "bare") == ("0.70x bare", None)
