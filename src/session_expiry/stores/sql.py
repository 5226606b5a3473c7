"""The SQL store: SQLAlchemy 2 Core on SQLite or PostgreSQL, for a farm of app servers.

``sessions`` holds the open sessions: one row each, the lifecycle record and
the data (readable JSON). Every write is a conditional UPDATE (the row still
there; for data, the version it was read at), never an upsert, so a request
that finishes after a logout, a revoke or a sweep cannot bring a session back.
The store keeps its own short transactions, independent of the request's: an
exception in a view cannot undo a logout.

Ending a session moves it, in one transaction: its row is deleted and its
``ended`` row written to ``session_events``, holding the record as it ended
(the tombstone: why it ended, for the pages that say so) until retention
is over. The unique (session_key, kind) pair makes "exactly once" a fact of the
database, and a key is never opened again. The same statement puts the
event's id in ``session_outbox``, a table of one small column; notifications
go out after the commit, and the id is deleted once they were sent (at least
once). Nothing is updated to end a session: a tombstone kept in ``sessions``
was a new version of the row with an entry in each of its indexes, and an
event marked sent was the same again.

Touches change only ``last_seen`` and ``idle_deadline``, which no index
covers, so PostgreSQL can make them HOT updates. The sweeper finds overdue
sessions through ``sweep_at``, a lower bound of the session's deadline that
is refreshed only when the sweeper finds the session still alive.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import InterfaceError, OperationalError

from ..events import SessionEnded
from ..settings import Policy
from ..throttle import Failures, claim, released
from . import (
    EMPTY,
    MAX_WRITE_ATTEMPTS,
    OnEnd,
    SessionData,
    SessionRecord,
    StoreUnavailable,
    SweepResult,
    SweepThread,
    encode,
    merge,
    report,
)
from .readmodel import (
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

log = logging.getLogger(__name__)

ENDED = "ended"
#: Refusal counts are buffered in the process and written this long after the first (seconds).
REFUSALS_FLUSH_INTERVAL = 10


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes everywhere; SQLite keeps them as naive UTC text."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def at(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


metadata = sa.MetaData()


def _record_columns() -> list[sa.Column]:
    """A session's record besides its key, user and end: the same columns in ``sessions``
    (open) and in its ``ended`` event (as it ended)."""
    return [sa.Column("created", UTCDateTime, nullable=False),
            sa.Column("last_seen", UTCDateTime, nullable=False),
            sa.Column("idle_deadline", UTCDateTime, nullable=False),
            sa.Column("absolute_deadline", UTCDateTime, nullable=False),
            sa.Column("ip", sa.String(45), nullable=True),
            sa.Column("user_agent", sa.String(512), nullable=True)]


sessions = sa.Table(
    "sessions", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, default=0),
    *_record_columns(),
    sa.Column("sweep_at", UTCDateTime, nullable=False),
)

session_events = sa.Table(
    "session_events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("session_key", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("duration", sa.Integer, nullable=False),
    *_record_columns(),  # the session's record as it ended (``at`` and ``reason``: its end)
    sa.UniqueConstraint("session_key", "kind", name="uq_session_events_session_key_kind"),
)

#: The events whose notifications have not been sent yet (the outbox): an id is
#: inserted with its event and deleted once the event was sent.
session_outbox = sa.Table(
    "session_outbox", metadata,
    sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=False),
)

session_refusals = sa.Table(
    "session_refusals", metadata,
    sa.Column("hour", UTCDateTime, primary_key=True),
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

#: Password failures in a row, by hashed key (``session_expiry.throttle``): shared by the farm.
session_failures = sa.Table(
    "session_failures", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("last", UTCDateTime, nullable=False),
)

# No index covers a column a touch changes (touches stay HOT updates).
sa.Index("ix_sessions_sweep_at", sessions.c.sweep_at)
sa.Index("ix_sessions_user_id", sessions.c.user_id)
sa.Index("ix_sessions_created", sessions.c.created)
# The report reads the last 24 hours of ends (and of starts since ended) from this index
# alone (PostgreSQL: index-only).
sa.Index("ix_session_events_at_key", session_events.c.at, session_events.c.session_key,
         postgresql_include=["kind", "reason", "duration", "created"])
sa.Index("ix_session_events_reason_at_key", session_events.c.reason, session_events.c.at,
         session_events.c.session_key)
sa.Index("ix_session_events_user_id_at_key", session_events.c.user_id, session_events.c.at,
         session_events.c.session_key)

def _deadline(record):
    """The earlier of the two deadlines of ``record`` (columns): ``SessionRecord.deadline``."""
    return sa.case((record.absolute_deadline <= record.idle_deadline, record.absolute_deadline),
                   else_=record.idle_deadline)


_DEADLINE = _deadline(sessions.c)
_OVERDUE_REASON = sa.case(
    (sessions.c.absolute_deadline <= sessions.c.idle_deadline, "absolute_timeout"),
    else_="idle_timeout")
#: An open session's record (a ``SessionRecord``'s fields, in order).
_RECORD = (sessions.c.key, sessions.c.user_id, sessions.c.created, sessions.c.last_seen,
           sessions.c.idle_deadline, sessions.c.absolute_deadline,
           sa.cast(sa.null(), UTCDateTime).label("ended_at"),
           sa.cast(sa.null(), sa.String(32)).label("end_reason"),
           sessions.c.ip, sessions.c.user_agent)
#: An ended session's record, from its ``ended`` event (the same columns).
_TOMBSTONE = (session_events.c.session_key, session_events.c.user_id,
              session_events.c.created, session_events.c.last_seen,
              session_events.c.idle_deadline, session_events.c.absolute_deadline,
              session_events.c.at, session_events.c.reason,
              session_events.c.ip, session_events.c.user_agent)
_ENDED_EVENT = session_events.c.kind == ENDED

#: The data as the database keeps it (JSON text): decoded only when a view reads it.
_DATA_TEXT = sa.cast(sessions.c.data, sa.Text).label("data")

#: Every request's read, built once (a statement built per call costs more than its
#: round trip to a local PostgreSQL): one session's record, data and version, by key;
#: or its tombstone (no data). A key is in one table or the other, never both: an end
#: moves it in one transaction, and a key is never opened again.
_GET = sa.union_all(
    sa.select(*_RECORD, _DATA_TEXT, sessions.c.version)
    .where(sessions.c.key == sa.bindparam("key")),
    sa.select(*_TOMBSTONE, sa.null(), sa.null())
    .where(session_events.c.session_key == sa.bindparam("key"), _ENDED_EVENT),
).limit(1)
#: Positions in a ``_GET`` row (PostgreSQL's come from the driver, as plain tuples).
_ENDED_AT, _DATA, _VERSION = 6, len(_RECORD), len(_RECORD) + 1


#: The column each order of the active list sorts by (``figures.sort_value`` in SQL).
_ACTIVE_ORDER = {ActiveSort.STARTED: sessions.c.created,
                 ActiveSort.LAST_SEEN: sessions.c.last_seen,
                 ActiveSort.REMAINING: _DEADLINE}


def _keyset(select, order, key, after: Cursor | None, descending: bool):
    """Order ``select`` by (order, key) and start after the cursor: no OFFSET scans."""
    if after is not None:
        position = sa.tuple_(order, key)
        cursor = sa.tuple_(sa.literal(at(after.value), UTCDateTime()), sa.literal(after.key))
        select = select.where(position < cursor if descending else position > cursor)
    if descending:
        return select.order_by(order.desc(), key.desc())
    return select.order_by(order, key)


def _record(row) -> SessionRecord:
    """The record in a row whose first columns are ``_RECORD``'s."""
    key, user_id, created, last_seen, idle, absolute, ended_at, reason, ip, agent = \
        row[:_DATA]
    return SessionRecord(
        key=key, user_id=user_id, created=seconds(created), last_seen=seconds(last_seen),
        idle_deadline=seconds(idle), absolute_deadline=seconds(absolute),
        ended_at=seconds(ended_at), end_reason=reason, ip=ip, user_agent=agent)


