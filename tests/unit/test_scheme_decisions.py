"""Decisions (slicehub.quota.scheme.decisions) and the fund (slicehub.quota.scheme.fund): an
approval creates the project with its own rate, its grant and its members in one audited
transaction, and a session on it is charged that rate; a rejection creates nothing; nothing
(approval, top-up, staff's grant) takes the scheme's committed total past its fund."""

import json
import re

import pytest
from sqlalchemy import func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.models import AuditEntry, Grant, Member, Project
from slicehub.quota.reader import LedgerReader
from slicehub.quota.scheme.fund import committed
from slicehub.quota.scheme.models import Application, Decision
from slicehub.quota.scheme.outbox import OutboxMail
from tests.unit.rules_ledger import T0, H, project
from tests.unit.scheme_ledger import DAY, under_review, workflow


def one(lg, q):
    with lg.session() as db:
        return db.scalar(q)


def test_an_approval_with_changes_creates_the_project_grant_and_members(ledger):
    wf = workflow(ledger)
    app = under_review(wf)
    decision = wf.decide(
        "sec",
        app,
        "approved_with_changes",
        T0 + H,
        rate_bp=9000,
        compute={"h100.1g.10gb": 50},
        terms="Acknowledge the scheme in publications.",
        reasons="Half the hours: the schedule is long.",
    )
    # the subsidy of 50 h at HK$10.00 at 90%, at today's list price
    assert (decision.amount_cents, decision.rate_bp) == (45_000, 9000)
    assert json.loads(decision.compute) == {"h100.1g.10gb": 50}
    slug = "protein-folding-for-hong-kong"
    with ledger.session() as db:
        p = db.scalar(select(Project).where(Project.slug == slug))
        row = db.get(Application, app)
        assert (row.status, row.project_id, row.decided_at) == (
            "approved_with_changes",
            p.id,
            T0 + H,
        )
        assert (p.pi, p.organisation, p.subsidy_rate_bp, p.policy) == ("ann", "HKU", 9000, "stop")
        assert json.loads(p.allowed_slice_types) == ["h100.1g.10gb"]
        assert (p.valid_from, p.valid_until) == (row.period_start, row.period_end)
        grants = db.execute(select(Grant.amount_cents, Grant.valid_until)).all()
        assert grants == [(45_000, row.period_end)]
        members = db.execute(select(Member.username, Member.role, Member.email)).all()
        assert sorted(members) == [("ann", "pi", "ann@uni.hk"), ("bo", "member", "bo@uni.hk")]
        actions = db.scalars(select(AuditEntry.action).where(AuditEntry.at == T0 + H)).all()
        assert actions == [
            "project.add",
            "grant.add",
            "member.add",
            "member.add",
            "application.approve",
        ]
        mail = db.scalars(select(OutboxMail).order_by(OutboxMail.id.desc())).first()
    assert mail.subject.endswith("is approved with changes")
    for words in ("HK$450.00 at 90%", "2027-01-31", "Half the hours", f"project {slug}"):
        assert words in mail.body
    # the project's own rate: a session is charged 90% subsidy, and the API says so
    s = ledger.open_session(slug, "bo", "", "h100.1g.10gb", H, T0 + 2 * H)
    assert (s.rate_bp, s.hold_subsidy_cents) == (9000, 900)
    ledger.meter(T0 + 3 * H)
    assert ledger.balance(slug, T0 + 3 * H).subsidy_charged_cents == 900
    (view,) = LedgerReader(ledger).projects("bo", T0 + 3 * H)
    assert view["subsidy_rate_bp"] == 9000
    # another project of the same scheme still gets the scheme's 70%
    project(ledger, "plain")
    ledger.add_member("staff", "plain", "bo", T0)
    assert ledger.open_session("plain", "bo", "x", "h100.1g.10gb", H, T0 + 2 * H).rate_bp == 7000


