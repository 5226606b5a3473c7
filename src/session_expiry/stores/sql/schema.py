"""The SQL store's tables, and the column expressions every part of the store reads.

``sessions`` holds the open sessions: one row each, the lifecycle record and the data
(readable JSON). ``session_events`` holds each ended session's ``ended`` event, which is
its tombstone; ``session_outbox`` the events not notified yet; ``session_refusals`` the
refused requests by hour; ``session_failures`` the password failures the farm shares.
Every time is an aware UTC datetime.
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from ...record import SessionRecord

ENDED = "ended"


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


def record_columns() -> list[sa.Column]:
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
    *record_columns(),
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
    *record_columns(),  # the session's record as it ended (``at`` and ``reason``: its end)
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

def deadline_of(record):
    """The earlier of the two deadlines of ``record`` (columns): ``SessionRecord.deadline``."""
    return sa.case((record.absolute_deadline <= record.idle_deadline, record.absolute_deadline),
                   else_=record.idle_deadline)


DEADLINE = deadline_of(sessions.c)
OVERDUE_REASON = sa.case(
    (sessions.c.absolute_deadline <= sessions.c.idle_deadline, "absolute_timeout"),
    else_="idle_timeout")
#: An open session's record (a ``SessionRecord``'s fields, in order).
RECORD = (sessions.c.key, sessions.c.user_id, sessions.c.created, sessions.c.last_seen,
          sessions.c.idle_deadline, sessions.c.absolute_deadline,
          sa.cast(sa.null(), UTCDateTime).label("ended_at"),
           sa.cast(sa.null(), sa.String(32)).label("end_reason"),
           sessions.c.ip, sessions.c.user_agent)
#: An ended session's record, from its ``ended`` event (the same columns).
TOMBSTONE = (session_events.c.session_key, session_events.c.user_id,
             session_events.c.created, session_events.c.last_seen,
             session_events.c.idle_deadline, session_events.c.absolute_deadline,
             session_events.c.at, session_events.c.reason,
             session_events.c.ip, session_events.c.user_agent)
ENDED_EVENT = session_events.c.kind == ENDED

#: The data as the database keeps it (JSON text): decoded only when a view reads it.
DATA_TEXT = sa.cast(sessions.c.data, sa.Text).label("data")

#: Where a row that starts with ``RECORD``'s columns has its record.
DATA = len(RECORD)


def record_of(row) -> SessionRecord:
    """The record in a row whose first columns are ``RECORD``'s."""
    key, user_id, created, last_seen, idle, absolute, ended_at, reason, ip, agent = \
        row[:DATA]
    return SessionRecord(
        key=key, user_id=user_id, created=seconds(created), last_seen=seconds(last_seen),
        idle_deadline=seconds(idle), absolute_deadline=seconds(absolute),
        ended_at=seconds(ended_at), end_reason=reason, ip=ip, user_agent=agent)


#: The columns of an ``ended`` event that hold its session's record, in ``RECORD``'s order.
EVENT_COLUMNS = [column.name for column in TOMBSTONE]
