"""`slicehub admin scheme criteria` and `slicehub scheme …` (slicehub.quota.scheme.cli), run in
process on the scheme tests' SQLite ledger (tests/unit/scheme_ledger.py: scheme "s", HK$10.00
an hour for h100.1g.10gb, applicant ann with bo on her team, reviewers rev1..rev3).

Each verb's good path writes what it says, through the workflow, audited; every bad input
exits 2 with one sentence on stderr and leaves every table as it was (a dump before and
after); text applicants typed reaches the terminal escaped.
"""

import json

import pytest
from sqlalchemy import select, update

from slicehub.common import clock
from slicehub.quota.models import AuditEntry, Grant, Project, Scheme
from slicehub.quota.scheme import terminal
from slicehub.quota.scheme.models import Application, ChangeRequest, ReviewerAssignment
from slicehub.quota.scheme.outbox import OutboxMail
from tests.unit import test_quota_cli
from tests.unit.rules_ledger import T0
from tests.unit.scheme_ledger import DAY, fields, known_users, submitted, under_review, workflow
from tests.unit.test_quota_cli import check_refused, dump, ok

NOW = T0 + 3 * DAY  # the clock the CLI reads; applications are made at T0
SLUG = "protein-folding-for-hong-kong"  # the project an approval makes from the title


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(clock, "utcnow", lambda: NOW)


@pytest.fixture
def db(tmp_path, ledger):
    """The `ledger` fixture's database (tests/unit/conftest.py)."""
    return f"sqlite:///{tmp_path / 'l.sqlite'}"


# `slicehub("scheme show 1")` runs the command in this process against `db` (below)
slicehub = test_quota_cli.slicehub


@pytest.fixture
def wf(ledger):
    return workflow(ledger)


def rows(ledger, q):
    with ledger.session() as s:
        return s.execute(q).all()


def one(ledger, q):
    with ledger.session() as s:
        return s.scalar(q)


# -- the scheme's configuration --------------------------------------------------------------


def test_criteria_are_set_with_the_highest_rate_and_report_period(slicehub, ledger, wf):
    r = ok(
        slicehub(
            "admin scheme criteria s --actor sec --criterion 'need:25:Alignment: Hong Kong needs'"
            " --criterion compute:75:Reasonableness --max-rate 90% --report-months 6"
        )
    )
    scheme = one(ledger, select(Scheme))
    assert json.loads(scheme.criteria) == [
        {"key": "need", "title": "Alignment: Hong Kong needs", "weight": 25},
        {"key": "compute", "title": "Reasonableness", "weight": 75},
    ]
    assert (scheme.max_rate_bp, scheme.report_period_months) == (9000, 6)
    audit = one(ledger, select(AuditEntry).order_by(AuditEntry.id.desc()))
    assert (audit.actor, audit.action, audit.subject) == ("sec", "scheme.configure", "s")
    assert r.out.splitlines()[0].startswith("Scheme s: 70% subsidy, at most 90% in exceptional")
    assert "every 6 month(s)" in r.out
    assert r.out.splitlines()[1:] == [
        "criterion  weight  title",
        "need          25%  Alignment: Hong Kong needs",
        "compute       75%  Reasonableness",
    ]
    # only --max-rate: the criteria stay; no option: only shown
    ok(slicehub("admin scheme criteria s --max-rate 80%"))
    assert one(ledger, select(Scheme.max_rate_bp)) == 8000
    before = dump_of(ledger)
    r = ok(slicehub("admin scheme criteria s"))
    assert "need          25%  Alignment: Hong Kong needs" in r.out
    assert dump_of(ledger) == before


def dump_of(ledger) -> dict:
    return dump(str(ledger.engine.url))


# -- applications ------------------------------------------------------------------------------


