"""the host's own table

Revision ID: h0001
Revises:
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "h0001"
down_revision = None
branch_labels = ("hostapp",)
depends_on = None


def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("text", sa.String(200), nullable=False))


def downgrade():
    op.drop_table("notes")
