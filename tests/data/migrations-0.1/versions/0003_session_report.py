"""the session report: refused-request counts, indexes for its lists and figures; user ids
never reused

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # A removed user's id is never given to a new user: a session left open for the old
    # one (the memory store, a session database that was down) cannot become the new one's.
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("users", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass
    op.create_table(
        "session_refusals",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    # "Started in the last 24 h"; created never changes, so touches stay HOT.
    op.create_index("ix_sessions_created", "sessions", ["created"])
    # Recent ends, newest first, keyset-paginated by (at, session_key); PostgreSQL
    # reads the summary's 24 hours from the index alone.
    op.drop_index("ix_session_events_at", table_name="session_events")
    op.create_index("ix_session_events_at_key", "session_events", ["at", "session_key"],
                    postgresql_include=["kind", "reason", "duration"])
    op.create_index("ix_session_events_reason_at_key", "session_events",
                    ["reason", "at", "session_key"])
    op.create_index("ix_session_events_user_id_at_key", "session_events",
                    ["user_id", "at", "session_key"])


def downgrade():
    op.drop_index("ix_session_events_user_id_at_key", table_name="session_events")
    op.drop_index("ix_session_events_reason_at_key", table_name="session_events")
    op.drop_index("ix_session_events_at_key", table_name="session_events")
    op.create_index("ix_session_events_at", "session_events", ["at"])
    op.drop_index("ix_sessions_created", table_name="sessions")
    op.drop_table("session_refusals")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("users", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": False}):
            pass
