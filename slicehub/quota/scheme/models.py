"""The scheme's workflow tables (migration 0007), on the ledger's `Base`.

An application (a PI's request for compute, with its team and its compute request per slice
type) is reviewed by assigned reviewers, who score it per criterion of the scheme unless they
declare a conflict; one decision closes it and, when it approves, names the project it created.
A change request asks to change an active project (a top-up, a later end, members); a progress
report covers one period of a project. Statuses live in one column per table and change only
through `slicehub.quota.scheme.states`.

Money is integer cents, rates basis points, times UTC; JSON columns are TEXT. What the scheme
itself gains (criteria, the highest rate, the report period) and a project's own rate are
columns of `slicehub.quota.models`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from slicehub.db import UTCDateTime

from ..models import Base


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheme_id: Mapped[int] = mapped_column(ForeignKey("schemes.id"), index=True)
    applicant: Mapped[str] = mapped_column(String(100), index=True)  # the PI's hub user name
    email: Mapped[str] = mapped_column(String(254), default="")
    organisation: Mapped[str] = mapped_column(String(200), default="")
    org_type: Mapped[str] = mapped_column(String(32), default="")
    title: Mapped[str] = mapped_column(String(200), default="")
    abstract: Mapped[str] = mapped_column(Text, default="")
    ai_area: Mapped[str] = mapped_column(String(100), default="")
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rate_bp: Mapped[int] = mapped_column(Integer)  # requested
    status: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True)


class ApplicationMember(Base):
    __tablename__ = "application_members"
    __table_args__ = (UniqueConstraint("application_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), default="")
    role: Mapped[str] = mapped_column(String(16))  # pi | member


class ApplicationRequest(Base):
    __tablename__ = "application_requests"
    __table_args__ = (UniqueConstraint("application_id", "slice_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    slice_type: Mapped[str] = mapped_column(String(64))
    gpu_hours: Mapped[int] = mapped_column(Integer)
    justification: Mapped[str] = mapped_column(Text, default="")


class ReviewerAssignment(Base):
    __tablename__ = "reviewer_assignments"
    __table_args__ = (UniqueConstraint("application_id", "reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(100), index=True)
    assigned_by: Mapped[str] = mapped_column(String(100))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    conflict_note: Mapped[str] = mapped_column(Text, default="")
    declared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("assignment_id", "criterion"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("reviewer_assignments.id"))
    criterion: Mapped[str] = mapped_column(String(64))
    score: Mapped[int] = mapped_column(Integer)  # 0..10
    comment: Mapped[str] = mapped_column(Text, default="")
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), unique=True)
    outcome: Mapped[str] = mapped_column(String(32))  # approved | approved_with_changes | rejected
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)  # the approved subsidy
    rate_bp: Mapped[int] = mapped_column(Integer, default=0)
    compute: Mapped[str] = mapped_column(Text, default="{}")  # {slice type: GPU-hours}
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    terms: Mapped[str] = mapped_column(Text, default="")
    reasons: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(100))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChangeRequest(Base):
    __tablename__ = "change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))  # top_up | extension | members
    amount_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # top_up
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # extension
    members: Mapped[str] = mapped_column(Text, default="{}")  # {"add": [...], "remove": [...]}
    justification: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | approved | denied
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class ProgressReport(Base):
    __tablename__ = "progress_reports"
    __table_args__ = (UniqueConstraint("project_id", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prefilled: Mapped[str] = mapped_column(Text, default="{}")  # from the ledger, JSON
    narrative: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)  # due | submitted
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    submitted_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
