"""idle sessions are parked: the projects' parking settings and the sessions' idleness

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00

- projects.idle_minutes, projects.idle_warning_minutes: the project's own idle window and
  warning lead (NULL: the site's [parking]); projects.parking_opt_out: exempted by staff, where
  the site allows it.
- sessions.idle_since, idle_warned_at, idle_park_at: what the culler's last reading found (NULL
  while working, or when no warning stands).
- sessions.idle_seconds, idle_list_cents, idle_subsidy_cents: at release, the idle stretch the
  session was charged for at its end and its cost (0 for every session before this upgrade).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PROJECT = ("idle_minutes", "idle_warning_minutes", "parking_opt_out")
_SESSION = (
    "idle_since",
    "idle_warned_at",
    "idle_park_at",
    "idle_seconds",
    "idle_list_cents",
    "idle_subsidy_cents",
)


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("idle_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("idle_warning_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "parking_opt_out", sa.Boolean(), nullable=False, server_default=sa.text("false")
            )
        )
    with op.batch_alter_table("sessions", schema=None, recreate="never") as batch_op:
        for name in ("idle_since", "idle_warned_at", "idle_park_at"):
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("idle_seconds", sa.Integer(), nullable=False, server_default="0")
        )
        for name in ("idle_list_cents", "idle_subsidy_cents"):
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    # in place, as 0004 does: batch mode's copy would be refused by the foreign keys
    for table, columns in (("sessions", _SESSION), ("projects", _PROJECT)):
        with op.batch_alter_table(table, schema=None, recreate="never") as batch_op:
            for name in columns:
                batch_op.drop_column(name)
