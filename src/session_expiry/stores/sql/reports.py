"""The SQL store's answers to the report (``ReportReads``): figures for the last 24 hours,
pages of open and ended sessions by keyset (no OFFSET scans), refused requests counted in
the process and written in bursts."""
from __future__ import annotations

import logging
import threading
from collections import Counter

import sqlalchemy as sa

from ...events import SessionEnded
from ...record import SessionRecord
from ..contract import StoreUnavailable
from ..readmodel import (
    HOUR,
    HOURS,
    LENGTH_EDGES,
    WINDOW,
    ActiveSort,
    Cursor,
    EndCount,
    page_of,
    percentile,
    sort_value,
    summarize,
)
from .engine import Transactions
from .schema import (
    DEADLINE,
    ENDED_EVENT,
    RECORD,
    TOMBSTONE,
    UTCDateTime,
    at,
    record_of,
    seconds,
    session_events,
    session_refusals,
    sessions,
)

log = logging.getLogger("session_expiry.stores.sql")

#: Refusal counts are buffered in the process and written this long after the first (seconds).
REFUSALS_FLUSH_INTERVAL = 10


#: The column each order of the active list sorts by (``figures.sort_value`` in SQL).
ACTIVE_ORDER = {ActiveSort.STARTED: sessions.c.created,
                 ActiveSort.LAST_SEEN: sessions.c.last_seen,
                 ActiveSort.REMAINING: DEADLINE}


def keyset(select, order, key, after: Cursor | None, descending: bool):
    """Order ``select`` by (order, key) and start after the cursor: no OFFSET scans."""
    if after is not None:
        position = sa.tuple_(order, key)
        cursor = sa.tuple_(sa.literal(at(after.value), UTCDateTime()), sa.literal(after.key))
        select = select.where(position < cursor if descending else position > cursor)
    if descending:
        return select.order_by(order.desc(), key.desc())
    return select.order_by(order, key)


