"""a project may take its members from a hub group

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:30:00

- projects.member_group: the name of a hub group (a directory group, put into the hub's groups
  at sign-in) whose members are members of the project too: plain members with the project's
  member cap, unless a member row says otherwise. Decided at hold time from the user's groups
  (`slicehub.quota.hold.membership`); NULL, as every project has after this upgrade, means
  member rows only, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_group", sa.String(length=100), nullable=True))


def downgrade() -> None:
    # in place (SQLite 3.35+ drops a plain column itself): batch mode would copy the table into
    # a new one and drop the old, which the foreign keys of grants, members and sessions refuse
    with op.batch_alter_table("projects", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("member_group")
