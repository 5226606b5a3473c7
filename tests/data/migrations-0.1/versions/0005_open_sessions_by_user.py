"""the sessions-by-user index covers open sessions only: ending a session adds no entry to it

Ending a session changes ``ended_at``, an indexed column, so its new row version gets an
entry in every index of ``sessions``. Every query that looks sessions up by user
(a user's own sessions, "end all of a user's sessions", the admin's active list) asks
for open ones, so an index of open sessions serves them all, and a million ended
sessions cost a million fewer random index inserts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OPEN = sa.text("ended_at IS NULL")


def upgrade():
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"],
                    postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade():
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