#: The columns of an ``ended`` event that hold its session's record, in ``_RECORD``'s order.
_EVENT_COLUMNS = [column.name for column in _TOMBSTONE]


def _logged(ended):
    """The INSERTs (CTEs, PostgreSQL) writing one ``ended`` event per row of ``ended`` and
    putting its id in the outbox: (the events written, the outbox's insert).

    Event ids follow the sessions' deadlines, so their notifications go out in that order.
    """
    logged = session_events.insert().from_select(
        [*_EVENT_COLUMNS, "kind", "duration"],
        sa.select(*ended.c, sa.literal(ENDED),
                  sa.cast(sa.extract("epoch", ended.c.ended_at - ended.c.created), sa.Integer))
        .order_by(_deadline(ended.c), ended.c.key)).returning(*session_events.c).cte("logged")
    queued = session_outbox.insert().from_select(["event_id"], sa.select(logged.c.id))
    return logged, queued.cte("queued")


def _ending(which, reason, moment):
    """The DELETE that ends the sessions ``which`` selects at ``moment`` (an expression),
    returning their records as they ended.

    Sessions past their deadline end for their timeout, whatever ``reason`` says.
    """
    reason = _OVERDUE_REASON if reason is None else sa.case(
        (moment >= _DEADLINE, _OVERDUE_REASON), else_=sa.literal(reason))
    end = {"ended_at": sa.type_coerce(moment, UTCDateTime).label("ended_at"),
           "end_reason": reason.label("end_reason")}
    return sessions.delete().where(which).returning(
        *(end.get(column.name, column) for column in _RECORD))


