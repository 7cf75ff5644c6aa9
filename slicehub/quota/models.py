"""The ledger's tables (SQLAlchemy 2). Schema changes go through Alembic
(`slicehub/quota/migrations`).

Scheme → Project → Grants, Members (rows; and a project's member group, a hub group whose members
are members too), class windows and a course's pre-warming; Prices (effective-dated, per slice
type); Sessions (one per notebook server start: the hold and its running totals), Charges
(append-only, one per metered period, unique per session and period start, so a tick applied
twice charges once), Warnings (unique per session and level), and the audit log.

The scheme's workflow (applications, reviews, decisions, change requests, progress reports, the
outbox) has its tables in `slicehub.quota.scheme`, on the same `Base`.

Money columns are integer cents (BigInteger); rates are basis points; times are UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from slicehub.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class Scheme(Base):
    __tablename__ = "schemes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    subsidy_rate_bp: Mapped[int] = mapped_column(Integer)
    fund_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The scheme's workflow (slicehub.quota.scheme): its review criteria, a JSON list of
    # {"key", "title", "weight"} with weights summing to 100; the highest rate a decision may
    # grant (exceptional cases; `subsidy_rate_bp` is the standard one); the months between a
    # project's progress reports.
    criteria: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    max_rate_bp: Mapped[int] = mapped_column(Integer, default=9000, server_default="9000")
    report_period_months: Mapped[int] = mapped_column(Integer, default=3, server_default="3")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    organisation: Mapped[str] = mapped_column(String(200))
    pi: Mapped[str] = mapped_column(String(100))
    scheme_id: Mapped[int] = mapped_column(ForeignKey("schemes.id"))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    allowed_slice_types: Mapped[str] = mapped_column(Text)  # JSON list; ["*"] for all
    max_concurrent_sessions: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(16))  # "stop" | "full_price"
    credit_limit_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    member_cap_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    is_course: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A hub group whose members are the project's members too (plain members, with the
    # project's member cap), decided at hold time from the user's groups; None: rows only.
    member_group: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Parking (slicehub.quota.site_parking): the project's own idle window and warning lead in
    # minutes (None: the site's), and whether staff exempted it (where the site allows that).
    idle_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idle_warning_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parking_opt_out: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # What the project's stopped sessions were charged, added when each one stops: a balance
    # is these three plus its active sessions, never a sum over the project's whole history.
    closed_subsidy_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    closed_copay_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    closed_credit_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The project's own subsidy rate, from the decision that created it (None: its scheme's):
    # a hold charges it (`slicehub.quota.states.load_states`).
    subsidy_rate_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("project_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(16))  # member | pi | instructor | student
    cap_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    email: Mapped[str] = mapped_column(String(254), default="", server_default="")


class ClassWindow(Base):
    __tablename__ = "class_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClassPrewarm(Base):
    """A course that pre-warms (`slicehub.quota.prewarm`): `lead_minutes` before each class
    window its servers start on `slice_type`, for `seats` students (None: the whole roster);
    one not claimed `claim_minutes` into the window is stopped. The time before a claim is
    charged to project `paid_by_id` (the course itself, or a project of the centre's)."""

    __tablename__ = "class_prewarm"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    lead_minutes: Mapped[int] = mapped_column(Integer)
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    claim_minutes: Mapped[int] = mapped_column(Integer)
    slice_type: Mapped[str] = mapped_column(String(64))
    paid_by_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))


class Price(Base):
    __tablename__ = "prices"
    __table_args__ = (UniqueConstraint("slice_type", "effective_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slice_type: Mapped[str] = mapped_column(String(64), index=True)
    cents_per_hour: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Session(Base):
    """One notebook server start: what was held, and what has been charged so far."""

    __tablename__ = "sessions"
    # one active session per server, enforced by the database as well as by the hold
    __table_args__ = (
        Index(
            "uq_sessions_active_server",
            "username",
            "server_name",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    server_name: Mapped[str] = mapped_column(String(255), default="")
    slice_type: Mapped[str] = mapped_column(String(64))
    rate_bp: Mapped[int] = mapped_column(Integer)  # the project's rate when the hold was made
    prices_known: Mapped[int] = mapped_column(Integer, default=0)  # newest Price.id at the hold
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)  # fixed by the hold
    hold_list_cents: Mapped[int] = mapped_column(BigInteger)
    hold_subsidy_cents: Mapped[int] = mapped_column(BigInteger)
    hold_credit_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    metered_until: Mapped[datetime] = mapped_column(UTCDateTime)
    charged_list_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_subsidy_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), index=True)  # active | stopped
    # False while the server waits in a batch queue: held, not yet metered (`Ledger.begin`)
    begun: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stop_reason: Mapped[str] = mapped_column(String(64), default="")
    extended: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times
    # Idleness, as the culler's last reading found it (slicehub.quota.idle): idle since when
    # (None: working), warned when and parked when if it stays idle (None: no warning stands).
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idle_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idle_park_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # At release: the idle stretch it was charged for at its end (parked or not), and its cost
    idle_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    idle_list_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    idle_subsidy_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A pre-warmed session: the class window it was started for (charged to its project, the
    # course's pre-warm payer, never to the student), and once claimed, the student's session
    # it was handed over to (slicehub.quota.prewarm)
    prewarm_window_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    handed_to: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Charge(Base):
    """A metered period. `kind` is "charge", or "reversal" for time charged after a server
    had already stopped (negative amounts; rows are never edited or deleted)."""

    __tablename__ = "charges"
    __table_args__ = (UniqueConstraint("session_id", "period_start", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))  # unique key leads
    project_id: Mapped[int] = mapped_column(Integer, index=True)  # the session's, copied
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    list_cents: Mapped[int] = mapped_column(BigInteger)
    subsidy_cents: Mapped[int] = mapped_column(BigInteger)
    copay_cents: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16), default="charge")


class SessionWarning(Base):
    __tablename__ = "warnings"
    # once per level and round: an extension starts a new round (Session.extended)
    __table_args__ = (
        UniqueConstraint("session_id", "level", "round", name="uq_warnings_session_level_round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    level: Mapped[str] = mapped_column(String(16))  # budget-80 | budget-95 | end-10min
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)  # JSON
