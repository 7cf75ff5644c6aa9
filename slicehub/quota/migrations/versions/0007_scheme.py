"""the scheme's workflow: applications, reviews, decisions, change requests, progress reports

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 09:00:00

- schemes.criteria (JSON list of {key, title, weight}, "[]" for a scheme before this upgrade),
  schemes.max_rate_bp (9000: the exceptional rate a decision may grant),
  schemes.report_period_months (3).
- projects.subsidy_rate_bp: the project's own rate from its decision (NULL: its scheme's, as
  every project before this upgrade).
- applications, application_members, application_requests, reviewer_assignments, scores,
  decisions, change_requests, progress_reports (slicehub.quota.scheme.models).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SCHEME = ("criteria", "max_rate_bp", "report_period_months")
_TABLES = (
    "progress_reports",
    "change_requests",
    "decisions",
    "scores",
    "reviewer_assignments",
    "application_requests",
    "application_members",
    "applications",
)


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=False)


def upgrade() -> None:
    # in place, as 0005 does: batch mode's copy would be refused by the foreign keys
    with op.batch_alter_table("schemes", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("criteria", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column("max_rate_bp", sa.Integer(), nullable=False, server_default="9000")
        )
        batch_op.add_column(
            sa.Column("report_period_months", sa.Integer(), nullable=False, server_default="3")
        )
    with op.batch_alter_table("projects", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("subsidy_rate_bp", sa.Integer(), nullable=True))

    op.create_table(
        "applications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scheme_id", sa.Integer(), sa.ForeignKey("schemes.id"), nullable=False),
        sa.Column("applicant", sa.String(100), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("org_type", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        _text("abstract"),
        sa.Column("ai_area", sa.String(100), nullable=False),
        _when("period_start"),
        _when("period_end"),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _when("created_at", nullable=False),
        _when("submitted_at"),
        _when("decided_at"),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=True),
    )
    for column in ("scheme_id", "applicant", "status"):
        op.create_index(f"ix_applications_{column}", "applications", [column])
    op.create_table(
        "application_members",
        sa.Column("id", sa.Integer(), primary_key=True),
        _application_id(),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.UniqueConstraint("application_id", "username"),
    )
    op.create_table(
        "application_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        _application_id(),
        sa.Column("slice_type", sa.String(64), nullable=False),
        sa.Column("gpu_hours", sa.Integer(), nullable=False),
        _text("justification"),
        sa.UniqueConstraint("application_id", "slice_type"),
    )
    op.create_table(
        "reviewer_assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        _application_id(),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("assigned_by", sa.String(100), nullable=False),
        _when("assigned_at", nullable=False),
        sa.Column("conflict", sa.Boolean(), nullable=False),
        _text("conflict_note"),
        _when("declared_at"),
        sa.UniqueConstraint("application_id", "reviewer"),
    )
    op.create_index("ix_reviewer_assignments_reviewer", "reviewer_assignments", ["reviewer"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "assignment_id",
            sa.Integer(),
            sa.ForeignKey("reviewer_assignments.id"),
            nullable=False,
        ),
        sa.Column("criterion", sa.String(64), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        _text("comment"),
        _when("scored_at", nullable=False),
        sa.UniqueConstraint("assignment_id", "criterion"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "application_id",
            sa.Integer(),
            sa.ForeignKey("applications.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        _text("compute"),
        _when("valid_from"),
        _when("valid_until"),
        _text("terms"),
        _text("reasons"),
        sa.Column("decided_by", sa.String(100), nullable=False),
        _when("decided_at", nullable=False),
    )
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        _project_id(),
        sa.Column("requested_by", sa.String(100), nullable=False),
        _when("requested_at", nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        _when("valid_until"),
        _text("members"),
        _text("justification"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=True),
        _when("decided_at"),
        _text("note"),
    )
    op.create_index("ix_change_requests_status", "change_requests", ["status"])
    op.create_table(
        "progress_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        _project_id(),
        _when("period_start", nullable=False),
        _when("period_end", nullable=False),
        _when("due_at", nullable=False),
        _text("prefilled"),
        _text("narrative"),
        sa.Column("status", sa.String(16), nullable=False),
        _when("submitted_at"),
        sa.Column("submitted_by", sa.String(100), nullable=True),
        sa.UniqueConstraint("project_id", "period_start"),
    )
    op.create_index("ix_progress_reports_status", "progress_reports", ["status"])
    for table in ("application_members", "application_requests", "reviewer_assignments"):
        op.create_index(f"ix_{table}_application_id", table, ["application_id"])
    for table in ("change_requests", "progress_reports"):
        op.create_index(f"ix_{table}_project_id", table, ["project_id"])


def _application_id() -> sa.Column:
    return sa.Column(
        "application_id", sa.Integer(), sa.ForeignKey("applications.id"), nullable=False
    )


def _project_id() -> sa.Column:
    return sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id"), nullable=False)


def downgrade() -> None:
    for table in _TABLES:
        op.drop_table(table)  # its indexes go with it
    with op.batch_alter_table("projects", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("subsidy_rate_bp")
    with op.batch_alter_table("schemes", schema=None, recreate="never") as batch_op:
        for name in _SCHEME:
            batch_op.drop_column(name)
