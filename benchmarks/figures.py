"""What every benchmark returns, and the one table ``make bench`` prints.

Each benchmark module has ``measure(smoke: bool) -> list[Figure]``: ``smoke``
runs tiny sizes in seconds (``make test`` runs it; nothing is asserted about
speed there), the full run the sizes the performance issue names.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure, with what it is compared with and whether a target is met."""

    section: str           # "HTTP", "Sweeper", "Memory store", "Report", "Browser"
    name: str              # what was measured, e.g. "session-expiry, memory store"
    value: float
    unit: str              # "req/s", "s", "ms", "MB", "KiB", "requests"
    comparison: str = ""   # e.g. "1.62x classic memory (target >= 1.5x)"
    met: bool | None = None  # None: no target for this figure


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def paired_ratio(values: Sequence[float], bases: Sequence[float]) -> float:
    """The median of the rounds' ratios: the two variants of a round are timed close
    together, so load from the machine's other tenants that comes and goes between
    rounds touches both alike."""
    return median(value / base if base else float("inf")
                  for value, base in zip(values, bases, strict=True))


def ratio_note(ratio: float, base_name: str, target: float | None = None):
    """``"1.62x classic memory (target >= 1.5x)"`` and whether the target is met."""
    note = f"{ratio:.2f}x {base_name}"
    if target is None:
        return note, None
    return f"{note} (target >= {target:g}x)", ratio >= target


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(figures: Iterable[Figure]) -> str:
    """A Markdown table, section by section, in the order measured."""
    lines = ["| section | figure | value | compared | target |", "|---|---|---:|---|---|"]
    for figure in figures:
        target = {True: "met", False: "MISSED", None: ""}[figure.met]
        lines.append(f"| {figure.section} | {figure.name} | {_number(figure.value)} "
                     f"{figure.unit} | {figure.comparison} | {target} |")
    return "\n".join(lines)


def report(figures: list[Figure]) -> int:
    """Print the table of ``figures``; the exit status of a benchmark run alone: 1 if a
    target is missed."""
    print("\n" + table(figures))
    return 1 if any(figure.met is False for figure in figures) else 0
