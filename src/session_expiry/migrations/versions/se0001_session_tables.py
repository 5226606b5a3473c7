"""the session tables: open sessions, their events and outbox, refused requests, password
failures (the base of the add-on's branch, ``session_expiry``)

A database made by session-expiry 0.1.0's last migration (0007 of the application's
history, when these tables were the demo's) already holds them, in this very shape:
then this revision creates nothing, and the branch goes on from here.

Revision ID: se0001
Revises:
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "se0001"
down_revision = None
branch_labels = ("session_expiry",)
depends_on = None

TABLES = ("sessions", "session_events", "session_outbox", "session_refusals",
          "session_failures")


def _record_columns() -> list[sa.Column]:
    """A session's record besides its key, user and end: in ``sessions`` (open) and in its
    ``ended`` event (as it ended)."""
    timestamp = sa.DateTime(timezone=True)
    return [sa.Column("created", timestamp, nullable=False),
            sa.Column("last_seen", timestamp, nullable=False),
            sa.Column("idle_deadline", timestamp, nullable=False),
            sa.Column("absolute_deadline", timestamp, nullable=False),
            sa.Column("ip", sa.String(45), nullable=True),
            sa.Column("user_agent", sa.String(512), nullable=True)]


def upgrade():
    present = set(sa.inspect(op.get_bind()).get_table_names()) & set(TABLES)
    if present == set(TABLES):
        return  # made by session-expiry 0.1.0's last migration: already this shape
    if present:
        raise RuntimeError(
            f"this database holds the session tables {sorted(present)} but not all of them: "
            "it was made by a migration older than session-expiry 0.1.0's last (0007); "
            "upgrade it with session-expiry 0.1.0 first, then with this release")
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        *_record_columns(),
        sa.Column("sweep_at", timestamp, nullable=False),
    )
    # Room on each page for touches to stay HOT updates (no index covers what they change).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions SET (fillfactor = 70)")
    op.create_index("ix_sessions_sweep_at", "sessions", ["sweep_at"])
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_created", "sessions", ["created"])

    op.create_table(
        "session_events",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", timestamp, nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        *_record_columns(),
        sa.UniqueConstraint("session_key", "kind", name="uq_session_events_session_key_kind"),
    )
    # The report reads the last 24 hours from this index alone (PostgreSQL: index-only).
    op.create_index("ix_session_events_at_key", "session_events", ["at", "session_key"],
                    postgresql_include=["kind", "reason", "duration", "created"])
    op.create_index("ix_session_events_reason_at_key", "session_events",
                    ["reason", "at", "session_key"])
    op.create_index("ix_session_events_user_id_at_key", "session_events",
                    ["user_id", "at", "session_key"])

    op.create_table(
        "session_outbox",
        sa.Column("event_id", id_type, primary_key=True, autoincrement=False),
    )
    op.create_table(
        "session_refusals",
        sa.Column("hour", timestamp, primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "session_failures",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last", timestamp, nullable=False),
    )


def downgrade():
    for table in reversed(TABLES):
        op.drop_table(table)
