"""`slicehub admin scheme criteria` and `slicehub scheme …`: the scheme's workflow from a
terminal, for its secretariat.

    slicehub admin scheme criteria hk-ai --criterion "alignment:60:Alignment with Hong Kong's
        innovation needs" --criterion "compute:40:Reasonableness of the compute request"
        --max-rate 90% --report-months 3
    slicehub scheme applications [--status under_review]
    slicehub scheme show 12
    slicehub scheme review 12 --reviewer chan --reviewer lee
    slicehub scheme decide 12 approved_with_changes --rate 90% --compute h100.1g.10gb=50
        --reasons "Half the hours: the schedule is long."
    slicehub scheme changes [--status pending]
    slicehub scheme change 4 approve|deny [--note TEXT]
    slicehub scheme reports [--overdue]

Decides how what the secretariat types becomes calls of `SchemeWorkflow`
(`slicehub.quota.scheme.workflow`), which decides every rule: numbers, amounts, rates, dates,
names and texts are read and checked first, and only then is the ledger opened; each verb that
writes is one transaction of the workflow, so a refusal (here or by the workflow: a status that
cannot move, a fund that would be over-committed) leaves the ledger as it was. As for
`slicehub admin`, whoever can run the command and reach the database acts as the secretariat;
`--actor` names them in the audit log. They see what the secretariat sees on the pages: every
application once submitted (a draft is its applicant's), every change request and progress
report. Whatever applicants typed is shown through `slicehub.quota.scheme.terminal`, escaped.

`slicehub.quota.cli` mounts these verbs with `add_scheme_commands`.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime

from sqlalchemy import select

from slicehub.common.money import format_money
from slicehub.common.names import PROJECT_ID

from ..cli_input import CliError, parse_money, parse_rate, parse_slice_type, parse_username
from ..errors import LedgerError
from ..ledger import Ledger
from ..models import Project, Scheme
from ..statement_render import rate_text
from .applications import MAX_REPORT_PERIOD_MONTHS
from .changes import pi_email
from .cli_views import (
    change_text,
    show_application,
    show_applications,
    show_changes,
    show_reports,
    submitted_application,
)
from .fund import fund_of
from .models import Application
from .states import (
    APPLICATION,
    APPROVED_WITH_CHANGES,
    DECIDED,
    DRAFT,
    REJECTED,
    UNDER_REVIEW,
    WORDS,
)
from .terminal import table
from .validate import MAX_COMMENT, MAX_TERMS, check_criteria, check_gpu_hours, check_text
from .workflow import SchemeWorkflow

CRITERION_EXAMPLE = "alignment:25:Alignment with Hong Kong's innovation needs"
STATUSES = tuple(s for s in APPLICATION if s != DRAFT)  # a draft is its applicant's

# -- what is typed, read --------------------------------------------------------------------


def _checked(check, *args):
    """`check(*args)` from `slicehub.quota.scheme.validate`, its refusal a `CliError` (what an
    argparse type may raise)."""
    try:
        return check(*args)
    except LedgerError as e:
        raise CliError(str(e)) from None


def parse_id(text: str, what: str) -> int:
    """ "12" -> 12: an application's, change request's or report's number."""
    t = text.strip()
    if not re.fullmatch(r"[0-9]{1,9}", t) or int(t) == 0:
        raise CliError(f"{t[:40]!r} is not the number of {what}, e.g. 12.")
    return int(t)


def parse_criterion(text: str) -> dict:
    """ "alignment:25:Alignment with …" -> {"key", "weight", "title"} (the title may hold ':')."""
    key, _, rest = text.partition(":")
    weight, colon, title = rest.partition(":")
    key, weight = key.strip(), weight.strip()
    if not colon:
        raise CliError(
            f"The criterion {text[:60]!r} is not KEY:WEIGHT:TITLE, e.g. {CRITERION_EXAMPLE}."
        )
    if not re.fullmatch(r"[a-z0-9_-]{1,64}", key):
        raise CliError(f"{key[:64]!r} is not a criterion key: use a-z, 0-9, '_' and '-'.")
    if not re.fullmatch(r"[0-9]{1,3}", weight):
        raise CliError(f"The weight of criterion {key} ({weight[:20]!r}) is not a whole number.")
    title = _checked(check_text, f"title of criterion {key}", title.strip(), 200)
    if not title:
        raise CliError(f"The criterion {key} has no title.")
    return {"key": key, "title": title, "weight": int(weight)}