def test_applications_listed_with_age_and_subsidy_asked(slicehub, ledger, wf):
    first = under_review(wf)
    second = submitted(wf, now=T0 + DAY, organisation="香港大學", org_type="research_institute")
    wf.create_draft("ann", "s", fields(), known_users, T0)
    lines = ok(slicehub("scheme applications")).out.splitlines()
    assert lines[0].split() == [
        "id", "applicant", "organisation", "type", "title", "status", "age", "(days)", "subsidy",
        "asked",
    ]  # fmt: skip
    assert len(lines) == 3  # the draft is its applicant's
    assert lines[1].split()[:3] == [str(first), "ann", "HKU"]
    assert "under review" in lines[1] and lines[1].split()[-2:] == ["3", "HK$700.00"]
    assert "香港大學" in lines[2] and "research institute" in lines[2]
    assert lines[2].split()[-2:] == ["2", "HK$700.00"]
    # the columns line up in a terminal, where a Chinese character takes two columns
    assert len({terminal.width(line[: line.index(" HK$")]) for line in lines[1:]}) == 1
    r = ok(slicehub("scheme applications --status submitted")).out.splitlines()
    assert [line.split()[0] for line in r[1:]] == [str(second)]
    assert ok(slicehub("scheme applications --status rejected")).out == (
        "No application is rejected.\n"
    )


def test_show_gives_the_application_its_reviewers_scores_and_conflicts(slicehub, wf):
    app = under_review(wf, reviewers=("rev1", "rev2", "rev3"))
    wf.score("rev1", app, {"alignment": 8, "compute": 5}, T0, {"compute": "Too\nmany hours"})
    wf.declare_conflict("rev2", app, "Co-author of the PI", T0)
    out = ok(slicehub(f"scheme show {app}")).out
    assert out.startswith(f"Application {app}: Protein folding for Hong Kong\n")
    for words in (
        "  status        under review (submitted 2026-11-02 09:00 HKT, 3 day(s) old)",
        "  applicant     ann <ann@uni.hk>",
        "  organisation  HKU (university)",
        "  period        2026-11-02 to 2027-01-31",
        "  rate asked    70%",
        "Abstract:\n  We fold proteins.",
        "  ann (pi) ann@uni.hk\n  bo (member) bo@uni.hk",
        "  h100.1g.10gb: 100 GPU-hours\n    7B model, bf16, training, weekly",
        "list price HK$1,000.00; subsidy at 70% HK$700.00; co-pay HK$300.00",
        ": weighted score 68 of 100\n    alignment: 8 of 10\n    compute: 5 of 10\n"
        "      Too\n      many hours",
        "rev2, assigned by sec 2026-11-02 09:00 HKT: declared a conflict",
        "    Co-author of the PI",
        "rev3, assigned by sec 2026-11-02 09:00 HKT: not scored yet",
        "Decision: none yet.",
    ):
        assert words in out, words


def test_review_starts_with_reviewers_then_assigns_more(slicehub, ledger, wf):
    app = submitted(wf)
    r = ok(slicehub(f"scheme review {app} --reviewer REV1 --reviewer rev2 --actor sec"))
    assert r.out == (
        f"Application {app} is under review, assigned to rev1 and rev2; the applicant is told "
        "by e-mail.\n"
    )
    assert one(ledger, select(Application.status)) == "under_review"
    r = ok(slicehub(f"scheme review {app} --reviewer rev3"))
    assert "Assigned rev3 to application" in r.out
    got = rows(ledger, select(ReviewerAssignment.reviewer, ReviewerAssignment.assigned_by))
    assert sorted(got)[:2] == [("rev1", "sec"), ("rev2", "sec")] and got[2][0] == "rev3"
    mails = rows(ledger, select(OutboxMail.to_addr, OutboxMail.subject))
    assert (
        "ann@uni.hk",
        f"Application {app} (Protein folding for Hong Kong) is under review",
    ) in mails