def test_an_approval_as_asked_takes_the_request_and_a_given_slug(ledger):
    wf = workflow(ledger)
    app = under_review(wf, rate_bp=8000)
    d = wf.decide("sec", app, "approved", T0, slug="fold")
    assert (d.amount_cents, d.rate_bp, json.loads(d.compute)) == (
        80_000,
        8000,
        {"h100.1g.10gb": 100},
    )
    again = under_review(wf, rate_bp=8000)
    with pytest.raises(LedgerError, match="project 'fold' exists already"):
        wf.decide("sec", again, "approved", T0, slug="fold")
    assert one(ledger, select(Application.status).where(Application.id == again)) == "under_review"
    wf.decide("sec", again, "approved", T0)  # a slug from the title
    third = under_review(wf)
    wf.decide("sec", third, "approved", T0)  # made unique
    with ledger.session() as db:
        slugs = db.execute(select(Application.id, Project.slug).join(Project)).all()
    assert sorted(slugs) == [
        (app, "fold"),
        (again, "protein-folding-for-hong-kong"),
        (third, "protein-folding-for-hong-kong-2"),
    ]


def test_a_rejection_creates_nothing_and_needs_reasons(ledger):
    wf = workflow(ledger)
    app = under_review(wf)
    with pytest.raises(LedgerError, match="Give the reasons"):
        wf.decide("sec", app, "rejected", T0)
    d = wf.decide("sec", app, "rejected", T0, reasons="Out of the scheme's scope.")
    assert (d.outcome, d.amount_cents) == ("rejected", 0)
    assert one(ledger, select(func.count()).select_from(Project)) == 0
    with pytest.raises(LedgerError, match="rejected; it cannot become approved"):
        wf.decide("sec", app, "approved", T0)
    mail = one(ledger, select(OutboxMail).order_by(OutboxMail.id.desc()))
    assert "Out of the scheme's scope." in mail.body and mail.subject.endswith("is rejected")


BAD_DECISIONS = {
    "a rate above the scheme's highest": (dict(rate_bp=9500), "at most 90%"),
    "an unknown outcome": (dict(outcome="maybe"), "outcome 'maybe' is unknown"),
    "an unpriced slice type": (dict(compute={"h100x8": 5}), "h100x8 has no list price"),
    "too many hours": (dict(compute={"h100.1g.10gb": 100_001}), "from 1 to 100,000"),
    "a zero amount": (dict(amount_cents=0), "more than zero"),
    "a validity in the past": (
        dict(valid_from=(T0 - 9 * DAY).date(), valid_until=(T0 - DAY).date()),
        "ends in the past",
    ),
    "a bad slug": (dict(slug="Fold Lab"), "not a project id"),
    "control characters in the terms": (dict(terms="\x1b[31m"), "terms contains control"),
}


@pytest.mark.parametrize(("spec", "said"), BAD_DECISIONS.values(), ids=BAD_DECISIONS)
def test_a_bad_decision_is_refused_and_nothing_written(ledger, spec, said):
    wf = workflow(ledger)
    app = under_review(wf)
    entries = one(ledger, select(func.count()).select_from(AuditEntry))
    spec = {"outcome": "approved", **spec}
    with pytest.raises(LedgerError, match=said):
        wf.decide("sec", app, spec.pop("outcome"), T0 + H, reasons="r", **spec)
    assert one(ledger, select(func.count()).select_from(AuditEntry)) == entries
    assert one(ledger, select(func.count()).select_from(Decision)) == 0
    assert one(ledger, select(Application.status)) == "under_review"


def test_the_fund_refuses_an_over_commitment_with_the_amounts(ledger):
    wf = workflow(ledger, fund=1500_00)
    first, second, third = (under_review(wf) for _ in range(3))
    wf.decide("sec", first, "approved", T0)  # HK$700.00
    wf.decide("sec", second, "approved", T0)  # HK$1,400.00 committed
    with pytest.raises(LedgerError) as refused:
        wf.decide("sec", third, "approved", T0)
    assert refused.value.status == 409
    assert str(refused.value) == (
        "Approving application 3 for HK$700.00 would over-commit the scheme s: its fund is "
        "HK$1,500.00, HK$1,400.00 is committed and HK$100.00 is left."
    )
    with ledger.session() as db:
        assert committed(db, 1) == 140_000
        assert db.get(Application, third).status == "under_review"
        assert db.scalar(select(func.count()).select_from(Project)) == 2
    wf.decide("sec", third, "approved_with_changes", T0, amount_cents=100_00, reasons="fits")
    # staff's own grants obey the same fund
    slug = "protein-folding-for-hong-kong-2"
    said = f"A grant to {slug} for HK$0.01 would over-commit the scheme s"
    with pytest.raises(LedgerError, match=re.escape(said)):
        ledger.add_grant("staff", slug, 1, T0, T0 + DAY, T0)
    with ledger.session() as db:
        assert committed(db, 1) == 150_000  # to the cent, and no further
