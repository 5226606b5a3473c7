"""``sessions`` holds open sessions only: ending one moves its record into its ``ended`` event

A tombstone kept in ``sessions`` made ending a session an UPDATE: a new version of the row
with an entry in three indexes (``ended_at`` is in the partial indexes' predicate, so never a
HOT update), then pruned again. Now ending deletes the row and its ``ended`` event, written
anyway, keeps the record as it ended: the tombstone the pages read to say why a session
ended. The hot table holds only what is open, so its partial indexes become plain ones.

Events written before this revision get their session's record from its tombstone; one
whose tombstone was already pruned keeps what the event knows (its end as last seen and as
both deadlines, its start as ``at - duration``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = sa.text("ended_at IS NULL")
ENDED = sa.text("ended_at IS NOT NULL")
RECORD = ("created", "last_seen", "idle_deadline", "absolute_deadline", "ip", "user_agent")
REQUIRED = RECORD[:4]


def _started() -> str:
    """An event's start, from its end and its length, in this database's SQL."""
    if op.get_bind().dialect.name == "sqlite":  # the store keeps naive UTC text
        return "strftime('%Y-%m-%d %H:%M:%f000', at, '-' || duration || ' seconds')"
    return "at - make_interval(secs => duration)"


def upgrade():
    with op.batch_alter_table("session_events") as batch:
        for name in REQUIRED:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ip", sa.String(45), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(512), nullable=True))
    copied = ", ".join(f"{name} = s.{name}" for name in RECORD)
    op.execute(f"UPDATE session_events SET {copied} FROM sessions AS s "  # noqa: S608 (our names)
               "WHERE s.key = session_events.session_key")
    op.execute(f"UPDATE session_events SET created = {_started()}, last_seen = at, "  # noqa: S608
               "idle_deadline = at, absolute_deadline = at WHERE created IS NULL")
    with op.batch_alter_table("session_events") as batch:
        for name in REQUIRED:
            batch.alter_column(name, existing_type=sa.DateTime(timezone=True), nullable=False)
    op.drop_index("ix_session_events_at_key", table_name="session_events")
    op.create_index("ix_session_events_at_key", "session_events", ["at", "session_key"],
                    postgresql_include=["kind", "reason", "duration", "created"])

    op.execute("DELETE FROM sessions WHERE ended_at IS NOT NULL")
    for name, column in (("ix_sessions_sweep_at", "sweep_at"), ("ix_sessions_user_id", "user_id")):
        op.drop_index(name, table_name="sessions")
        op.create_index(name, "sessions", [column])
    op.drop_index("ix_sessions_ended_at", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("end_reason")
        batch.drop_column("ended_at")


def downgrade():
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("end_reason", sa.String(32), nullable=True))
    # The tombstones come back from the events that hold them.
    op.execute("INSERT INTO sessions (key, user_id, data, version, created, last_seen, "
               "idle_deadline, absolute_deadline, sweep_at, ended_at, end_reason, ip, "
               "user_agent) SELECT session_key, user_id, NULL, 0, created, last_seen, "
               "idle_deadline, absolute_deadline, at, at, reason, ip, user_agent "
               "FROM session_events WHERE kind = 'ended'")
    op.create_index("ix_sessions_ended_at", "sessions", ["ended_at"],
                    postgresql_where=ENDED, sqlite_where=ENDED)
    for name, column in (("ix_sessions_sweep_at", "sweep_at"), ("ix_sessions_user_id", "user_id")):
        op.drop_index(name, table_name="sessions")
        op.create_index(name, "sessions", [column], postgresql_where=OPEN, sqlite_where=OPEN)

    op.drop_index("ix_session_events_at_key", table_name="session_events")
    op.create_index("ix_session_events_at_key", "session_events", ["at", "session_key"],
                    postgresql_include=["kind", "reason", "duration"])
    with op.batch_alter_table("session_events") as batch:
        for name in reversed(RECORD):
            batch.drop_column(name)