def test_approval_with_changes_creates_the_project(slicehub, ledger, wf):
    app = under_review(wf)
    r = ok(
        slicehub(
            f"scheme decide {app} approved_with_changes --rate 90% --compute h100.1g.10gb=50"
            " --until 2027-01-01 --terms 'Acknowledge the scheme.' --actor sec"
            " --reasons 'Half the hours.'"
        )
    )
    assert r.out == (
        f"Application {app} is approved with changes: project {SLUG}, HK$450.00 of subsidy at "
        "90% for h100.1g.10gb 50 GPU-hours, valid 2026-11-02 to 2027-01-01; the applicant is "
        "told by e-mail.\n"
    )
    p = one(ledger, select(Project))
    assert (p.slug, p.subsidy_rate_bp, p.pi) == (SLUG, 9000, "ann")
    assert rows(ledger, select(Grant.amount_cents)) == [(45_000,)]
    actions = [
        a for (a,) in rows(ledger, select(AuditEntry.action).where(AuditEntry.actor == "sec"))
    ]
    assert "application.approve" in actions and "project.add" in actions
    out = ok(slicehub(f"scheme show {app}")).out
    assert "Decision: approved with changes, by sec on 2026-11-05" in out
    assert "HK$450.00 of subsidy at 90%, valid 2026-11-02 to 2027-01-01" in out
    assert "  Terms:\n    Acknowledge the scheme.\n  Reasons:\n    Half the hours." in out
    assert f"  project       {SLUG}" in out


def test_approval_as_asked_and_rejection(slicehub, ledger, wf):
    a, b = under_review(wf), under_review(wf, title="Second")
    r = ok(slicehub(f"scheme decide {a} approved --amount 500 --slug lab-a"))
    assert "project lab-a, HK$500.00 of subsidy at 70%" in r.out
    r = ok(slicehub(f"scheme decide {b} rejected --reasons 'Out of scope.'"))
    assert r.out == f"Application {b} is rejected; the applicant is told by e-mail.\n"
    assert rows(ledger, select(Project.slug)) == [("lab-a",)]


def test_an_approval_that_would_over_commit_the_fund_is_refused(slicehub, ledger):
    wf = workflow(ledger, fund=1_000_00)
    a, b = under_review(wf), under_review(wf, title="Second")
    ok(slicehub(f"scheme decide {a} approved"))
    before = dump_of(ledger)
    check_refused(
        slicehub(f"scheme decide {b} approved"),
        f"Approving application {b} for HK$700.00 would over-commit the scheme s: its fund is "
        "HK$1,000.00, HK$700.00 is committed and HK$300.00 is left.",
    )
    assert dump_of(ledger) == before


# -- change requests and progress reports ----------------------------------------------------


def approved(wf) -> str:
    app = under_review(wf)
    wf.decide("sec", app, "approved", T0)
    return SLUG


def test_change_requests_listed_approved_and_denied(slicehub, ledger, wf):
    slug = approved(wf)
    wf.request_change("ann", slug, "top_up", "A bigger model.", T0, amount_cents=200_00)
    wf.request_change("ann", slug, "members", "A student", T0, remove=["bo"], reviewer="rev1")
    out = ok(slicehub("scheme changes")).out.splitlines()
    assert out[0].split()[:4] == ["id", "project", "asked", "by"]
    assert "top-up of HK$200.00" in out[1] and "pending" in out[1] and "A bigger model." in out[1]
    assert "members -bo" in out[2] and "rev1" in out[2]
    r = ok(slicehub("scheme change 1 approve --note 'Granted.' --actor sec"))
    assert r.out == (
        f"Change request 1 (top-up of HK$200.00 for project {slug}) is approved and applied; "
        "the PI is told by e-mail.\n"
    )
    assert sorted(rows(ledger, select(Grant.amount_cents))) == [(200_00,), (700_00,)]
    r = ok(slicehub("scheme change 2 deny"))
    assert "is denied" in r.out
    got = rows(ledger, select(ChangeRequest.status, ChangeRequest.decided_by, ChangeRequest.note))
    assert got[0] == ("approved", "sec", "Granted.")
    assert got[1][0] == "denied"
    assert ok(slicehub("scheme changes --status pending")).out == "No change request is pending.\n"