def parse_months(text: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"[0-9]{1,3}", t) or not 1 <= int(t) <= MAX_REPORT_PERIOD_MONTHS:
        raise CliError(
            f"The report period {t[:20]!r} is not a whole number of months from 1 to "
            f"{MAX_REPORT_PERIOD_MONTHS}."
        )
    return int(t)


def parse_compute(text: str) -> tuple[str, int]:
    """ "h100.1g.10gb=50" -> ("h100.1g.10gb", 50): approved GPU-hours of one slice type."""
    slice_type, eq, hours = text.partition("=")
    if not eq or not re.fullmatch(r"[0-9]{1,9}", hours.strip()):
        raise CliError(f"The compute {text[:60]!r} is not TYPE=HOURS, e.g. h100.1g.10gb=50.")
    slice_type = parse_slice_type(slice_type)
    return slice_type, _checked(check_gpu_hours, slice_type, int(hours))


def parse_day(text: str, what: str) -> date:
    """A date as the application's period has it: YYYY-MM-DD, a UTC midnight."""
    t = text.strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            raise ValueError
        return date.fromisoformat(t)
    except ValueError:
        raise CliError(f"The {what} {t[:40]!r} is not a date like 2026-11-01.") from None


def parse_long_text(text: str, what: str, limit: int = MAX_TERMS) -> str:
    """Terms, reasons or a note: line breaks are kept, other controls refused."""
    return _checked(check_text, what, text.strip(), limit, True)


# -- admin scheme criteria ------------------------------------------------------------------


def check_criteria_args(args, now: datetime) -> None:
    if args.criterion:
        check_criteria(args.criterion)


def scheme_criteria(args, ledger: Ledger, now: datetime) -> None:
    changes = (args.criterion, args.max_rate, args.report_months)
    if any(v is not None for v in changes):
        SchemeWorkflow(ledger).configure_scheme(
            args.actor,
            args.name,
            now,
            criteria=args.criterion,
            max_rate_bp=args.max_rate,
            report_period_months=args.report_months,
        )
    with ledger.session() as db:
        scheme = db.scalar(select(Scheme).where(Scheme.name == args.name))
        if scheme is None:
            raise LedgerError(f"There is no scheme {args.name!r}.", 404)
        fund = fund_of(db, scheme)
    print(
        f"Scheme {scheme.name}: {rate_text(scheme.subsidy_rate_bp)} subsidy, at most "
        f"{rate_text(scheme.max_rate_bp)} in exceptional cases; a progress report every "
        f"{scheme.report_period_months} month(s); fund {format_money(fund.fund_cents)}, "
        f"{format_money(fund.committed_cents)} committed, {format_money(fund.left_cents)} left."
    )
    criteria = json.loads(scheme.criteria)
    if not criteria:
        print(
            "No criteria yet; set them with --criterion KEY:WEIGHT:TITLE, e.g. "
            f"{CRITERION_EXAMPLE}."
        )
        return
    rows = [(c["key"], f"{c['weight']}%", c["title"]) for c in criteria]
    print("\n".join(table((("criterion", 64, "<"), ("weight", 6, ">"), ("title", 200, "<")), rows)))


# -- the review and the decision ------------------------------------------------------------


def check_review(args, now: datetime) -> None:
    twice = sorted({r for r in args.reviewer if args.reviewer.count(r) > 1})
    if twice:
        raise CliError(f"{', '.join(twice)}: named twice; name each reviewer once.")


def review(args, ledger: Ledger, now: datetime) -> None:
    wf = SchemeWorkflow(ledger)
    with ledger.session() as db:
        status = submitted_application(db, args.id).status
    names = " and ".join(args.reviewer)
    if status == UNDER_REVIEW:
        wf.assign_reviewers(args.actor, args.id, args.reviewer, now)
        print(f"Assigned {names} to application {args.id}, which was under review already.")
        return
    wf.start_review(args.actor, args.id, args.reviewer, now)
    print(
        f"Application {args.id} is under review, assigned to {names}; the applicant is told "
        "by e-mail."
    )