class Reports(Transactions):
    """The report's reads."""

    def count_refusal(self, reason, now):
        """Count in the process; a timer writes the counts ``REFUSALS_FLUSH_INTERVAL``
        seconds after the first, so a burst of refused requests is one write, not a
        burst of writes to one row."""
        with self._refusals_lock:
            self._refusals[(now - now % HOUR, str(reason))] += 1
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._refusals_timer is None:
            self._refusals_timer = threading.Timer(self.refusals_flush_interval,
                                                   self.flush_refusals)
            self._refusals_timer.daemon = True
            self._refusals_timer.start()

    def flush_refusals(self) -> None:
        """Add the counts buffered in this process to ``session_refusals``."""
        with self._refusals_lock:
            counts, self._refusals = self._refusals, Counter()
            if self._refusals_timer is not None:
                self._refusals_timer.cancel()
                self._refusals_timer = None
        if not counts:
            return
        insert = self._insert(session_refusals)
        insert = insert.on_conflict_do_update(
            index_elements=["hour", "reason"],
            set_={"count": session_refusals.c.count + insert.excluded["count"]})
        try:
            with self._begin() as conn:
                conn.execute(insert, [{"hour": at(hour), "reason": reason, "count": count}
                                      for (hour, reason), count in sorted(counts.items())])
        except StoreUnavailable as error:  # keep them for the next flush
            log.warning("refused-request counts not written yet: %s", error)
            with self._refusals_lock:
                self._refusals.update(counts)
                self._schedule_flush()

    def summary(self, now):
        self.flush_refusals()
        since = at(now - WINDOW)
        events = session_events.c
        recent = sa.and_(ENDED_EVENT, events.at > since)
        hours_ago = sa.case(*[(events.at > at(now - (hour + 1) * HOUR), hour)
                              for hour in range(HOURS - 1)], else_=HOURS - 1)
        bucket = sa.case(*[(events.duration < edge, index)
                           for index, edge in enumerate(LENGTH_EDGES)], else_=len(LENGTH_EDGES))
        # The single figures in one statement: one round trip instead of three.
        figures = sa.select(
            sa.select(sa.func.count()).select_from(sessions)
            .where(sessions.c.idle_deadline > at(now),
                   sessions.c.absolute_deadline > at(now)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(sessions)  # started and still open
            .where(sessions.c.created > since).scalar_subquery(),
            sa.select(sa.func.min(DEADLINE))
            .where(sessions.c.sweep_at <= at(now), at(now) >= DEADLINE)
            .scalar_subquery())
        with self._begin(readonly=True) as conn:
            active, started, oldest_overdue = conn.execute(figures).one()
            # The same pass counts the sessions that started in the window and have ended.
            ends = conn.execute(
                sa.select(hours_ago, events.reason, bucket, sa.func.count(),
                          sa.func.count().filter(events.created > since))
                .where(recent).group_by(hours_ago, events.reason, bucket)).all()
            end_counts = [EndCount(*row[:4]) for row in ends]
            started += sum(row[4] for row in ends)
            refusals = conn.execute(
                sa.select(session_refusals.c.reason, sa.func.sum(session_refusals.c.count))
                .where(session_refusals.c.hour > since)
                .group_by(session_refusals.c.reason)).all()
            lengths = self._length_percentiles(conn, recent)
        return summarize(
            now, active=active, started=started, end_counts=end_counts,
            refusals=[(reason, int(count)) for reason, count in refusals], lengths=lengths,
            sweeper_lag=now - seconds(oldest_overdue) if oldest_overdue is not None else 0)

    def _length_percentiles(self, conn, recent) -> tuple[int | None, int | None]:
        duration = session_events.c.duration
        if self._row_locks:  # PostgreSQL sorts once for both
            row = conn.execute(sa.select(
                sa.func.percentile_disc(0.5).within_group(duration),
                sa.func.percentile_disc(0.9).within_group(duration)).where(recent)).one()
            return row[0], row[1]
        lengths = conn.execute(sa.select(duration).where(recent).order_by(duration)).scalars()
        lengths = list(lengths)
        return percentile(lengths, .5), percentile(lengths, .9)

    def active_sessions(self, query):
        order = ACTIVE_ORDER[query.sort]
        now = at(query.now)
        select = sa.select(*RECORD).where(sessions.c.idle_deadline > now,
                                           sessions.c.absolute_deadline > now)
        if query.user_id is not None:
            select = select.where(sessions.c.user_id == query.user_id)
        select = keyset(select, order, sessions.c.key, query.after, query.sort.descending)
        with self._begin(readonly=True) as conn:
            rows = [record_of(row) for row in conn.execute(select.limit(query.limit + 1))]
        return page_of(rows, query.limit, lambda record: Cursor(
            sort_value(record, query.sort), record.key))

    def recent_ends(self, query):
        events = session_events.c
        select = sa.select(events.session_key, events.user_id, events.reason, events.at,
                           events.duration).where(ENDED_EVENT)
        if query.reason is not None:
            select = select.where(events.reason == query.reason)
        if query.user_id is not None:
            select = select.where(events.user_id == query.user_id)
        select = keyset(select, events.at, events.session_key, query.after, descending=True)
        with self._begin(readonly=True) as conn:
            rows = [SessionEnded(row.session_key, row.user_id, row.reason, seconds(row.at),
                                 row.duration)
                    for row in conn.execute(select.limit(query.limit + 1))]
        return page_of(rows, query.limit,
                       lambda event: Cursor(event.ended_at, event.session_key))

    def records(self) -> list[SessionRecord]:
        """Every record, open or ended (for tests)."""
        with self._begin() as conn:
            return [record_of(row) for row in conn.execute(sa.union_all(
                sa.select(*RECORD), sa.select(*TOMBSTONE).where(ENDED_EVENT)))]
