"""sessions can be extended; warnings are given again after an extension

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 18:40:00

- sessions.extended: how many times the session was extended (`Ledger.extend`).
- warnings.round: the session's `extended` when the warning was given. A warning is given once
  per level and round, so after an extension the 80% / 95% / 10-minute warnings come again,
  measured against the new budget and end; the earlier ones stay on record.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# 0001 left the old unique constraint unnamed; this names it so batch mode (SQLite) can drop it
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extended", sa.Integer(), nullable=False, server_default="0"))
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table(
        "warnings", schema=None, naming_convention=None if postgres else _NAMES
    ) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint(
            "warnings_session_id_level_key" if postgres else "uq_warnings_session_id_level",
            type_="unique",
        )
        batch_op.create_unique_constraint(
            "uq_warnings_session_level_round", ["session_id", "level", "round"]
        )


def downgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_constraint("uq_warnings_session_level_round", type_="unique")
        batch_op.drop_column("round")
        batch_op.create_unique_constraint("warnings_session_id_level_key", ["session_id", "level"])
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("extended")
