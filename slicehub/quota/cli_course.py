"""`slicehub admin course add|roster|window`: a course (a project with a roster, per-student
caps and class windows) from a terminal. Pre-warming is `slicehub.quota.cli_prewarm`.

Decides how a roster CSV and typed windows become ledger writes, all or nothing: the whole
roster is read and checked before the ledger opens (`slicehub.quota.roster`), every window must
lie inside the course's dates, and a window the site cannot hold is refused with the numbers by
the check the composition root gives (`window_capacity`; the ledger knows no slices).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from slicehub.common.money import format_money

from . import statement
from .admin import NewMember
from .cli_input import CliError
from .cli_project import add_project, check_project
from .ledger import Ledger
from .roster import read_roster
from .statement_render import hkt


def course_windows(windows, start: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    for a, b in windows:
        if a < start or b > until:
            raise CliError(
                f"The class window {hkt(a)} to {hkt(b)} HKT lies outside the course's dates "
                f"({hkt(start)} to {hkt(until)} HKT)."
            )
    return sorted(windows)


def check_course(args, now: datetime) -> None:
    check_project(args, now)
    args.windows = course_windows(args.window, *args.period)
    args.students = read_roster(args.roster).students  # all of it, before the ledger opens


def _check_capacity(args, slice_type: str, seats: int, windows) -> None:
    """Refuse windows the site cannot hold (the composition root gives the check: the quota
    service knows no slices); a window that could not be checked is said so, not refused."""
    check = getattr(args, "window_capacity", None)
    if check is None or seats == 0:
        return
    for a, b in windows:
        try:
            unchecked = check(args.slug, slice_type, seats, a, b)
        except ValueError as e:
            raise CliError(f"Class window {hkt(a)} to {hkt(b)} HKT: {e}") from None
        if unchecked:
            print(f"Note: {unchecked}", file=sys.stderr)


def course_add(args, ledger: Ledger, now: datetime) -> None:
    (start, until), windows, students = args.period, args.windows, args.students
    sessions = args.max_sessions or len(students)
    with ledger.transaction():  # all of it, or (a refusal here or by the site) none
        add_project(
            args, ledger, now, [args.slice_type], sessions, args.student_cap, is_course=True
        )
        if args.grant is not None:
            ledger.add_grant(args.actor, args.slug, args.grant, start, until, now, note=args.note)
        for a, b in windows:
            ledger.add_class_window(args.actor, args.slug, a, b, now)
        ledger.add_members(args.actor, args.slug, _students(students), now)
        _check_capacity(args, args.slice_type, min(sessions, len(students)), windows)
    grant = f", grant {format_money(args.grant)}" if args.grant is not None else ""
    print(
        f"Added course {args.slug}: {len(students)} students on {args.slice_type}, "
        f"cap {format_money(args.student_cap)} each, {len(windows)} class window(s), "
        f"at most {sessions} sessions at once{grant}."
    )


def _students(students) -> list[NewMember]:
    return [NewMember(s.username, "student", None, s.name, s.email) for s in students]


def check_roster(args, now: datetime) -> None:
    args.students = read_roster(args.roster).students


def course_roster(args, ledger: Ledger, now: datetime) -> None:
    with ledger.transaction():
        [(project, _scheme)] = statement.project_overview(ledger, args.slug)
        if not project.is_course:
            raise CliError(f"{args.slug} is not a course; add members with 'admin member add'.")
        members = statement.project_members(ledger, args.slug)
        new = [s for s in args.students if s.username not in members]
        if new:
            ledger.add_members(args.actor, args.slug, _students(new), now)
    skipped = len(args.students) - len(new)
    students = sum(1 for r in members.values() if r == "student") + len(new)
    print(
        f"Added {len(new)} student(s) to {args.slug}"
        + (f"; {skipped} already member(s), left as they were" if skipped else "")
        + f". The course has {students} students and allows "
        f"{project.max_concurrent_sessions} sessions at once."
    )


def course_window(args, ledger: Ledger, now: datetime) -> None:
    with ledger.transaction():
        [(project, _scheme)] = statement.project_overview(ledger, args.slug)
        if not project.is_course:
            raise CliError(f"{args.slug} is not a course; class windows are for courses.")
        windows = course_windows(args.window, project.valid_from, project.valid_until)
        types = json.loads(project.allowed_slice_types)
        if len(types) == 1 and types[0] != "*":
            members = statement.project_members(ledger, args.slug)
            students = sum(1 for role in members.values() if role == "student")
            seats = min(students, project.max_concurrent_sessions)  # at once, at most
        for a, b in windows:
            ledger.add_class_window(args.actor, args.slug, a, b, now)
        if len(types) == 1 and types[0] != "*":
            _check_capacity(args, types[0], seats, windows)
    print(f"Added {len(windows)} class window(s) to {args.slug}.")
