"""The e-mails of the scheme's workflow: a subject and a plain-text body for each status change.
Pure.

Each mail names the application (or project), its new status, the amounts in HK$ where there
are any, and what happens next. Subjects are one line: every text put in them (a title, a
slug) is a single-line field whose control characters were refused at input. The workflow
queues them (`slicehub.quota.scheme.outbox.enqueue`) in the transaction of the change; the
mailer sends them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from slicehub.common.money import format_money

from .states import WORDS

SIGNATURE = "\n\n-- \nThe scheme's secretariat, through Slicehub\n"


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str


def _mail(subject: str, *paragraphs: str) -> Mail:
    return Mail(subject, "\n\n".join(p for p in paragraphs if p) + SIGNATURE)


def _rate(rate_bp: int) -> str:
    return f"{rate_bp / 100:g}%"


def _cost_lines(cost) -> str:
    """A request's cost (`slicehub.quota.scheme.views.RequestCost`) as lines of text."""
    lines = [
        f"- {line.slice_type}: {line.gpu_hours:,} GPU-hours, {format_money(line.list_cents)} "
        "at list price"
        for line in cost.lines
    ]
    lines.append(
        f"List price {format_money(cost.list_cents)}; subsidy at {_rate(cost.rate_bp)} "
        f"{format_money(cost.subsidy_cents)}; co-pay {format_money(cost.copay_cents)} "
        "(today's list prices)."
    )
    return "\n".join(lines)


def application_status(app, cost=None) -> Mail:
    """Submitted, under review or withdrawn: the new status and the next step."""
    name = f"Application {app.id} ({app.title})"
    status = WORDS[app.status]
    step = {
        "submitted": "Next: the secretariat checks that it is complete and assigns reviewers.",
        "under_review": "Next: the committee's reviewers score it; you will hear of the decision.",
        "withdrawn": "Nothing more will happen to it; you may apply again with a new application.",
    }[app.status]
    return _mail(
        f"{name} is {status}",
        f"{name} is now {status}.",
        _cost_lines(cost) if cost is not None else "",
        step,
    )


def decided(app, decision, project_slug: str | None) -> Mail:
    """The decision: what was approved (compute, subsidy, rate, validity, terms) and the project
    to use, or the reasons for a rejection."""
    name = f"Application {app.id} ({app.title})"
    status = WORDS[decision.outcome]
    if decision.outcome == "rejected":
        return _mail(
            f"{name} is {status}",
            f"{name} is {status}.",
            f"Reasons:\n{decision.reasons}" if decision.reasons else "",
            "Next: you may apply again with a new application.",
        )
    hours = json.loads(decision.compute)
    compute = ", ".join(f"{t}: {h:,} GPU-hours" for t, h in sorted(hours.items()))
    return _mail(
        f"{name} is {status}",
        f"{name} is {status}.",
        f"Approved subsidy: {format_money(decision.amount_cents)} at {_rate(decision.rate_bp)} "
        f"of the list price, valid from {decision.valid_from:%Y-%m-%d} to "
        f"{decision.valid_until:%Y-%m-%d}.\nApproved compute: {compute}.",
        f"Terms:\n{decision.terms}" if decision.terms else "",
        f"Reasons:\n{decision.reasons}" if decision.reasons else "",
        f"Next: your project {project_slug} is ready; choose it in the hub's spawn form to "
        "start a session.",
    )


def change_request(cr, project_slug: str) -> Mail:
    """A change request: received (pending), approved or denied."""
    what = change_words(cr)
    name = f"Change request {cr.id} for project {project_slug}"
    status = WORDS[cr.status]
    step = {
        "pending": "Next: the secretariat reviews it; you will hear of the decision.",
        "approved": "It is applied to the project now.",
        "denied": "Nothing changes; you may ask again with a new justification.",
    }[cr.status]
    return _mail(
        f"{name} is {status}",
        f"{name} ({what}) is {status}.",
        f"Note: {cr.note}" if cr.note else "",
        step,
    )


def change_words(cr) -> str:
    if cr.kind == "top_up":
        return f"a top-up of {format_money(cr.amount_cents)}"
    if cr.kind == "extension":
        return f"an extension to {cr.valid_until:%Y-%m-%d}"
    return "a change of members"


def report_due(report, project_slug: str) -> Mail:
    name = f"The progress report of project {project_slug}"
    return _mail(
        f"{name} for {report.period_start:%Y-%m-%d} to {report.period_end:%Y-%m-%d} is due",
        f"{name} for {report.period_start:%Y-%m-%d} to {report.period_end:%Y-%m-%d} is due "
        f"by {report.due_at:%Y-%m-%d}. It is pre-filled from the ledger (GPU-hours, costs, "
        "sessions).",
        "Next: add your narrative and submit it on the scheme's pages.",
    )