def test_reports_and_the_overdue_ones(slicehub, ledger, wf, monkeypatch):
    approved(wf)
    assert ok(slicehub("scheme reports")).out == "No progress reports.\n"
    later = T0 + 95 * DAY  # the first quarter (and the project, at 90 days) has ended
    wf.open_due_reports(later)
    monkeypatch.setattr(clock, "utcnow", lambda: later)
    out = ok(slicehub("scheme reports")).out.splitlines()
    assert out[0].split() == ["id", "project", "period", "due", "status", "submitted", "(HKT)"]
    assert "2026-11-02 to 2027-01-31" in out[1] and out[1].split()[-3:] == [
        "2027-03-02",
        "due",
        "-",
    ]
    assert ok(slicehub("scheme reports --overdue")).out == "No progress report is overdue.\n"
    monkeypatch.setattr(clock, "utcnow", lambda: later + 40 * DAY)
    out = ok(slicehub("scheme reports --overdue")).out.splitlines()
    assert len(out) == 2 and "overdue" in out[1]


# -- text from applicants, escaped -------------------------------------------------------------


def test_hostile_text_reaches_the_terminal_escaped(slicehub, ledger, wf):
    app = under_review(wf, title="Plan \u202egnp.exe", abstract="ok\rEVIL\n\tindented")
    with ledger.session.begin() as s:  # what input checks refuse, as if written some other way
        s.execute(update(Application).values(organisation="HKU\x1b[2J\x9b"))
    for command in ("scheme applications", f"scheme show {app}"):
        out = ok(slicehub(command)).out
        assert "\x1b" not in out and "\x9b" not in out and "\r" not in out and "\u202e" not in out
        assert "HKU\\x1b[2J\\x9b" in out and "Plan \\u202egnp.exe" in out
    out = ok(slicehub(f"scheme show {app}")).out
    assert "Abstract:\n  ok\n  EVIL\n      indented\n" in out


def test_terminal_text():
    assert terminal.escape("a\x00b\x7f\u2028\U000e0001") == "a\\x00b\\x7f\\u2028\\U000e0001"
    assert terminal.width("香港 ok") == 7 and terminal.width("e\u0301") == 1
    assert terminal.fit("香港大學研究所", 7) == "香港大…"
    assert terminal.fit("short", 7) == "short"
    assert terminal.table((("a", 3, ">"), ("b", 5, "<")), [(1, "香港"), (1234, "x")]) == [
        "  a  b",
        "  1  香港",
        "12…  x",
    ]


# -- bad input: exit 2, one sentence, nothing written -----------------------------------------