_APPROVAL_ONLY = (
    ("amount", "--amount"),
    ("rate", "--rate"),
    ("compute", "--compute"),
    ("valid_from", "--from"),
    ("valid_until", "--until"),
    ("slug", "--slug"),
)


def check_decide(args, now: datetime) -> None:
    if args.outcome == REJECTED:
        given = [option for name, option in _APPROVAL_ONLY if getattr(args, name) is not None]
        if given:
            raise CliError(f"A rejection approves nothing; leave out {', '.join(given)}.")
    if args.outcome in (REJECTED, APPROVED_WITH_CHANGES) and not args.reasons:
        raise CliError("Give the reasons for a rejection or for the changes (--reasons).")
    if args.compute is not None:
        compute = dict(args.compute)
        if len(compute) != len(args.compute):
            raise CliError("A slice type is named twice in --compute; give it once.")
        args.compute = compute
    if args.valid_from and args.valid_until and args.valid_until <= args.valid_from:
        raise CliError(
            f"The validity ends before it starts ({args.valid_from} to {args.valid_until})."
        )
    if args.slug is not None and not PROJECT_ID.fullmatch(args.slug):
        raise CliError(f"{args.slug[:64]!r} is not a project id: use a-z, 0-9 and '-'.")


def decide(args, ledger: Ledger, now: datetime) -> None:
    with ledger.session() as db:
        submitted_application(db, args.id)
    d = SchemeWorkflow(ledger).decide(
        args.actor,
        args.id,
        args.outcome,
        now,
        reasons=args.reasons or "",
        terms=args.terms or "",
        amount_cents=args.amount,
        rate_bp=args.rate,
        compute=args.compute,
        valid_from=args.valid_from,
        valid_until=args.valid_until,
        slug=args.slug,
    )
    with ledger.session() as db:
        slug = db.scalar(
            select(Project.slug)
            .join(Application, Application.project_id == Project.id)
            .where(Application.id == args.id)
        )
    told = "the applicant is told by e-mail"
    if d.outcome == REJECTED:
        print(f"Application {args.id} is rejected; {told}.")
        return
    compute = ", ".join(f"{t} {h:,} GPU-hours" for t, h in sorted(json.loads(d.compute).items()))
    print(
        f"Application {args.id} is {WORDS[d.outcome]}: project {slug}, "
        f"{format_money(d.amount_cents)} of subsidy at {rate_text(d.rate_bp)} for {compute}, "
        f"valid {d.valid_from:%Y-%m-%d} to {d.valid_until:%Y-%m-%d}; {told}."
    )


# -- change requests ------------------------------------------------------------------------


def decide_change(args, ledger: Ledger, now: datetime) -> None:
    approve = args.decision == "approve"
    cr = SchemeWorkflow(ledger).decide_change(args.actor, args.id, approve, now, args.note or "")
    with ledger.session() as db:
        p = db.get(Project, cr.project_id)
        told = "the PI is told by e-mail" if pi_email(db, p) else "the PI has no e-mail address"
    done = "approved and applied" if approve else "denied"
    print(f"Change request {cr.id} ({change_text(cr)} for project {p.slug}) is {done}; {told}.")


# -- the command line -----------------------------------------------------------------------

DATES = """\
decide's  --from and --until are dates like 2026-11-01, as the application's period gives
dates     them (UTC midnights): the project is valid from the start of --from to the start of
          --until. Without them the application's period applies.
"""


