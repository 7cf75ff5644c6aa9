"""a class starts at once: a course's pre-warming, and pre-warmed sessions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:00:00

- class_prewarm: one row per course that pre-warms (none: it does not): how long before each
  class window its servers start (lead_minutes), how many (seats; NULL: every student on the
  roster), how long into the window an unclaimed one is kept (claim_minutes), its slice type,
  and the project that pays for the time before a student claims a server (paid_by_id: the
  course itself, or a project of the centre's).
- sessions.prewarm_window_id: set on a pre-warmed session, the class window it was started for
  (NULL for every other session, and every session before this upgrade); it is charged to its
  project (the payer), never to the student it waits for.
- sessions.handed_to: the session a claimed pre-warmed session was handed over to, from the
  claim on (the student's own, on the course).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SESSION = ("prewarm_window_id", "handed_to")


def upgrade() -> None:
    op.create_table(
        "class_prewarm",
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("lead_minutes", sa.Integer(), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=True),
        sa.Column("claim_minutes", sa.Integer(), nullable=False),
        sa.Column("slice_type", sa.String(64), nullable=False),
        sa.Column("paid_by_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=False),
    )
    with op.batch_alter_table("sessions", schema=None, recreate="never") as batch_op:
        for name in _SESSION:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
    op.create_index("ix_sessions_prewarm_window_id", "sessions", ["prewarm_window_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_prewarm_window_id", table_name="sessions")
    with op.batch_alter_table("sessions", schema=None, recreate="never") as batch_op:
        for name in _SESSION:
            batch_op.drop_column(name)
    op.drop_table("class_prewarm")
