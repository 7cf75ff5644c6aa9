"""`slicehub admin …`, `slicehub statement`, `slicehub report`: the ledger from a terminal.

Decides how what staff type becomes ledger calls: money, times and rates are parsed and
checked first (`slicehub.quota.cli_input`), a class roster is read and checked in full, and only
then is the ledger opened. Every verb that writes does so in one database transaction (see
`Ledger.transaction`), so a refused or failed command leaves the ledger as it was. Projects are
`slicehub.quota.cli_project`, courses `cli_course` (pre-warming `cli_prewarm`), idle parking
`cli_parking`; the read-only
verbs (projects, balance, audit, statements, reports) are `slicehub.quota.cli_reports`; the
scheme's workflow (`slicehub admin scheme criteria`, `slicehub scheme …`) is
`slicehub.quota.scheme.cli`. It does not decide who may do what: whoever can run this command
and reach the database is staff; `--actor` names them in the audit log.

Errors are one sentence on stderr and exit status 2. The ledger itself (slicehub.quota.ledger)
decides every rule about money; this module only refuses what cannot be meant (a negative amount, a
time without a zone) before the ledger sees it.

`slicehub.cli` (the `slicehub` console script) calls `add_commands` to mount these verbs.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from slicehub.common import clock
from slicehub.common.money import format_money
from slicehub.config_file import ConfigFileError
from slicehub.settings import Settings

from .admin import POLICIES, ROLES
from .cli_course import check_course, check_roster, course_add, course_roster, course_window
from .cli_input import (
    MAX_PRICE_CENTS,
    WINDOW_EXAMPLE,
    CliError,
    parse_group,
    parse_limit,
    parse_money,
    parse_period,
    parse_rate,
    parse_slice_type,
    parse_text,
    parse_types,
    parse_username,
    parse_when,
    parse_window,
)
from .cli_parking import add_parking_options, check_parking, project_parking
from .cli_prewarm import add_prewarm_options, check_prewarm, course_prewarm
from .cli_project import check_project, check_project_group, project_add, project_group
from .cli_reports import (
    check_output,
    show_audit,
    show_balance,
    show_projects,
    write_scheme_report,
    write_statement,
)
from .errors import MAX_CENTS, LedgerError
from .ledger import Ledger
from .roster import RosterError
from .scheme.cli import add_scheme_commands
from .statement_render import hkt, rate_text

FORMATS = """\
amounts   Hong Kong dollars, at most two decimals: 50000.00, 50,000.00 or HK$50000.
times     ISO 8601 with a UTC offset: 2026-11-24T09:00+08:00 (Z for UTC). A time without an
          offset is refused. A plain date means Hong Kong time (UTC+08:00): as a start
          (--from, a window's start) midnight at the start of that day; as an end (--until, a
          window's end) the end of that day, so --from 2026-11-01 --until 2027-10-31 covers
          both days.
rates     70% or 0.7.
database  --db, else $SLICEHUB_LEDGER_URL, else the deployment file's ledger_url
          ($SLICEHUB_DEPLOYMENT), else ledger.sqlite in the data directory ($SLICEHUB_DATA_DIR,
          default .data in the working directory); the schema is brought up to date first.
errors    one sentence on stderr, exit status 2, nothing written.
"""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error of these commands."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help).\n")


def _arg(convert, *args, **kwargs):
    """An argparse `type=` from a parser that raises CliError."""

    def typed(text: str):
        try:
            return convert(text, *args, **kwargs)
        except CliError as e:
            raise argparse.ArgumentTypeError(str(e).rstrip(".")) from None

    typed.__name__ = getattr(convert, "__name__", "value")
    return typed


def default_db_url() -> str:
    """The deployment's ledger (`slicehub.settings.Settings`): $SLICEHUB_LEDGER_URL, else
    SQLite ledger.sqlite in the data directory."""
    return Settings().ledger_url


def default_actor() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


# -- the ledger, opened and written in one transaction --------------------------------------


def open_ledger(url: str) -> Ledger:
    try:
        make_url(url)
    except ArgumentError:
        raise CliError(
            f"--db {url!r} is not a database URL, e.g. sqlite:///ledger.sqlite."
        ) from None
    if url == default_db_url() and url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(url)
    ledger.upgrade()
    return ledger


# -- the verbs ------------------------------------------------------------------------------


def _scheme_add(args, ledger: Ledger, now: datetime) -> None:
    ledger.add_scheme(args.actor, args.name, args.rate, args.fund, now)
    print(
        f"Added scheme {args.name}: {rate_text(args.rate)} subsidy, fund {format_money(args.fund)}."
    )


def _check_grant(args, now: datetime) -> None:
    args.period = parse_period(args.valid_from, args.valid_until, "grant")


def _grant_add(args, ledger: Ledger, now: datetime) -> None:
    start, until = args.period
    ledger.add_grant(args.actor, args.project, args.amount, start, until, now, note=args.note)
    print(
        f"Granted {format_money(args.amount)} to {args.project}, {hkt(start)} to {hkt(until)} HKT."
    )


def _member_add(args, ledger: Ledger, now: datetime) -> None:
    ledger.add_member(
        args.actor,
        args.project,
        args.user,
        now,
        role=args.role,
        cap_cents=args.cap,
        name=args.name,
        email=args.email,
    )
    cap = f", cap {format_money(args.cap)}" if args.cap is not None else ""
    print(f"Added {args.user} to {args.project} as {args.role}{cap}.")


def _check_price(args, now: datetime) -> None:
    args.start = parse_when(args.effective_from, now=now)


def _price_set(args, ledger: Ledger, now: datetime) -> None:
    start = args.start
    ledger.set_price(args.actor, args.slice_type, args.per_hour, start, now)
    print(
        f"{args.slice_type} costs {format_money(args.per_hour)} per slice-hour "
        f"from {hkt(start)} HKT."
    )


def _runner(verb, check=None):
    """Check everything typed (`check`) first, open the ledger second, then `verb`; every
    refusal is one line on stderr and status 2."""

    def run(args) -> int:
        ledger = None
        now = clock.utcnow()
        try:
            if getattr(args, "actor", None) is not None:
                args.actor = parse_text(args.actor, "actor", 100)
            if check is not None:
                check(args, now)
            args.db = args.db or default_db_url()
            ledger = open_ledger(args.db)
            verb(args, ledger, now)
            return 0
        except (CliError, LedgerError, RosterError, ConfigFileError) as e:
            print(str(e), file=sys.stderr)
            return 2
        except SQLAlchemyError as e:
            where = make_url(args.db).render_as_string(hide_password=True)
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            print(f"The ledger database {where} failed: {reason}", file=sys.stderr)
            return 2
        finally:
            if ledger is not None:
                ledger.dispose()

    return run


# -- the command line -----------------------------------------------------------------------


def _common(actor: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--db", metavar="URL", help="the ledger database (default: the deployment's, see below)"
    )
    if actor:
        p.add_argument(
            "--actor",
            default=default_actor(),
            metavar="NAME",
            help="who is making the change, for the audit log (default: your Unix user)",
        )
    return p


def _leaf(sub, name: str, verb, help: str, actor=True, check=None) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        parents=[_common(actor)],
        epilog=FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=_runner(verb, check))
    return p


def _group(sub, name: str, help: str):
    p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
    return p.add_subparsers(
        dest=f"{name}_verb", metavar="VERB", required=True, parser_class=_Parser
    )


def _project_options(p: argparse.ArgumentParser, course: bool) -> None:
    p.add_argument("--scheme", required=True, help="the subsidy scheme that pays")
    p.add_argument("--name", required=True, type=_arg(parse_text, "name", 200))
    p.add_argument("--org", required=True, type=_arg(parse_text, "organisation", 200))
    p.add_argument("--pi", required=True, type=_arg(parse_text, "PI", 100), help="the PI")
    p.add_argument("--from", dest="valid_from", required=True, metavar="DATE")
    p.add_argument("--until", dest="valid_until", required=True, metavar="DATE")
    p.add_argument(
        "--max-sessions",
        type=int,
        required=not course,
        metavar="N",
        help="sessions running at once"
        + (" (default: the number of students in the roster)" if course else ""),
    )
    p.add_argument(
        "--policy",
        choices=POLICIES,
        required=not course,
        default="stop" if course else None,
        help="when the subsidy is spent: stop new sessions, or go on at full price up to "
        "--credit-limit" + (" (default: stop)" if course else ""),
    )
    p.add_argument(
        "--credit-limit", type=_arg(parse_money, "credit limit"), metavar="HK$", default=None
    )


def add_commands(sub, window_capacity=None) -> None:
    """Mount `admin`, `statement` and `report` on the `slicehub` command's subparsers.
    `window_capacity(course, slice_type, seats, start, end)`: the site's check that it can hold
    a class window ("" or a sentence saying it could not check; a ValueError refuses it)."""
    admin = _group(sub, "admin", "manage the subsidy ledger: schemes, projects, grants, prices")

    scheme = _group(admin, "scheme", "subsidy schemes")
    p = _leaf(scheme, "add", _scheme_add, "add a subsidy scheme")
    p.add_argument("name", type=_arg(parse_text, "scheme name", 100))
    p.add_argument("--rate", required=True, type=_arg(parse_rate), help="e.g. 70%% or 0.7")
    p.add_argument("--fund", required=True, type=money("fund"), metavar="HK$")
    workflow = _group(
        sub,
        "scheme",
        "the scheme's workflow, for its secretariat: applications, reviews, decisions, change "
        "requests, progress reports",
    )
    add_scheme_commands(scheme, workflow, _leaf, _arg)

    project = _group(admin, "project", "projects")
    p = _leaf(project, "add", project_add, "add a project under a scheme", check=check_project)
    p.add_argument("slug", help="project id: lowercase letters, digits, '-'")
    _project_options(p, course=False)
    p.add_argument(
        "--types",
        required=True,
        type=_arg(parse_types),
        metavar="T,T|*",
        help="slice types it may use, comma-separated, or '*' for all",
    )
    p.add_argument("--member-cap", type=money("member cap"), metavar="HK$", default=None)
    p.add_argument("--group", type=_arg(parse_group), metavar="NAME", help=_GROUP_HELP)
    p = _leaf(
        project,
        "group",
        project_group,
        "set or clear the hub group whose members are a project's members too",
        check=check_project_group,
    )
    p.add_argument("slug")
    p.add_argument("group", nargs="?", type=_arg(parse_group), metavar="NAME", help=_GROUP_HELP)
    p.add_argument("--clear", action="store_true", help="take members from no group")
    p = _leaf(
        project,
        "parking",
        project_parking,
        "set a project's own idle window, warning lead and exemption from parking, or show them",
        check=check_parking,
    )
    add_parking_options(p, _arg)

    grant = _group(admin, "grant", "grants")
    p = _leaf(grant, "add", _grant_add, "grant subsidy to a project", check=_check_grant)
    p.add_argument("project")
    p.add_argument("--amount", required=True, type=money("grant"), metavar="HK$")
    p.add_argument("--from", dest="valid_from", required=True, metavar="DATE")
    p.add_argument("--until", dest="valid_until", required=True, metavar="DATE")
    p.add_argument("--note", default="", type=_arg(parse_text, "note", 500, empty=True))

    member = _group(admin, "member", "project members")
    p = _leaf(member, "add", _member_add, "add a member to a project")
    p.add_argument("project")
    p.add_argument("user", type=_arg(parse_username), help="their hub user name")
    p.add_argument("--role", choices=ROLES, default="member")
    p.add_argument(
        "--cap",
        type=money("member cap"),
        metavar="HK$",
        default=None,
        help="subsidy this member may draw (default: the project's member cap, if any)",
    )
    p.add_argument("--name", default="", help="their full name, for statements")
    p.add_argument("--email", default="", help="their e-mail address")

    price = _group(admin, "price", "the list price")
    p = _leaf(
        price, "set", _price_set, "set a slice type's list price from a date on", check=_check_price
    )
    p.add_argument("slice_type", type=_arg(parse_slice_type))
    p.add_argument(
        "--per-hour",
        required=True,
        type=money("price", limit=MAX_PRICE_CENTS),
        metavar="HK$",
    )
    p.add_argument(
        "--from",
        dest="effective_from",
        required=True,
        metavar="WHEN",
        help="when it takes effect (not in the past; 'now' for now)",
    )

    course = _group(admin, "course", "courses: a project with a roster")
    p = _leaf(
        course,
        "add",
        course_add,
        "add a course from a roster CSV, all or nothing",
        check=check_course,
    )
    p.add_argument("slug", help="course id: lowercase letters, digits, '-'")
    _project_options(p, course=True)
    p.add_argument("--roster", required=True, type=Path, metavar="CSV", help=_ROSTER_HELP)
    p.add_argument("--student-cap", required=True, type=money("student cap"), metavar="HK$")
    p.add_argument(
        "--slice-type", required=True, type=_arg(parse_slice_type), help="e.g. h100.1g.10gb"
    )
    p.add_argument(
        "--window",
        required=True,
        action="append",
        type=_arg(parse_window),
        metavar="START/END",
        help=f"a class window (repeat for each), e.g. {WINDOW_EXAMPLE}",
    )
    p.add_argument("--grant", type=money("grant"), metavar="HK$", help="a grant over the dates")
    p.add_argument("--note", default="", type=_arg(parse_text, "note", 500, empty=True))
    p.set_defaults(window_capacity=window_capacity)
    p = _leaf(
        course,
        "roster",
        course_roster,
        "add the students of a roster CSV to a course",
        check=check_roster,
    )
    p.add_argument("slug")
    p.add_argument("roster", type=Path, metavar="CSV", help=_ROSTER_HELP)
    p = _leaf(course, "window", course_window, "add class windows to a course")
    p.add_argument("slug")
    p.add_argument(
        "--window", required=True, action="append", type=_arg(parse_window), metavar="START/END"
    )
    p.set_defaults(window_capacity=window_capacity)
    p = _leaf(
        course,
        "prewarm",
        course_prewarm,
        "start a course's servers before each class window, or stop doing so",
        check=check_prewarm,
    )
    add_prewarm_options(p, _arg)

    _leaf(admin, "projects", show_projects, "list projects with their subsidy left", actor=False)
    p = _leaf(admin, "balance", show_balance, "show a project's balance", actor=False)
    p.add_argument("project")
    p.add_argument(
        "--member", type=_arg(parse_username), help="also show this member's use and cap"
    )
    p = _leaf(admin, "audit", show_audit, "show the newest audit log entries", actor=False)
    p.add_argument("--limit", type=_arg(parse_limit), default=20, metavar="N", help="default 20")

    p = _leaf(
        sub, "statement", write_statement, "a project's monthly statement", False, check_output
    )
    p.add_argument("--project", required=True)
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="in Hong Kong time")
    p.add_argument("--format", choices=("csv", "html"), default="csv")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")

    report = _group(sub, "report", "reports for the scheme's committee")
    p = _leaf(
        report,
        "scheme",
        write_scheme_report,
        "subsidy disbursed per project",
        False,
        check_output,
    )
    p.add_argument("--scheme", help="one scheme (default: every scheme)")
    p.add_argument("--format", choices=("csv", "html"), default="csv")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")


_ROSTER_HELP = "UTF-8 CSV with a header row: username (required), name, email; one student per row"
_GROUP_HELP = (
    "a hub group (at sign-in, a directory group), exactly as the hub names it: its members are "
    "members of the project too, with the project's member cap, unless a member row says "
    "otherwise"
)


def money(what: str, limit: int = MAX_CENTS):
    return _arg(parse_money, what, limit=limit)


def main(argv: list[str] | None = None) -> int:
    """`python -m slicehub.quota.cli …`: the same verbs without the rest of `slicehub`."""
    parser = _Parser(prog="slicehub", description="Slicehub's subsidy ledger")
    add_commands(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
