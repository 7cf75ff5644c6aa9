"""balances without history sums; one active session per server; members' names

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 15:30:00

- projects.closed_*_cents: what the project's stopped sessions were charged (subsidy, co-pay,
  credit taken), added by the release that stops each session. A hold reads one project row and
  the project's active sessions, not every session the project ever ran. Filled here from the
  sessions already stopped.
- uq_sessions_active_server: a partial unique index, so the database itself refuses a second
  active session for one user's server, whatever a caller does.
- members.name / members.email: what a course roster says of each student, kept.
- sessions.begun: false while a server waits in a batch queue (Slurm): its hold is made, its
  metering starts only when the job starts (`Ledger.begin`), so queued time is never charged.
- sessions fillfactor 45 on PostgreSQL (was 80): a metering tick updates *every* active
  session, so a page needs room for a second copy of all its rows for the updates to stay on
  the page (HOT: no index touched); at 80 most of them spilled to other pages and wrote an
  entry in every index. Measured on 20,000 sessions: the tick's writes 0.7 s -> 0.33 s.
  Pages written before this keep their old packing until rewritten.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_CLOSED = ("closed_subsidy_cents", "closed_copay_cents", "closed_credit_cents")


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        for column in _CLOSED:
            batch_op.add_column(
                sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
            )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("begun", sa.Boolean(), nullable=False, server_default=sa.text("true"))
        )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("name", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("email", sa.String(length=254), nullable=False, server_default="")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions SET (fillfactor = 45)")
    op.create_index(
        "uq_sessions_active_server",
        "sessions",
        ["username", "server_name"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    # credit a stopped session took: the subsidy its list cost would have drawn at its rate,
    # less what the subsidy paid (slicehub.quota.ledger._credit_taken), never below zero
    taken = (
        "CASE WHEN charged_list_cents * rate_bp / 10000 > charged_subsidy_cents "
        "THEN charged_list_cents * rate_bp / 10000 - charged_subsidy_cents ELSE 0 END"
    )
    stopped = "FROM sessions s WHERE s.project_id = projects.id AND s.status = 'stopped'"
    op.execute(
        "UPDATE projects SET "
        f"closed_subsidy_cents = COALESCE((SELECT SUM(charged_subsidy_cents) {stopped}), 0), "
        "closed_copay_cents = COALESCE((SELECT SUM(charged_list_cents - charged_subsidy_cents) "
        f"{stopped}), 0), "
        f"closed_credit_cents = COALESCE((SELECT SUM({taken}) {stopped}), 0)"
    )


def downgrade() -> None:
    op.drop_index("uq_sessions_active_server", table_name="sessions")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions SET (fillfactor = 80)")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("begun")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("email")
        batch_op.drop_column("name")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        for column in reversed(_CLOSED):
            batch_op.drop_column(column)
