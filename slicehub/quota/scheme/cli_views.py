"""The read-only verbs of `slicehub scheme`: the applications as a table, one application in
full, the change requests and the progress reports, as the secretariat sees them.

Decides how these read in a terminal: columns, HK$, dates (the period and validity are UTC
dates, as the application has them; moments are Hong Kong time), every text an applicant or
reviewer typed escaped (`slicehub.quota.scheme.terminal`). The secretariat sees every
application once submitted (a draft is its applicant's, `views.visible_applications`), every
reviewer's scores but a conflicted one's, every change request and report. It only reads the
ledger; the verbs that change it are `slicehub.quota.scheme.cli`, which mounts these too.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select

from slicehub.common.money import format_money

from ..errors import LedgerError
from ..ledger import Ledger
from ..models import Project
from ..statement_render import hkt, rate_text
from .models import Application, ChangeRequest, ReviewerAssignment
from .states import DRAFT, DUE, REJECTED, WORDS
from .terminal import escape, lines, table
from .views import SECRETARIAT, STAFF, application_view, scores_seen, visible_applications
from .workflow import SchemeWorkflow

AS_SECRETARIAT = frozenset({SECRETARIAT, STAFF})
ORG_TYPE_WORDS = {"research_institute": "research institute"}


def submitted_application(db, application_id: int) -> Application:
    """Application `application_id` once submitted; refused (404) while a draft or absent."""
    app = db.get(Application, application_id)
    if app is None or app.status == DRAFT:
        raise LedgerError(
            f"There is no submitted application {application_id} (a draft is its applicant's "
            "until they submit it).",
            404,
        )
    return app


def show_applications(args, ledger: Ledger, now: datetime) -> None:
    with ledger.session() as db:
        views = [
            application_view(db, app, now)
            for app in visible_applications(db, "", AS_SECRETARIAT, args.status)
        ]
    if not views:
        print(f"No application is {WORDS[args.status]}." if args.status else "No applications.")
        return
    columns = (
        ("id", 9, ">"),
        ("applicant", 20, "<"),
        ("organisation", 28, "<"),
        ("type", 18, "<"),
        ("title", 40, "<"),
        ("status", 21, "<"),
        ("age (days)", 10, ">"),
        ("subsidy asked", 18, ">"),
    )
    rows = [
        (
            v["id"],
            v["applicant"],
            v["organisation"],
            ORG_TYPE_WORDS.get(v["org_type"], v["org_type"]),
            v["title"],
            WORDS[v["status"]],
            v["age_days"],
            format_money(v["cost"]["subsidy_cents"]),
        )
        for v in views
    ]
    print("\n".join(table(columns, rows)))


def _day(iso: str | None) -> str:
    return iso[:10] if iso else "-"


def show_application(args, ledger: Ledger, now: datetime) -> None:
    with ledger.session() as db:
        app = submitted_application(db, args.id)
        v = application_view(db, app, now)
        assignments = db.scalars(
            select(ReviewerAssignment)
            .where(ReviewerAssignment.application_id == app.id)
            .order_by(ReviewerAssignment.id)
        ).all()
        scores = scores_seen(db, app.id, "", AS_SECRETARIAT)
        out = application_text(v, app, assignments, scores)
    print("\n".join(out))


def application_text(v: dict, app: Application, assignments, scores: dict) -> list[str]:
    """Application `v` (`views.application_view`) as lines: its fields, team, request with
    its cost today, reviewers and their scores, and its decision."""
    org = f"{v['organisation']} ({ORG_TYPE_WORDS.get(v['org_type'], v['org_type'])})"
    submitted = f"submitted {hkt(app.submitted_at)} HKT, " if app.submitted_at else ""
    out = [
        f"Application {v['id']}: {escape(v['title'])}",
        f"  scheme        {escape(v['scheme'])}",
        f"  status        {WORDS[v['status']]} ({submitted}{v['age_days']} day(s) old)",
        f"  applicant     {escape(v['applicant'])} <{escape(v['email'])}>",
        f"  organisation  {escape(org)}",
        f"  AI area       {escape(v['ai_area'])}",
        f"  period        {_day(v['period_start'])} to {_day(v['period_end'])}",
        f"  rate asked    {rate_text(v['rate_bp'])}",
        f"  project       {v['project'] or '(none until it is approved)'}",
        "Abstract:",
        *lines(v["abstract"]),
        "Team:",
        *(f"  {escape(m['username'])} ({m['role']}) {escape(m['email'])}" for m in v["members"]),
        "Compute request, at today's list prices:",
    ]
    for r in v["requests"]:
        out.append(f"  {escape(r['slice_type'])}: {r['gpu_hours']:,} GPU-hours")
        out += lines(r["justification"], "    ")
    cost = v["cost"]
    out.append(
        f"  list price {format_money(cost['list_cents'])}; subsidy at "
        f"{rate_text(v['rate_bp'])} {format_money(cost['subsidy_cents'])}; co-pay "
        f"{format_money(cost['copay_cents'])}"
    )
    out.append("Reviewers:" if assignments else "Reviewers: none yet.")
    for a in assignments:
        out += reviewer_text(a, scores.get(a.reviewer))
    out += decision_text(v["decision"])
    return out


def reviewer_text(a: ReviewerAssignment, seen: dict | None) -> list[str]:
    head = f"  {escape(a.reviewer)}, assigned by {escape(a.assigned_by)} {hkt(a.assigned_at)} HKT"
    if a.conflict:
        return [
            f"{head}: declared a conflict {hkt(a.declared_at)} HKT",
            *lines(a.conflict_note, "    "),
        ]
    if not seen:
        return [f"{head}: not scored yet"]
    weighted = seen["weighted"]
    out = [f"{head}: weighted score {weighted if weighted is not None else '-'} of 100"]
    for criterion, (score, comment) in seen["scores"].items():
        out.append(f"    {escape(criterion)}: {score} of 10")
        if comment:
            out += lines(comment, "      ")
    return out


def decision_text(d: dict | None) -> list[str]:
    if d is None:
        return ["Decision: none yet."]
    out = [
        f"Decision: {WORDS[d['outcome']]}, by {escape(d['decided_by'])} on {_day(d['decided_at'])}"
    ]
    if d["outcome"] != REJECTED:
        compute = ", ".join(f"{t} {h:,} GPU-hours" for t, h in sorted(d["compute"].items()))
        out.append(
            f"  {format_money(d['amount_cents'])} of subsidy at {rate_text(d['rate_bp'])}, valid "
            f"{_day(d['valid_from'])} to {_day(d['valid_until'])}; compute: {escape(compute)}"
        )
    for label in ("terms", "reasons"):
        if d[label]:
            out += [f"  {label.capitalize()}:", *lines(d[label], "    ")]
    return out


def change_text(cr: ChangeRequest) -> str:
    """What change request `cr` asks for, in a few words."""
    if cr.kind == "top_up":
        return f"top-up of {format_money(cr.amount_cents)}"
    if cr.kind == "extension":
        return f"extension to {cr.valid_until:%Y-%m-%d}"
    asked = json.loads(cr.members)
    names = [f"+{m['username']}" for m in asked["add"]] + [f"-{u}" for u in asked["remove"]]
    return "members " + " ".join(names)


def show_changes(args, ledger: Ledger, now: datetime) -> None:
    with ledger.session() as db:
        q = (
            select(ChangeRequest, Project.slug)
            .join(Project, Project.id == ChangeRequest.project_id)
            .order_by(ChangeRequest.id)
        )
        if args.status is not None:
            q = q.where(ChangeRequest.status == args.status)
        found = db.execute(q).all()
    if not found:
        print(f"No change request is {args.status}." if args.status else "No change requests.")
        return
    columns = (
        ("id", 9, ">"),
        ("project", 32, "<"),
        ("asked by", 20, "<"),
        ("change", 40, "<"),
        ("status", 8, "<"),
        ("age (days)", 10, ">"),
        ("reviewer", 20, "<"),
        ("justification", 50, "<"),
    )
    rows = [
        (
            cr.id,
            slug,
            cr.requested_by,
            change_text(cr),
            WORDS[cr.status],
            (now - cr.requested_at).days,
            cr.reviewer or "-",
            cr.justification,
        )
        for cr, slug in found
    ]
    print("\n".join(table(columns, rows)))


def show_reports(args, ledger: Ledger, now: datetime) -> None:
    wf = SchemeWorkflow(ledger)
    found = wf.overdue_reports(now) if args.overdue else wf.reports()
    if not found:
        print("No progress report is overdue." if args.overdue else "No progress reports.")
        return
    columns = (
        ("id", 9, ">"),
        ("project", 24, "<"),
        ("period", 24, "<"),
        ("due", 10, "<"),
        ("status", 9, "<"),
        ("submitted (HKT)", 40, "<"),
    )
    rows = []
    for r, slug in found:
        status = "overdue" if r.status == DUE and r.due_at < now else WORDS[r.status]
        submitted = f"{hkt(r.submitted_at)} by {r.submitted_by}" if r.submitted_at else "-"
        period = f"{r.period_start:%Y-%m-%d} to {r.period_end:%Y-%m-%d}"
        rows.append((r.id, slug, period, f"{r.due_at:%Y-%m-%d}", status, submitted))
    print("\n".join(table(columns, rows)))
