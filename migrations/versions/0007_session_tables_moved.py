"""the session tables moved to the add-on's own Alembic branch (``session_expiry``)

session-expiry 0.1.0 kept them in this history (0002 to 0007); a database at its last
revision, 0007, continues from here, and the add-on's branch finds its tables already made.
The demo takes them as any host app does: ``version_locations`` in the ini names the
add-on's revisions beside these, and ``alembic upgrade heads`` runs both.

Revision ID: 0007
Revises: 0001
Create Date: 2026-12-06
"""

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
