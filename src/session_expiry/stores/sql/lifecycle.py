"""The SQL store's lifecycle: open, read (one round trip), write data conditionally, touch,
end exactly once. A write never resurrects: every one is a conditional UPDATE of a row
that is still there (for data: at the version it was read at), never an upsert."""
from __future__ import annotations

import logging

import sqlalchemy as sa

from ...record import SessionRecord
from ..data import EMPTY, MAX_WRITE_ATTEMPTS, SessionData, encode, merge
from .engine import UNAVAILABLE, Transactions, unavailable
from .schema import (
    DATA,
    DATA_TEXT,
    DEADLINE,
    ENDED,
    ENDED_EVENT,
    EVENT_COLUMNS,
    OVERDUE_REASON,
    RECORD,
    TOMBSTONE,
    UTCDateTime,
    at,
    deadline_of,
    record_of,
    seconds,
    session_events,
    session_outbox,
    sessions,
)

log = logging.getLogger("session_expiry.stores.sql")


#: Every request's read, built once (a statement built per call costs more than its
#: round trip to a local PostgreSQL): one session's record, data and version, by key;
#: or its tombstone (no data). A key is in one table or the other, never both: an end
#: moves it in one transaction, and a key is never opened again.
GET = sa.union_all(
    sa.select(*RECORD, DATA_TEXT, sessions.c.version)
    .where(sessions.c.key == sa.bindparam("key")),
    sa.select(*TOMBSTONE, sa.null(), sa.null())
    .where(session_events.c.session_key == sa.bindparam("key"), ENDED_EVENT),
).limit(1)
#: Positions in a ``GET`` row (PostgreSQL's come from the driver, as plain tuples).
_ENDED_AT, _VERSION = 6, DATA + 1


def log_ended(ended):
    """The INSERTs (CTEs, PostgreSQL) writing one ``ended`` event per row of ``ended`` and
    putting its id in the outbox: (the events written, the outbox's insert).

    Event ids follow the sessions' deadlines, so their notifications go out in that order.
    """
    logged = session_events.insert().from_select(
        [*EVENT_COLUMNS, "kind", "duration"],
        sa.select(*ended.c, sa.literal(ENDED),
                  sa.cast(sa.extract("epoch", ended.c.ended_at - ended.c.created), sa.Integer))
        .order_by(deadline_of(ended.c), ended.c.key)).returning(*session_events.c).cte("logged")
    queued = session_outbox.insert().from_select(["event_id"], sa.select(logged.c.id))
    return logged, queued.cte("queued")


def ending(which, reason, moment):
    """The DELETE that ends the sessions ``which`` selects at ``moment`` (an expression),
    returning their records as they ended.

    Sessions past their deadline end for their timeout, whatever ``reason`` says.
    """
    reason = OVERDUE_REASON if reason is None else sa.case(
        (moment >= DEADLINE, OVERDUE_REASON), else_=sa.literal(reason))
    end = {"ended_at": sa.type_coerce(moment, UTCDateTime).label("ended_at"),
           "end_reason": reason.label("end_reason")}
    return sessions.delete().where(which).returning(
        *(end.get(column.name, column) for column in RECORD))