def _epoch(moment):
    """A time column as whole seconds, computed by PostgreSQL (no datetime per row)."""
    return sa.cast(sa.extract("epoch", moment), sa.BigInteger)


def _take(claim):
    """PostgreSQL: delete the outbox entries ``claim`` selects, skipping those another
    notifier holds, returning their ids.

    ``= ANY(ARRAY(claim))``, not ``IN (claim)``: the claim runs once, and the DELETE
    looks its rows up by primary key. Given ``IN``, the planner joined the two; the
    outbox, a queue whose deleted rows stay until a vacuum, looks empty to it, so it
    picked a nested loop that ran the claim once per row in the table (270 to 480 ms a
    batch after 700,000 ends; 2 ms otherwise).
    """
    return (session_outbox.delete()
            .where(session_outbox.c.event_id == sa.any_(sa.func.array(
                claim.with_for_update(skip_locked=True).scalar_subquery())))
            .returning(session_outbox.c.event_id))


def _sweep_batch_statement():
    """PostgreSQL: a sweeper's batch in one statement (parameters ``now``, ``batch`` and
    ``after``).

    Claims up to ``batch`` overdue sessions from ``sweep_at`` ``after`` on (``SKIP
    LOCKED``), reading whether each is past its deadline (the row is locked: it cannot
    move), ends those, writes their events and outbox entries, and refreshes the
    ``sweep_at`` of the others; returns one row per event written (id, then
    ``SessionEnded``'s fields), each with the count claimed and the last ``sweep_at``
    reached.
    """
    now = sa.bindparam("now", type_=UTCDateTime())
    overdue = now >= _DEADLINE
    due = (sa.select(sessions.c.key, sessions.c.sweep_at, overdue.label("overdue"))
           .where(sessions.c.sweep_at <= now,
                  sessions.c.sweep_at >= sa.bindparam("after", type_=UTCDateTime()))
           .order_by(sessions.c.sweep_at).limit(sa.bindparam("batch", type_=sa.Integer))
           .with_for_update(skip_locked=True)).cte("due")
    ended = _ending(sa.and_(sessions.c.key.in_(sa.select(due.c.key).where(due.c.overdue)),
                            overdue), None, now).cte("ended")
    logged, queued = _logged(ended)
    refreshed = (sessions.update()
                 .where(sessions.c.key.in_(sa.select(due.c.key).where(~due.c.overdue)),
                        ~overdue)
                 .values(sweep_at=_DEADLINE).cte("refreshed"))
    claimed = sa.select(sa.func.count().label("claimed"),
                        sa.func.max(due.c.sweep_at).label("reached")).select_from(due).subquery()
    return (sa.select(claimed.c.claimed, claimed.c.reached, logged.c.id, logged.c.session_key,
                      logged.c.user_id, logged.c.reason, _epoch(logged.c.at), logged.c.duration)
            .select_from(claimed.outerjoin(logged, sa.true()))
            .add_cte(queued, refreshed))


#: Built once: building and keying a statement of this size costs milliseconds a batch.
_SWEEP_BATCH = _sweep_batch_statement()
#: The outbox entries of the events a sweep just wrote (parameter ``ids``), PostgreSQL.
_SWEPT = sa.select(session_outbox.c.event_id).where(
    session_outbox.c.event_id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger))))
_TAKE_SWEPT = _take(_SWEPT)