def add_scheme_commands(admin_scheme, scheme, leaf, typed) -> None:
    """Mount `criteria` on `slicehub admin scheme` (`admin_scheme`) and the secretariat's verbs
    on `slicehub scheme` (`scheme`), both subparsers of `slicehub.quota.cli`; `leaf(sub, name,
    verb, help, actor=, check=)` makes a verb's parser there, `typed(parser, *args)` an argparse
    type from one of the parsers above."""
    p = leaf(
        admin_scheme,
        "criteria",
        scheme_criteria,
        "set a scheme's review criteria, highest rate and report period, or show them",
        check=check_criteria_args,
    )
    p.add_argument("name", help="the scheme")
    p.add_argument(
        "--criterion",
        action="append",
        type=typed(parse_criterion),
        metavar="KEY:WEIGHT:TITLE",
        help="a criterion the committee scores 0 to 10 (repeat for each; they replace the "
        f"scheme's criteria, and the weights sum to 100), e.g. '{CRITERION_EXAMPLE}'",
    )
    p.add_argument(
        "--max-rate",
        type=typed(parse_rate),
        metavar="PCT",
        help="the highest subsidy rate a decision may give, e.g. 90%%",
    )
    p.add_argument(
        "--report-months",
        type=typed(parse_months),
        metavar="N",
        help=f"a progress report every N months of a project (1 to {MAX_REPORT_PERIOD_MONTHS})",
    )

    p = leaf(
        scheme,
        "applications",
        show_applications,
        "list the submitted applications with their age and the subsidy they ask for",
        actor=False,
    )
    p.add_argument("--status", choices=STATUSES, help="only those with this status")
    p = leaf(scheme, "show", show_application, "show one application in full", actor=False)
    p.add_argument("id", type=typed(parse_id, "an application"), help="the application's number")

    p = leaf(
        scheme,
        "review",
        review,
        "put a submitted application under review with its reviewers, or assign more",
        check=check_review,
    )
    p.add_argument("id", type=typed(parse_id, "an application"), help="the application's number")
    p.add_argument(
        "--reviewer",
        required=True,
        action="append",
        type=typed(parse_username),
        metavar="NAME",
        help="a committee member's hub user name (repeat for each)",
    )

    p = leaf(
        scheme,
        "decide",
        decide,
        "approve, approve with changes or reject an application under review",
        check=check_decide,
    )
    p.epilog = DATES + p.epilog
    p.add_argument("id", type=typed(parse_id, "an application"), help="the application's number")
    p.add_argument("outcome", choices=sorted(DECIDED), help="the decision")
    p.add_argument(
        "--amount",
        type=typed(parse_money, "approved subsidy"),
        metavar="HK$",
        help="the approved subsidy (default: the subsidy of the approved compute at today's "
        "list prices and the rate)",
    )
    p.add_argument(
        "--rate",
        type=typed(parse_rate),
        metavar="PCT",
        help="the subsidy rate (default: the rate asked), at most the scheme's highest",
    )
    p.add_argument(
        "--compute",
        action="append",
        type=typed(parse_compute),
        metavar="TYPE=HOURS",
        help="approved GPU-hours of a slice type (repeat for each; default: what was asked)",
    )
    p.add_argument(
        "--from",
        dest="valid_from",
        type=typed(parse_day, "validity's start"),
        metavar="DATE",
        help="see below",
    )
    p.add_argument(
        "--until",
        dest="valid_until",
        type=typed(parse_day, "validity's end"),
        metavar="DATE",
        help="see below",
    )
    p.add_argument(
        "--terms", type=typed(parse_long_text, "terms"), metavar="TEXT", help="the grant's terms"
    )
    p.add_argument(
        "--reasons",
        type=typed(parse_long_text, "reasons"),
        metavar="TEXT",
        help="why (required for a rejection or for changes)",
    )
    p.add_argument(
        "--slug",
        metavar="ID",
        help="the new project's id (default: made from the title)",
    )

    p = leaf(scheme, "changes", show_changes, "list change requests", actor=False)
    p.add_argument("--status", choices=("pending", "approved", "denied"), help="only these")
    p = leaf(
        scheme,
        "change",
        decide_change,
        "approve (and apply) or deny a pending change request",
    )
    p.add_argument("id", type=typed(parse_id, "a change request"), help="its number")
    p.add_argument("decision", choices=("approve", "deny"))
    p.add_argument("--note", type=typed(parse_long_text, "note", MAX_COMMENT), metavar="TEXT")

    p = leaf(scheme, "reports", show_reports, "list progress reports", actor=False)
    p.add_argument("--overdue", action="store_true", help="only those past their due date")
