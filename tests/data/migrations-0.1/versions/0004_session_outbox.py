"""the notification outbox is a table of its own: an event row is written once, never updated

Marking an event sent used to update its ``notified_at``: a new version of the
whole row with an entry in each of its indexes (the column is in the outbox
index's predicate, so never a HOT update), as costly as writing the event, and
the indexes grew by a dead entry per event. Now the id of each event whose
notifications are pending is a row of ``session_outbox``, inserted with the
event and deleted once it was sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNNOTIFIED = sa.text("notified_at IS NULL")


def upgrade():
    op.create_table(
        "session_outbox",
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=False),
    )
    op.execute("INSERT INTO session_outbox (event_id) "
               "SELECT id FROM session_events WHERE notified_at IS NULL")
    op.drop_index("ix_session_events_outbox", table_name="session_events")
    with op.batch_alter_table("session_events") as batch:
        batch.drop_column("notified_at")


def downgrade():
    with op.batch_alter_table("session_events") as batch:
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    # When an event was sent is not kept any more: the time it happened stands in.
    op.execute("UPDATE session_events SET notified_at = at "
               "WHERE id NOT IN (SELECT event_id FROM session_outbox)")
    op.create_index("ix_session_events_outbox", "session_events", ["id"],
                    postgresql_where=UNNOTIFIED, sqlite_where=UNNOTIFIED)
    op.drop_table("session_outbox")