CRITERIA = "admin scheme criteria s --criterion a:50:A"
BAD = {
    "criteria of unknown scheme": ("admin scheme criteria nope --max-rate 90%", "no scheme"),
    "criteria shown of unknown scheme": ("admin scheme criteria nope", "There is no scheme"),
    "criterion without title": ("admin scheme criteria s --criterion a:100", "KEY:WEIGHT:TITLE"),
    "criterion with an empty title": ("admin scheme criteria s --criterion 'a:100: '", "no title"),
    "criterion key": ("admin scheme criteria s --criterion 'A b:100:T'", "not a criterion key"),
    "criterion weight": ("admin scheme criteria s --criterion a:x:T", "not a whole number"),
    "weights not 100": (f"{CRITERIA} --criterion b:40:B", "sum to 90"),
    "criterion twice": (f"{CRITERIA} --criterion a:50:B", "listed twice"),
    "criterion title with controls": (
        "admin scheme criteria s --criterion",
        "a:100:T\x1b[31m",
        "control characters",
    ),
    "highest rate under the standard": ("admin scheme criteria s --max-rate 60%", "from the"),
    "report period": ("admin scheme criteria s --report-months 25", "1 to 24"),
    "report period text": ("admin scheme criteria s --report-months 3m", "whole number"),
    "bad status": ("scheme applications --status draft", "invalid choice"),
    "show a draft": ("scheme show {draft}", "no submitted application"),
    "show unknown": ("scheme show 99", "There is no submitted application 99"),
    "show not a number": ("scheme show abc", "not the number of an application"),
    "show zero": ("scheme show 0", "not the number"),
    "review without reviewers": ("scheme review {submitted}", "required: --reviewer"),
    "review by the team": ("scheme review {submitted} --reviewer bo", "on the team"),
    "reviewer twice": ("scheme review {submitted} --reviewer rev1 --reviewer REV1", "twice"),
    "reviewer name": ("scheme review {submitted} --reviewer 'rev 1'", "may contain only"),
    "review a draft": ("scheme review {draft} --reviewer rev1", "no submitted application"),
    "review twice": ("scheme review {review} --reviewer rev1", "already assigned"),
    "decide unknown": ("scheme decide 99 rejected --reasons x", "no submitted application"),
    "decide a submitted one": ("scheme decide {submitted} approved", "cannot become approved"),
    "decide twice": ("scheme decide {decided} approved", "cannot become approved"),
    "bad outcome": ("scheme decide {review} accepted", "invalid choice"),
    "reject without reasons": ("scheme decide {review} rejected", "Give the reasons"),
    "changes without reasons": ("scheme decide {review} approved_with_changes", "reasons"),
    "reject with an amount": (
        "scheme decide {review} rejected --reasons x --amount 5 --slug p",
        "leave out --amount, --slug",
    ),
    "rate over the highest": ("scheme decide {review} approved --rate 95%", "at most 90%"),
    "rate zero": ("scheme decide {review} approved --rate 0%", "more than 0%"),
    "negative amount": ("scheme decide {review} approved --amount -5", "negative"),
    "zero amount": ("scheme decide {review} approved --amount 0", "more than zero"),
    "compute not TYPE=HOURS": ("scheme decide {review} approved --compute x", "TYPE=HOURS"),
    "compute hours": ("scheme decide {review} approved --compute h100.1g.10gb=0", "from 1"),
    "compute unpriced": (
        "scheme decide {review} approved --compute a100.7g.80gb=5",
        "no list price",
    ),
    "compute twice": (
        "scheme decide {review} approved --compute h100.1g.10gb=5 --compute h100.1g.10gb=6",
        "named twice",
    ),
    "validity reversed": (
        "scheme decide {review} approved --from 2027-01-01 --until 2026-12-01",
        "ends before it starts",
    ),
    "validity in the past": ("scheme decide {review} approved --until 2026-11-03", "past"),
    "validity not a date": ("scheme decide {review} approved --until 2026-02-30", "not a date"),
    "validity with a time": (
        "scheme decide {review} approved --from 2026-11-05T00:00+08:00",
        "not a date",
    ),
    "bad slug": ("scheme decide {review} approved --slug 'My Lab'", "not a project id"),
    "slug taken": ("scheme decide {review} approved --slug " + SLUG, "exists already"),
    "terms with controls": ("scheme decide {review} approved --terms", "a\x07b", "control"),
    "terms too long": ("scheme decide {review} approved --terms", "x" * 5001, "at most 5,000"),
    "change unknown": ("scheme change 99 approve", "no change request 99"),
    "change decided": ("scheme change {change} approve", "is approved; it cannot become"),
    "change verb": ("scheme change 1 accept", "invalid choice"),
    "changes status": ("scheme changes --status open", "invalid choice"),
    "bad actor": ("scheme review {submitted} --reviewer rev1 --actor", "a\x1bb", "control"),
}


def situation(wf) -> dict:
    """One application in each state the bad inputs need, and a decided change request."""
    ids = {"decided": under_review(wf, title="Protein folding for Hong Kong")}
    wf.decide("sec", ids["decided"], "approved", T0)
    cr = wf.request_change("ann", SLUG, "top_up", "More.", T0, amount_cents=100)
    wf.decide_change("sec", cr.id, True, T0)
    ids["change"] = cr.id
    ids["review"] = under_review(wf, title="Other")
    ids["submitted"] = submitted(wf, title="Third")
    ids["draft"] = wf.create_draft("ann", "s", fields(), known_users, T0).id
    return ids


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_nothing_is_written(slicehub, ledger, wf, case):
    ids = situation(wf)
    *command, words = BAD[case]
    command = [c.format(**ids) for c in command]
    before = dump_of(ledger)
    check_refused(slicehub(*command), words)
    assert dump_of(ledger) == before


def test_refused_input_does_not_even_create_the_database(slicehub, tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    check_refused(slicehub("scheme decide 1 rejected --db", url), "Give the reasons")
    check_refused(slicehub("admin scheme criteria s --criterion a:50:A --db", url), "sum to 50")
    assert not (tmp_path / "new.sqlite").exists()
