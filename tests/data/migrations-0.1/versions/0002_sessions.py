"""sessions and session_events: the SQL store's lifecycle records and end events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPEN = sa.text("ended_at IS NULL")
ENDED = sa.text("ended_at IS NOT NULL")
UNNOTIFIED = sa.text("notified_at IS NULL")


def upgrade():
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", timestamp, nullable=False),
        sa.Column("last_seen", timestamp, nullable=False),
        sa.Column("idle_deadline", timestamp, nullable=False),
        sa.Column("absolute_deadline", timestamp, nullable=False),
        sa.Column("sweep_at", timestamp, nullable=False),
        sa.Column("ended_at", timestamp, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
    )
    # Room on each page for touches to stay HOT updates (no indexed column changes).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions SET (fillfactor = 70)")
    op.create_index("ix_sessions_sweep_at", "sessions", ["sweep_at"],
                    postgresql_where=OPEN, sqlite_where=OPEN)
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_ended_at", "sessions", ["ended_at"],
                    postgresql_where=ENDED, sqlite_where=ENDED)

    op.create_table(
        "session_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", timestamp, nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        sa.Column("notified_at", timestamp, nullable=True),
        sa.UniqueConstraint("session_key", "kind", name="uq_session_events_session_key_kind"),
    )
    op.create_index("ix_session_events_outbox", "session_events", ["id"],
                    postgresql_where=UNNOTIFIED, sqlite_where=UNNOTIFIED)
    op.create_index("ix_session_events_at", "session_events", ["at"])


def downgrade():
    op.drop_table("session_events")
    op.drop_table("sessions")
