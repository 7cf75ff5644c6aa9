"""The centre staff's changes to the ledger: schemes, projects (and the hub group a project takes
members from), grants, members, prices, class windows. Every change is checked first, then
written with its audit entries in one transaction (`AdminVerbs._audited`): a change is in the
ledger with its record, or neither is.

Decides what a valid change is (names, amounts, rates, dates, roles, duplicates); a grant is
also refused when it would over-commit its scheme's fund (`slicehub.quota.scheme.fund`). It
does not decide what a change costs anyone: holds, charges and balances are
`slicehub.quota.hold` and `slicehub.quota.metering`. Who may make a change is decided outside
the ledger: whoever can run `slicehub admin` and reach the database is staff, named as `actor`
in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session as DBSession

from slicehub.common.names import GROUP_NAME, PROJECT_ID, SLICE_TYPE_NAME, USERNAME

from .errors import LedgerError, check_amount, check_rate, check_window
from .models import ClassWindow, Grant, Member, Price, Project, Scheme
from .roster import EMAIL
from .scheme.fund import lock_scheme, reserve

POLICIES = ("stop", "full_price")
ROLES = ("member", "pi", "instructor", "student")
MAX_CONCURRENT_SESSIONS = 10_000

T = TypeVar("T")


@dataclass(frozen=True)
class NewMember:
    username: str
    role: str = "member"
    cap_cents: int | None = None
    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class Change:
    """One audit entry: what was done (`action`), to what (`subject`), with which values."""

    action: str
    subject: str
    detail: dict = field(default_factory=dict)


def change(action: str, subject: str, **detail) -> Change:
    return Change(action, subject, detail)


class AdminVerbs:
    """The audited admin verbs of `slicehub.quota.ledger.Ledger` (its `Store` provides the
    session factory, `_project` and `_audit`)."""

    def _audited(
        self, actor: str, now: datetime, write: Callable[[DBSession], T], *changes: Change
    ) -> T:
        """`write(db)`, then `changes` as audit entries by `actor` at `now`, in one transaction.
        Call it after the input is checked: `write` only looks up, refuses conflicts and adds."""
        with self.session.begin() as db:
            result = write(db)
            for c in changes:
                self._audit(db, now, actor, c.action, c.subject, **c.detail)
        return result

    def add_scheme(self, actor, name, rate_bp, fund_cents, now) -> Scheme:
        check_rate(rate_bp)
        check_amount("fund", fund_cents)

        def write(db) -> Scheme:
            if db.scalar(select(Scheme).where(Scheme.name == name)):
                raise LedgerError(f"A scheme named {name!r} exists already.", 409)
            scheme = Scheme(
                name=name, subsidy_rate_bp=rate_bp, fund_cents=fund_cents, created_at=now
            )
            db.add(scheme)
            return scheme

        audit = change("scheme.add", name, rate_bp=rate_bp, fund_cents=fund_cents)
        return self._audited(actor, now, write, audit)

    def add_project(
        self,
        actor,
        slug,
        *,
        scheme,
        name,
        organisation,
        pi,
        valid_from,
        valid_until,
        allowed_slice_types,
        max_concurrent_sessions,
        policy="stop",
        credit_limit_cents=0,
        member_cap_cents=None,
        is_course=False,
        member_group=None,
        now,
    ) -> Project:
        if not isinstance(slug, str) or not PROJECT_ID.fullmatch(slug):
            raise LedgerError(f"{slug!r} is not a project id: use lowercase letters, digits, '-'.")
        if member_group is not None:
            check_group(member_group)
            if is_course:
                raise LedgerError(_COURSE_GROUP.format(slug=slug))
        check_window("project", valid_from, valid_until)
        if policy not in POLICIES:
            raise LedgerError(f"Policy {policy!r} is unknown: use one of {', '.join(POLICIES)}.")
        check_amount("credit limit", credit_limit_cents)
        if member_cap_cents is not None:
            check_amount("member cap", member_cap_cents)
        if (
            not isinstance(max_concurrent_sessions, int)
            or not 1 <= max_concurrent_sessions <= MAX_CONCURRENT_SESSIONS
        ):
            raise LedgerError(
                "The cap on concurrent sessions must be a whole number from 1 to "
                f"{MAX_CONCURRENT_SESSIONS}."
            )
        types = list(allowed_slice_types)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise LedgerError('List the slice types the project may use (or ["*"] for all).')

        def write(db) -> Project:
            sch = db.scalar(select(Scheme).where(Scheme.name == scheme))
            if sch is None:
                raise LedgerError(f"There is no scheme {scheme!r}.", 404)
            if db.scalar(select(Project).where(Project.slug == slug)):
                raise LedgerError(f"A project {slug!r} exists already.", 409)
            project = Project(
                slug=slug,
                name=name,
                organisation=organisation,
                pi=pi,
                scheme_id=sch.id,
                valid_from=valid_from,
                valid_until=valid_until,
                allowed_slice_types=json.dumps(types),
                max_concurrent_sessions=max_concurrent_sessions,
                policy=policy,
                credit_limit_cents=credit_limit_cents,
                member_cap_cents=member_cap_cents,
                is_course=is_course,
                member_group=member_group,
                created_at=now,
            )
            db.add(project)
            return project

        group = {} if member_group is None else {"member_group": member_group}
        audit = change(
            "project.add",
            slug,
            scheme=scheme,
            policy=policy,
            types=types,
            course=is_course,
            **group,
        )
        return self._audited(actor, now, write, audit)

    def set_member_group(self, actor, project, member_group: str | None, now) -> str | None:
        """Name the hub group whose members are `project`'s members too (None: none, member
        rows only); the group it named before. Member rows are left as they are."""
        if member_group is not None:
            check_group(member_group)
        detail = {"member_group": member_group}  # and the one it replaces, once read

        def write(db) -> str | None:
            p = self._project(db, project, lock=True)
            if p.is_course and member_group is not None:
                raise LedgerError(_COURSE_GROUP.format(slug=project))
            detail["before"] = p.member_group
            p.member_group = member_group
            return detail["before"]

        # `_audited` writes the entry after `write`, in its transaction: `detail` is complete
        audit = Change("project.member_group", project, detail)
        return self._audited(actor, now, write, audit)

    def set_parking(
        self,
        actor,
        project,
        now,
        idle_minutes: int | None = None,
        warning_minutes: int | None = None,
        opt_out: bool = False,
    ) -> None:
        """`project`'s own parking: idle window and warning lead in minutes (None: the site's),
        and whether it is exempt (honoured only where the site's `projects_may_opt_out`)."""
        for name, value in (("idle window", idle_minutes), ("warning lead", warning_minutes)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1440
            ):
                raise LedgerError(f"The {name} must be a whole number of minutes, 1 to 1,440.")
        if idle_minutes is not None and warning_minutes is not None:
            if warning_minutes >= idle_minutes:
                raise LedgerError(
                    f"The warning lead ({warning_minutes} min) must be shorter than the idle "
                    f"window ({idle_minutes} min)."
                )

        def write(db) -> None:
            p = self._project(db, project, lock=True)
            p.idle_minutes, p.idle_warning_minutes = idle_minutes, warning_minutes
            p.parking_opt_out = bool(opt_out)

        audit = change(
            "project.parking",
            project,
            idle_minutes=idle_minutes,
            warning_minutes=warning_minutes,
            opt_out=bool(opt_out),
        )
        return self._audited(actor, now, write, audit)

    def add_grant(
        self, actor, project, amount_cents, valid_from, valid_until, now, note=""
    ) -> Grant:
        check_amount("grant", amount_cents, positive=True)
        check_window("grant", valid_from, valid_until)

        def write(db) -> Grant:
            # the scheme's row first, then the project's (the fund's lock order), so that no
            # grant takes the scheme's committed total past its fund
            scheme = lock_scheme(db, self._project(db, project).scheme_id, self._is_sqlite)
            p = self._project(db, project, lock=True)
            reserve(db, scheme, amount_cents, f"A grant to {project}")
            grant = Grant(
                project_id=p.id,
                amount_cents=amount_cents,
                valid_from=valid_from,
                valid_until=valid_until,
                note=note,
                created_at=now,
            )
            db.add(grant)
            return grant

        audit = change(
            "grant.add",
            project,
            amount_cents=amount_cents,
            valid_from=valid_from,
            valid_until=valid_until,
        )
        return self._audited(actor, now, write, audit)

    def add_member(
        self, actor, project, username, now, role="member", cap_cents=None, name="", email=""
    ) -> Member:
        (member,) = self.add_members(
            actor, project, [NewMember(username, role, cap_cents, name, email)], now
        )
        return member

    def add_members(self, actor, project, members: list[NewMember], now) -> list[Member]:
        """Add `members` to `project` in one transaction: all of them, or none (a class
        roster of hundreds is one insert, not hundreds of transactions)."""
        seen = set()
        for m in members:
            _check_member(m)
            if m.username in seen:
                raise LedgerError(f"{m.username} is listed twice.")
            seen.add(m.username)

        def write(db) -> list[Member]:
            p = self._project(db, project)
            exists = db.scalars(
                select(Member.username).where(
                    Member.project_id == p.id, Member.username.in_(sorted(seen))
                )
            ).first()
            if exists:
                raise LedgerError(f"{exists} is already a member of {project}.", 409)
            rows = [
                Member(
                    project_id=p.id,
                    username=m.username,
                    role=m.role,
                    cap_cents=m.cap_cents,
                    name=m.name,
                    email=m.email,
                )
                for m in members
            ]
            db.add_all(rows)
            return rows

        audits = [
            change("member.add", f"{project}/{m.username}", role=m.role, cap_cents=m.cap_cents)
            for m in members
        ]
        return self._audited(actor, now, write, *audits)

    def set_price(self, actor, slice_type, cents_per_hour, effective_from, now) -> Price:
        check_amount("price", cents_per_hour)
        if effective_from < now:
            raise LedgerError(
                f"A price cannot take effect in the past ({effective_from:%Y-%m-%d %H:%M}); "
                "sessions already charged keep the prices they were held at."
            )
        if not isinstance(slice_type, str) or not SLICE_TYPE_NAME.fullmatch(slice_type):
            raise LedgerError(f"{slice_type!r} is not a slice type name.")

        def write(db) -> Price:
            clash = db.scalar(
                select(Price).where(
                    Price.slice_type == slice_type, Price.effective_from == effective_from
                )
            )
            if clash:
                raise LedgerError(f"{slice_type} already has a price from {effective_from}.", 409)
            price = Price(
                slice_type=slice_type,
                cents_per_hour=cents_per_hour,
                effective_from=effective_from,
                created_at=now,
            )
            db.add(price)
            return price

        audit = change(
            "price.set", slice_type, cents_per_hour=cents_per_hour, effective_from=effective_from
        )
        return self._audited(actor, now, write, audit)

    def add_class_window(self, actor, project, starts_at, ends_at, now) -> ClassWindow:
        check_window("class window", starts_at, ends_at)

        def write(db) -> ClassWindow:
            p = self._project(db, project)
            if not p.is_course:
                raise LedgerError(f"{project} is not a course; class windows are for courses.")
            window = ClassWindow(project_id=p.id, starts_at=starts_at, ends_at=ends_at)
            db.add(window)
            return window

        audit = change("window.add", project, starts_at=starts_at, ends_at=ends_at)
        return self._audited(actor, now, write, audit)


# a group's members are plain members, whom a course's class windows and student caps would
# not bind: a course's students come from its roster
_COURSE_GROUP = (
    "{slug} is a course: its students come from its roster, so it takes no members from a group."
)


def check_group(name) -> None:
    """A hub group name a project may name as its member group (`GROUP_NAME`)."""
    if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
        raise LedgerError(
            f"{str(name)[:100]!r} is not a group name: use letters, digits, '.', '_' and '-', "
            "at most 100 characters, as the hub names the group."
        )


def _check_member(m: NewMember) -> None:
    if not isinstance(m.username, str) or not USERNAME.fullmatch(m.username):
        raise LedgerError(f"{m.username!r} is not a user name.")
    if m.role not in ROLES:
        raise LedgerError(f"Role {m.role!r} is unknown: use one of {', '.join(ROLES)}.")
    if m.cap_cents is not None:
        check_amount("member cap", m.cap_cents)
    if len(m.name) > 200 or len(m.email) > 254:
        raise LedgerError(f"The name or e-mail of {m.username} is too long.")
    if m.email and not EMAIL.match(m.email):
        raise LedgerError(f"{m.email!r} is not an e-mail address.")