def engine_for(url: str) -> sa.Engine:
    """An engine for the store.

    SQLite: write-ahead logging (readers never wait for the writer), and write
    transactions begin IMMEDIATE, so two writers queue instead of failing to
    upgrade a read lock; reads begin DEFERRED. Either way the data is written as the
    memory store keeps it: compact JSON (:func:`encode`).
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=encode)

        @sa.event.listens_for(engine, "connect")
        def _configure(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we say BEGIN ourselves
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            readonly = connection.get_execution_options().get(READONLY, False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # No ping on every checkout (a round trip per request): a read that meets a
    # connection the server dropped is run once more on a new one (``SqlStore._read``).
    return sa.create_engine(url, json_serializer=encode)


class DriverRead:
    """One read-only statement, compiled once for the driver and run on a pooled DBAPI
    connection in autocommit: no BEGIN and COMMIT round trips, and not SQLAlchemy's
    execution path either, which costs more CPU than the round trip to a local
    PostgreSQL (store.get: 173 µs of CPU through a Connection, 60 µs here).

    Errors come out as SQLAlchemy's (``DBAPIError.instance``), so the store reads
    them like any other; a connection the server dropped is invalidated.
    """

    def __init__(self, url, statement):
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT",
                                       pool_reset_on_return=None)
        self.dialect = self.engine.dialect
        compiled = statement.compile(dialect=self.dialect)
        self.sql = str(compiled)
        self._constants = compiled.params  # the statement's own values (and None for ours)
        self._errors = self.dialect.loaded_dbapi.Error

    def first(self, **params):
        """The first row (a tuple), or None."""
        connection = cursor = None
        try:
            connection = self.engine.raw_connection()
            cursor = connection.cursor()
            params = {**self._constants, **params}
            cursor.execute(self.sql, params)
            return cursor.fetchone()
        except self._errors as error:
            dropped = connection is not None and self.dialect.is_disconnect(
                error, connection.dbapi_connection, cursor)
            if dropped:
                connection.invalidate(error)
            raise sa.exc.DBAPIError.instance(
                self.sql, params, error, self._errors, connection_invalidated=dropped,
                dialect=self.dialect) from error
        finally:
            if connection is not None:
                connection.close()  # back to the pool


READONLY = "session_expiry_readonly"


class SqlStore:
    """A ``SessionStore`` on SQLAlchemy Core."""

    def __init__(self, engine: sa.Engine, policy: Policy, clock,
                 on_end: OnEnd = lambda event: None):
        self.engine = engine
        self.policy = policy
        self.clock = clock
        self.on_end = on_end
        self._sweeper: SweepThread | None = None
        # Re-entrant: a subscriber may end another session (and notify) in this thread.
        self._notifying = threading.RLock()
        self._sqlite = engine.dialect.name == "sqlite"
        self._row_locks = not self._sqlite
        #: PostgreSQL: every request's read, from a pool of its own (switching a pooled
        #: connection to autocommit and back costs more than a read).
        self._reads = None if self._sqlite else DriverRead(engine.url, _GET)
        #: The open session row ``get`` read last in this thread, until ``load_data``
        #: uses it or this thread writes anything (``_begin``).
        self._just_read = threading.local()
        self._refusals: Counter = Counter()  # (hour, reason) -> requests not written yet
        self._refusals_lock = threading.Lock()
        self._refusals_timer: threading.Timer | None = None
        self.refusals_flush_interval = REFUSALS_FLUSH_INTERVAL

    # -- the protocol ---------------------------------------------------------

    def open(self, key, user_id, now, ip=None, user_agent=None):
        record = SessionRecord(
            key=key, user_id=str(user_id), created=now, last_seen=now,
            idle_deadline=now + self.policy.idle_timeout,
            absolute_deadline=now + self.policy.absolute_timeout,
            ip=ip, user_agent=user_agent)
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
        return None if row is None else _record(row)

    def load_data(self, key):
        row, self._just_read.row = getattr(self._just_read, "row", None), None
        if row is None or row[0] != key:
            row = self._read(key)
            if row is None or row[_ENDED_AT] is not None:
                return None
        data = row[_DATA]
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
                .returning(*_RECORD)).first()
        if row is not None:
            return _record(row)
        record = self.get(key)  # touched meanwhile, or not open
        return record if record is not None and record.is_open else None

    def end(self, key, reason, now):
        with self._begin() as conn:
            rows = self._end_rows(conn, sessions.c.key == key, str(reason), now)
        if not rows:
            return None
        self.notify_pending(only=[key])
        return _record(rows[0])

    def end_user_sessions(self, user_id, reason, now, keep=None):
        which = sessions.c.user_id == str(user_id)
        if keep is not None:
            which = sa.and_(which, sessions.c.key != keep)
        with self._begin() as conn:
            rows = self._end_rows(conn, which, str(reason), now)
        if rows:
            self.notify_pending(only=[row.key for row in rows])
        return [_record(row) for row in rows]

    def user_sessions(self, user_id, now):
        with self._begin(readonly=True) as conn:
            rows = conn.execute(sa.select(*_RECORD)
                                .where(sessions.c.user_id == str(user_id),
                                       sessions.c.idle_deadline > at(now),
                                       sessions.c.absolute_deadline > at(now))
                                .order_by(sessions.c.last_seen.desc(), sessions.c.key))
            return [_record(row) for row in rows]

    def sweep(self, now, batch: int = 500, progress=None) -> SweepResult:
        """End overdue sessions, send pending notifications, prune past retention.

        Works in batches of ``batch`` rows, each in its own transaction, so
        memory stays flat and other sweepers can work beside it. ``progress``
        is called after each batch with (sessions looked at, sessions due).
        """
        started = time.monotonic()
        result = SweepResult()
        due = self.due_count(now) if progress else 0
        looked_at = 0
        with closing(self._ended_batches(now, batch)) as batches:
            for claimed, ended in batches:
                # Told batch by batch: subscribers hear of each end within a batch's time.
                result.ended.update(event.reason for event in ended.values())
                if ended:
                    result.notified += self._notify_swept(ended)
                looked_at += claimed
                if progress:
                    progress(looked_at, max(due, looked_at))
        result.notified += self.notify_pending(batch)  # what a crash left behind
        result.pruned = self.prune(now, batch)
        result.seconds = time.monotonic() - started
        return result

    # -- password throttling ---------------------------------------------------

    def claim_try(self, keys, now):
        with self._begin() as conn:
            answer, stored = claim(keys, self._failures(conn, keys), now)
            for name, kept in stored.items():
                conn.execute(session_failures.update().where(session_failures.c.name == name)
                             .values(count=kept.count, last=at(kept.last)))
        return answer

    def release_try(self, keys):
        with self._begin() as conn:
            failures = self._failures(conn, keys)
            for key in keys:
                kept = released(key, failures[key.name])
                which = session_failures.c.name == key.name
                conn.execute(session_failures.delete().where(which) if kept is None else
                             session_failures.update().where(which).values(count=kept.count))

    def _failures(self, conn, keys) -> dict[str, Failures | None]:
        """The keys' failures, their rows locked until the transaction ends (SQLite: the
        write transaction itself is the lock). A key without a row gets one first (count 0,
        forgotten long ago), so that two first tries at once lock the same row."""
        names = sorted({key.name for key in keys})  # one order: no deadlock between claims
        insert = (postgresql_insert if self._row_locks else sqlite_insert)(session_failures)
        conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]),
                     [{"name": name, "count": 0, "last": at(0)} for name in names])
        rows = conn.execute(sa.select(session_failures).where(session_failures.c.name.in_(names))
                            .order_by(session_failures.c.name).with_for_update())
        found = {row.name: Failures(row.count, seconds(row.last)) for row in rows}
        return {name: found.get(name) for name in names}

    # -- the report ------------------------------------------------------------

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
        insert = (postgresql_insert if self._row_locks else sqlite_insert)(session_refusals)
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
        recent = sa.and_(_ENDED_EVENT, events.at > since)
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
            sa.select(sa.func.min(_DEADLINE))
            .where(sessions.c.sweep_at <= at(now), at(now) >= _DEADLINE)
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
        order = _ACTIVE_ORDER[query.sort]
        now = at(query.now)
        select = sa.select(*_RECORD).where(sessions.c.idle_deadline > now,
                                           sessions.c.absolute_deadline > now)
        if query.user_id is not None:
            select = select.where(sessions.c.user_id == query.user_id)
        select = _keyset(select, order, sessions.c.key, query.after, query.sort.descending)
        with self._begin(readonly=True) as conn:
            rows = [_record(row) for row in conn.execute(select.limit(query.limit + 1))]
        return page_of(rows, query.limit, lambda record: Cursor(
            sort_value(record, query.sort), record.key))

    def recent_ends(self, query):
        events = session_events.c
        select = sa.select(events.session_key, events.user_id, events.reason, events.at,
                           events.duration).where(_ENDED_EVENT)
        if query.reason is not None:
            select = select.where(events.reason == query.reason)
        if query.user_id is not None:
            select = select.where(events.user_id == query.user_id)
        select = _keyset(select, events.at, events.session_key, query.after, descending=True)
        with self._begin(readonly=True) as conn:
            rows = [SessionEnded(row.session_key, row.user_id, row.reason, seconds(row.at),
                                 row.duration)
                    for row in conn.execute(select.limit(query.limit + 1))]
        return page_of(rows, query.limit,
                       lambda event: Cursor(event.ended_at, event.session_key))

    def records(self) -> list[SessionRecord]:
        """Every record, open or ended (for tests)."""
        with self._begin() as conn:
            return [_record(row) for row in conn.execute(sa.union_all(
                sa.select(*_RECORD), sa.select(*_TOMBSTONE).where(_ENDED_EVENT)))]

    def close(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        self.flush_refusals()
        with self._refusals_lock:  # a failed last write is not retried after the close
            if self._refusals_timer is not None:
                self._refusals_timer.cancel()
        self.engine.dispose()
        if self._reads is not None:
            self._reads.engine.dispose()

    # -- the sweeper's parts ---------------------------------------------------

    def due_count(self, now: int) -> int:
        """How many open sessions the sweeper has to look at now."""
        with self._begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sessions)
                                .where(sessions.c.sweep_at <= at(now))).scalar_one()

    def notify_pending(self, batch: int = 500, only: list[str] | None = None) -> int:
        """Send the notifications of ended sessions not sent yet (the outbox).

        At least once: an event leaves the outbox only after its subscribers
        ran, so a process that dies in between leaves it for the next sweep. A
        subscriber that raises is logged, not retried. ``only``: just these
        sessions' (keys), right after ending them.
        """
        waiting = session_outbox.c.event_id
        if only is None:  # the oldest pending events
            return self._notify(sa.select(waiting).order_by(waiting).limit(batch), batch)
        # By the unique (session_key, kind) index, one event per key, then the
        # outbox's primary key: never a walk of either table.
        events = session_events.c
        return self._notify(sa.select(waiting).where(waiting.in_(
            sa.select(events.id).where(self._among(events.session_key, only), _ENDED_EVENT))))

    def _notify(self, claim, batch: int | None = None, known=None, take=None,
                params=None) -> int:
        """Send the events of the outbox entries ``claim`` selects, then delete the
        entries; ``batch``: again until fewer than ``batch`` were sent. ``known``: the
        events (id -> ``SessionEnded``) as the sweep just wrote them, not read again.
        ``take``: ``_take(claim)`` built once; ``params``: the statements' parameters."""
        sent = 0
        with self._notifying:  # one notifier per process: no double sends from threads
            while True:
                if self._row_locks:
                    # PostgreSQL: one statement claims a batch (other sweepers skip the
                    # entries it locked) and deletes it; the delete is committed only
                    # after the subscribers ran: a crash while sending rolls it back.
                    taken = take if take is not None else _take(claim)
                    with self._begin() as conn:
                        if known is None:
                            taken = taken.cte("taken")
                            events = list(self._events(conn, session_events.c.id.in_(
                                sa.select(taken.c.event_id))).values())
                        else:
                            events = [known[event_id] for event_id
                                      in sorted(conn.execute(taken, params).scalars())]
                        self._send(events)
                else:
                    # SQLite locks the whole file: send outside the transaction, so a
                    # subscriber may use the database.
                    with self._begin(readonly=True) as conn:
                        ids = sorted(conn.execute(claim, params).scalars())
                        found = known if known is not None or not ids else self._events(
                            conn, session_events.c.id.in_(ids))
                    events = [found[event_id] for event_id in ids]
                    self._send(events)
                    if ids:
                        with self._begin() as conn:
                            conn.execute(session_outbox.delete()
                                         .where(session_outbox.c.event_id.in_(ids)))
                sent += len(events)
                if batch is None or len(events) < batch:
                    return sent

    @staticmethod
    def _events(conn, which) -> dict[int, SessionEnded]:
        """{event id: ``SessionEnded``} of the events ``which`` selects, oldest first."""
        events = session_events.c
        rows = conn.execute(sa.select(events.id, events.session_key, events.user_id,
                                      events.reason, events.at, events.duration)
                            .where(which).order_by(events.id))
        return {row.id: SessionEnded(row.session_key, row.user_id, row.reason,
                                     seconds(row.at), row.duration) for row in rows}

    def _send(self, events) -> None:
        for event in events:
            report(self.on_end, event)

    def prune(self, now: int, batch: int = 500) -> int:
        """Delete the events (tombstones) older than ``retention`` once they were sent, in
        batches; and password failures past ``throttle_forget_after``."""
        events = session_events.c
        old = sa.and_(events.at <= at(now - self.policy.retention),
                      ~sa.exists().where(session_outbox.c.event_id == events.id))  # sent
        with self._begin() as conn:  # a few small rows: forgotten in one statement
            conn.execute(session_failures.delete().where(
                session_failures.c.last <= at(now - self.policy.throttle_forget_after)))
        pruned = 0
        while True:
            with self._begin() as conn:
                doomed = sa.select(events.id).where(old).limit(batch).scalar_subquery()
                deleted = conn.execute(session_events.delete().where(events.id.in_(doomed)))
            pruned += deleted.rowcount
            if deleted.rowcount < batch:
                return pruned

    def start(self, interval: float, batch: int = 500, observe=None) -> None:
        """Sweep every ``interval`` seconds in a daemon thread until :meth:`close`."""
        def sweep():
            result = self.sweep(int(self.clock()), batch)
            if result.total_ended or result.notified or result.pruned:
                log.info("swept: %s", result.summary())
            return result

        if self._sweeper is None:
            self._sweeper = SweepThread(sweep, interval, observe)

    # -- internals -------------------------------------------------------------

    def _ended_batches(self, now, batch):
        """(claimed, ended) of each batch of a sweep, each batch committed before it is
        yielded, until a batch claims fewer than ``batch`` sessions.

        PostgreSQL: a thread of its own ends the next batch while the caller sends the
        notifications of this one (the client's work and the server's overlap). It
        commits each batch on its own, waiting for no subscriber, so a subscriber that
        ends a session of the next batch waits at most for that commit. It is at most two
        batches ahead (one waiting, one being ended: flat memory), and stops once the
        caller stops (a subscriber raised, the process is going down): what it ended and
        nobody sent stays in the outbox for the next sweep, as if the process had died.
        """
        # Where the last batch's claim reached in the ``sweep_at`` index: the next one starts
        # there (ties included), not at the front, where the sessions this sweep ended leave
        # entries a claim would step over until a vacuum (after 300,000 ends: 9,500 buffers
        # and 4.5 ms a batch before its first row). What lies behind is ended, or was skipped
        # because another sweeper holds it; a session refreshed moves past ``now``.
        after = at(0)

        def one():
            nonlocal after
            with self._begin() as conn:
                claimed, reached, ended = self._sweep_batch(conn, now, batch, after)
            after = reached or after
            return claimed, ended

        if self._sqlite:  # one writer for the whole file: one batch at a time
            while True:
                claimed, ended = one()
                yield claimed, ended
                if claimed < batch:
                    return
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def hand_over(item) -> None:  # unless the caller stopped taking them
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce():
            try:
                while not stop.is_set():
                    claimed, ended = one()
                    hand_over((claimed, ended, None))
                    if claimed < batch:
                        return
            except BaseException as error:  # raised in the caller
                hand_over((0, {}, error))

        producer = threading.Thread(target=produce, name="session-expiry-sweep-ender",
                                    daemon=True)
        producer.start()
        try:
            while True:
                claimed, ended, error = ready.get()
                if error is not None:
                    raise error
                yield claimed, ended
                if claimed < batch:
                    return
        finally:
            stop.set()
            producer.join()

    def _notify_swept(self, ended: dict) -> int:
        """Send the events a sweep just wrote (id -> ``SessionEnded``) and take them out
        of the outbox, unless another notifier already took them."""
        if self._sqlite:
            return self._notify(sa.select(session_outbox.c.event_id)
                                .where(session_outbox.c.event_id.in_(list(ended))),
                                known=ended)
        return self._notify(_SWEPT, known=ended, take=_TAKE_SWEPT, params={"ids": list(ended)})

    def _sweep_batch(self, conn, now, batch, after):
        """Claim up to ``batch`` overdue sessions from ``sweep_at`` ``after`` on, end those
        past their deadline and look again at the deadline of the rest (touched since their
        ``sweep_at`` was set).

        Returns (how many were claimed, the last ``sweep_at`` claimed or None,
        {event id: ``SessionEnded``} of each session ended).
        """
        if self._sqlite:  # no row locks, no DELETE inside WITH: a statement a step
            overdue = at(now) >= _DEADLINE
            due = conn.execute(sa.select(sessions.c.key, sessions.c.sweep_at)
                               .where(sessions.c.sweep_at <= at(now),
                                      sessions.c.sweep_at >= after)
                               .order_by(sessions.c.sweep_at).limit(batch)).all()
            keys = [key for key, _ in due]
            claimed = sessions.c.key.in_(keys)
            ended = self._end_rows(conn, sa.and_(claimed, overdue), None, now)
            conn.execute(sessions.update().where(claimed).values(sweep_at=_DEADLINE))
            events = (self._events(conn, sa.and_(
                self._among(session_events.c.session_key, [row.key for row in ended]),
                _ENDED_EVENT)) if ended else {})
            return len(keys), due[-1].sweep_at if due else None, events
        # PostgreSQL: the whole batch is one statement, the events written on the server.
        rows = conn.execute(_SWEEP_BATCH, {"now": at(now), "batch": batch, "after": after}).all()
        return rows[0][0], rows[0][1], {row[2]: SessionEnded(*row[3:]) for row in rows
                                        if row[2] is not None}

    def _among(self, column, values):
        """``column IN values``; on PostgreSQL one array parameter (``= ANY``), so the
        statement's text is the same for any number of values."""
        if self._sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))

    def _end_rows(self, conn, which, reason, now):
        """End the sessions ``which`` selects and write their event rows."""
        moment = sa.literal(at(now), UTCDateTime())
        if self._sqlite:  # SQLite has no DELETE inside WITH
            rows = sorted(conn.execute(_ending(which, reason, moment)),  # as ``_logged`` does
                          key=lambda row: (min(row.idle_deadline, row.absolute_deadline), row.key))
            if rows:
                conn.execute(session_events.insert(), [
                    {**dict(zip(_EVENT_COLUMNS, row, strict=True)), "kind": ENDED,
                     "duration": seconds(row.ended_at) - seconds(row.created)}
                    for row in rows])
                events = session_events.c
                conn.execute(session_outbox.insert().from_select(["event_id"], sa.select(
                    events.id).where(events.session_key.in_([row.key for row in rows]),
                                     _ENDED_EVENT)))
            return rows
        ended = _ending(which, reason, moment).cte("ended")
        return conn.execute(sa.select(*ended.c).add_cte(*_logged(ended))).all()

    def _read(self, key: str):
        """The ``_GET`` row of ``key``, or None: every request's read.

        A connection the server dropped (a restart) is replaced and the read run
        once more, so the request that meets it is served; both pools are replaced
        (the other's connections are as stale as this one).
        """
        if self._reads is None:  # SQLite: a read transaction of its own
            with self._begin(readonly=True) as conn:
                return conn.execute(_GET, {"key": key}).first()
        try:
            return self._reads.first(key=key)
        except _UNAVAILABLE as error:
            if not getattr(error, "connection_invalidated", False):
                raise unavailable(error) from error
            log.warning("session database connection lost; reading again: %s", error.orig)
            self._reads.engine.dispose(close=False)
            self.engine.dispose(close=False)
        try:
            return self._reads.first(key=key)
        except _UNAVAILABLE as error:
            raise unavailable(error) from error

    @contextmanager
    def _begin(self, readonly: bool = False):
        """A connection in a transaction."""
        if not readonly:
            self._just_read.row = None  # a write may change or end what was read
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READONLY: readonly})
                with conn.begin():
                    yield conn
        except _UNAVAILABLE as error:
            raise unavailable(error) from error


#: What the database answers when it cannot serve the store.
_UNAVAILABLE = (OperationalError, InterfaceError, sa.exc.TimeoutError, sa.exc.ProgrammingError,
                sa.exc.DataError)


def unavailable(error: sa.exc.SQLAlchemyError) -> StoreUnavailable:
    """What the store says when the database does not serve it: never a 500."""
    reason = str(getattr(error, "orig", error)).splitlines()[0]
    if isinstance(error, sa.exc.DataError):  # a value the database refuses
        return StoreUnavailable("the session database refused a value: " + reason)
    if isinstance(error, sa.exc.ProgrammingError) or "no such table" in reason:
        return StoreUnavailable("the session tables are missing: run "
                                f"`alembic -c <your ini> upgrade head` ({reason})")
    return StoreUnavailable(reason)

