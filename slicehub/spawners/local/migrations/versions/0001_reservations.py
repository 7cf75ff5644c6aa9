"""slice reservations and the resources they hold

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slice_reservations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("holder", sa.String(255), nullable=False, unique=True),
        sa.Column("slice_type", sa.String(64), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("assignment", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_end", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "slice_reserved_resources",
        sa.Column("resource", sa.String(255), primary_key=True),
        sa.Column(
            "reservation_id",
            sa.Integer,
            sa.ForeignKey("slice_reservations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    )


def downgrade() -> None:
    op.drop_table("slice_reserved_resources")
    op.drop_table("slice_reservations")