class Lifecycle(Transactions):
    """Sessions opened, read, written, touched and ended (``SessionStore``'s lifecycle)."""

    def open(self, key, user_id, now, ip=None, user_agent=None):
        record = SessionRecord.opened(key, user_id, now, self.policy, ip=ip,
                                      user_agent=user_agent)
        with self._begin() as conn:
            if conn.execute(sa.select(sessions.c.key).where(sessions.c.key == key).union_all(
                    sa.select(session_events.c.session_key)
                    .where(session_events.c.session_key == key))).first():
                raise ValueError(f"session {key[:12]} exists already or has ended")
            conn.execute(sessions.insert().values(
                key=key, user_id=record.user_id, data={}, version=0,
                created=at(now), last_seen=at(now), idle_deadline=at(record.idle_deadline),
                absolute_deadline=at(record.absolute_deadline), sweep_at=at(record.deadline),
                ip=ip, user_agent=user_agent))
        return record

    def get(self, key):
        """The record; the same statement reads the data (as text, decoded only if
        asked for), which a ``load_data`` of this key right after, in this thread,
        is served from: a request that reads its session makes one round trip."""
        row = self._read(key)
        self._just_read.row = row if row is not None and row[_ENDED_AT] is None else None
        return None if row is None else record_of(row)

    def load_data(self, key):
        row, self._just_read.row = getattr(self._just_read, "row", None), None
        if row is None or row[0] != key:
            row = self._read(key)
            if row is None or row[_ENDED_AT] is not None:
                return None
        data = row[DATA]
        return SessionData(data if data is not None else EMPTY.text, row[_VERSION])

    def save_data(self, key, values, base=EMPTY):
        if base is None:  # replace, whatever is there
            with self._begin() as conn:
                return bool(conn.execute(sessions.update().where(sessions.c.key == key)
                                         .values(data=values, version=sessions.c.version + 1))
                            .rowcount)
        if values == base.values():
            return self.load_data(key) is not None  # nothing to write; is it still open?
        encode(values)  # refuse what JSON cannot hold before the database sees it
        for _ in range(MAX_WRITE_ATTEMPTS):
            with self._begin() as conn:
                written = conn.execute(
                    sessions.update()
                    .where(sessions.c.key == key, sessions.c.version == base.version)
                    .values(data=values, version=base.version + 1)).rowcount
            if written:
                return True
            current = self.load_data(key)
            if current is None:
                return False  # ended meanwhile: never resurrect
            values = merge(base.values(), values, current.values(), key)
            base = current
        log.error("session %s: data not saved after %d conflicting writes",
                  key[:12], MAX_WRITE_ATTEMPTS)
        return False

    def touch(self, key, now, interval=0):
        # Written only if not touched since ``now - interval``: a request that started
        # earlier never moves the deadline back, and of the requests that found the same
        # touch due, one writes.
        idle_deadline = sa.literal(at(now + self.policy.idle_timeout), UTCDateTime())
        with self._begin() as conn:
            row = conn.execute(
                sessions.update()
                .where(sessions.c.key == key, sessions.c.last_seen <= at(now - interval))
                .values(last_seen=at(now),
                        idle_deadline=sa.case((sessions.c.idle_deadline < idle_deadline,
                                               idle_deadline), else_=sessions.c.idle_deadline))
                .returning(*RECORD)).first()
        if row is not None:
            return record_of(row)
        record = self.get(key)  # touched meanwhile, or not open
        return record if record is not None and record.is_open else None

    def end(self, key, reason, now):
        with self._begin() as conn:
            rows = self._end_rows(conn, sessions.c.key == key, str(reason), now)
        if not rows:
            return None
        self.notify_pending(only=[key])
        return record_of(rows[0])

    def end_user_sessions(self, user_id, reason, now, keep=None):
        which = sessions.c.user_id == str(user_id)
        if keep is not None:
            which = sa.and_(which, sessions.c.key != keep)
        with self._begin() as conn:
            rows = self._end_rows(conn, which, str(reason), now)
        if rows:
            self.notify_pending(only=[row.key for row in rows])
        return [record_of(row) for row in rows]

    def user_sessions(self, user_id, now):
        with self._begin(readonly=True) as conn:
            rows = conn.execute(sa.select(*RECORD)
                                .where(sessions.c.user_id == str(user_id),
                                       sessions.c.idle_deadline > at(now),
                                       sessions.c.absolute_deadline > at(now))
                                .order_by(sessions.c.last_seen.desc(), sessions.c.key))
            return [record_of(row) for row in rows]

    def _end_rows(self, conn, which, reason, now):
        """End the sessions ``which`` selects and write their event rows."""
        moment = sa.literal(at(now), UTCDateTime())
        if self._sqlite:  # SQLite has no DELETE inside WITH
            rows = sorted(conn.execute(ending(which, reason, moment)),  # as log_ended does
                          key=lambda row: (min(row.idle_deadline, row.absolute_deadline), row.key))
            if rows:
                conn.execute(session_events.insert(), [
                    {**dict(zip(EVENT_COLUMNS, row, strict=True)), "kind": ENDED,
                     "duration": seconds(row.ended_at) - seconds(row.created)}
                    for row in rows])
                events = session_events.c
                conn.execute(session_outbox.insert().from_select(["event_id"], sa.select(
                    events.id).where(events.session_key.in_([row.key for row in rows]),
                                     ENDED_EVENT)))
            return rows
        ended = ending(which, reason, moment).cte("ended")
        return conn.execute(sa.select(*ended.c).add_cte(*log_ended(ended))).all()

    def _read(self, key: str):
        """The ``GET`` row of ``key``, or None: every request's read.

        A connection the server dropped (a restart) is replaced and the read run
        once more, so the request that meets it is served; both pools are replaced
        (the other's connections are as stale as this one).
        """
        if self._reads is None:  # SQLite: a read transaction of its own
            with self._begin(readonly=True) as conn:
                return conn.execute(GET, {"key": key}).first()
        try:
            return self._reads.first(key=key)
        except UNAVAILABLE as error:
            if not getattr(error, "connection_invalidated", False):
                raise unavailable(error) from error
            log.warning("session database connection lost; reading again: %s", error.orig)
            self._reads.engine.dispose(close=False)
            self.engine.dispose(close=False)
        try:
            return self._reads.first(key=key)
        except UNAVAILABLE as error:
            raise unavailable(error) from error
