"""The report's read model: what every store answers the report with (:class:`ReportReads`),
and the pure types and functions that turn raw rows into figures. No I/O.

The stores answer the report's questions with raw rows (counts grouped by hour,
reason and length bucket; a page of records); this module turns them into what
the pages, the CSV export and ``/metrics`` show. It sits beside the lifecycle
contract (:mod:`session_expiry.stores.contract`), not inside the report, so that
the stores depend on nothing above them.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ..decision import END_REASONS, REFUSAL_REASONS

#: The report looks back this far: "in the last 24 h".
WINDOW = 24 * 3600
HOUR = 3600
HOURS = WINDOW // HOUR

#: Upper edges (seconds, exclusive) of the session-length histogram's buckets;
#: the last bucket holds everything longer.
LENGTH_EDGES = (60, 5 * 60, 20 * 60, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR)
LENGTH_LABELS = ("< 1 min", "1–5 min", "5–20 min", "20–60 min", "1–2 h", "2–4 h", "4–8 h",
                 "8 h or more")

#: Rows per page of a list.
PAGE_SIZE = 50


def length_bucket(duration: int) -> int:
    """The histogram bucket of a session that lasted ``duration`` seconds."""
    for index, edge in enumerate(LENGTH_EDGES):
        if duration < edge:
            return index
    return len(LENGTH_EDGES)


def hours_ago(ended_at: int, now: int) -> int:
    """The chart column of an end: 0 for the last hour, 23 for 23 to 24 hours ago."""
    return min(HOURS - 1, max(0, (now - ended_at) // HOUR))


def percentile(sorted_values: Sequence[int], fraction: float) -> int | None:
    """The nearest-rank percentile of ascending ``sorted_values`` (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class EndCount:
    """Sessions that ended ``hours_ago`` hours ago, for ``reason``, in length ``bucket``."""

    hours_ago: int
    reason: str
    bucket: int
    count: int


@dataclass(frozen=True)
class Summary:
    """The top of the report: the last 24 hours at ``now``."""

    now: int
    active: int
    started: int
    ended_by_reason: dict[str, int]
    refused_by_reason: dict[str, int]
    #: [hours_ago][reason] -> ends; index 0 is the last hour.
    ends_per_hour: list[dict[str, int]]
    length_histogram: list[int]
    median_length: int | None
    p90_length: int | None
    #: Age of the oldest open session past its deadline: how late end events are.
    sweeper_lag: int

    @property
    def ended(self) -> int:
        return sum(self.ended_by_reason.values())

    @property
    def refused(self) -> int:
        return sum(self.refused_by_reason.values())


def summarize(now: int, *, active: int, started: int, end_counts: Iterable[EndCount],
              refusals: Iterable[tuple[str, int]], lengths: tuple[int | None, int | None],
              sweeper_lag: int) -> Summary:
    """Fold the stores' raw rows into a :class:`Summary`."""
    ended: Counter = Counter({str(reason): 0 for reason in END_REASONS})
    per_hour = [dict.fromkeys(map(str, END_REASONS), 0) for _ in range(HOURS)]
    histogram = [0] * (len(LENGTH_EDGES) + 1)
    for row in end_counts:
        ended[row.reason] += row.count
        per_hour[row.hours_ago][row.reason] = per_hour[row.hours_ago].get(row.reason, 0) \
            + row.count
        histogram[row.bucket] += row.count
    refused: Counter = Counter({str(reason): 0 for reason in REFUSAL_REASONS})
    for reason, count in refusals:
        refused[reason] += count
    return Summary(now=now, active=active, started=started, ended_by_reason=dict(ended),
                   refused_by_reason=dict(refused), ends_per_hour=per_hour,
                   length_histogram=histogram, median_length=lengths[0],
                   p90_length=lengths[1], sweeper_lag=max(0, sweeper_lag))


# -- lists: sorting, filtering, keyset pagination -------------------------------------------------

class ActiveSort(StrEnum):
    """How the list of active sessions is ordered; each has its natural direction."""

    STARTED = "started"  # newest first
    LAST_SEEN = "last_seen"  # most recently seen first
    REMAINING = "remaining"  # soonest to end first

    @property
    def descending(self) -> bool:
        return self is not ActiveSort.REMAINING


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after the row with this sort value (epoch seconds) and key."""

    value: int
    key: str

    def __str__(self) -> str:
        return f"{self.value}.{self.key}"


_CURSOR = re.compile(r"(\d{1,12})\.([0-9a-f]{64})")
_KEY = re.compile(r"[0-9a-f]{64}")
#: The last second every store can hold (an SQL timestamp ends with the year 9999): no
#: cursor points past it.
LATEST = 253402300799


def parse_cursor(text: str | None) -> Cursor | None:
    """A cursor from a query string; anything malformed or out of range means "the first
    page"."""
    match = _CURSOR.fullmatch(text or "")
    if not match or int(match[1]) > LATEST:
        return None
    return Cursor(int(match[1]), match[2])


def is_session_key(text: str | None) -> bool:
    """True for a store key (the SHA-256 hex of a session id) as the pages post it."""
    return bool(_KEY.fullmatch(text or ""))


@dataclass(frozen=True)
class ActiveQuery:
    now: int
    sort: ActiveSort = ActiveSort.LAST_SEEN
    user_id: str | None = None
    after: Cursor | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class EndsQuery:
    reason: str | None = None
    user_id: str | None = None
    after: Cursor | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class Page:
    """One page of a list, and the cursor of the next page (None on the last)."""

    rows: list = field(default_factory=list)
    next: Cursor | None = None


def sort_value(record, sort: ActiveSort) -> int:
    """The value an active session is ordered by."""
    if sort is ActiveSort.STARTED:
        return record.created
    if sort is ActiveSort.LAST_SEEN:
        return record.last_seen
    return record.deadline


def page_of(rows: list, limit: int, cursor_of) -> Page:
    """A page from ``limit + 1`` fetched rows: the extra one only says there is more."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, cursor_of(rows[-1]))
    return Page(rows, None)


def after_cursor(value: int, key: str, cursor: Cursor | None, descending: bool) -> bool:
    """True when (value, key) comes after ``cursor`` in the list's order."""
    if cursor is None:
        return True
    if descending:
        return (value, key) < (cursor.value, cursor.key)
    return (value, key) > (cursor.value, cursor.key)


class ReportReads(Protocol):
    """What the report, ``/metrics`` and the CSV export read from a store."""

    def count_refusal(self, reason: str, now: int) -> None:
        """Count one request refused for ``reason`` (the store may buffer the count)."""

    def summary(self, now: int) -> Summary:
        """The report's figures for the last 24 hours."""

    def active_sessions(self, query: ActiveQuery) -> Page:
        """A page of open sessions before their deadline (rows: ``SessionRecord``)."""

    def recent_ends(self, query: EndsQuery) -> Page:
        """A page of ended sessions, newest first (rows: ``SessionEnded``)."""
