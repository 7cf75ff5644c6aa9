"""An applicant's verbs (slicehub.quota.scheme.applications): drafts saved and checked, bad input
refused with a sentence and nothing written, hostile text kept as typed, submission of complete
applications only, withdrawal; each change audited with its mail queued in its transaction."""

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.models import AuditEntry, Grant, Project
from slicehub.quota.scheme.models import Application, ApplicationMember, ApplicationRequest
from slicehub.quota.scheme.outbox import OutboxMail
from slicehub.quota.scheme.validate import ComputeLine, TeamMember
from slicehub.quota.scheme.views import live_cost
from tests.unit.rules_ledger import T0, H
from tests.unit.scheme_ledger import fields, known_users, submitted, workflow

TABLES = (Application, ApplicationMember, ApplicationRequest, AuditEntry, OutboxMail, Project)
HOSTILE = '<script>alert(1)</script> =HYPERLINK("http://x") +1 -1 @SUM(A1)'


def counts(lg) -> dict:
    with lg.session() as db:
        return {t.__tablename__: db.scalar(select(func.count()).select_from(t)) for t in TABLES}


def mails(lg) -> list[OutboxMail]:
    with lg.session() as db:
        return list(db.scalars(select(OutboxMail).order_by(OutboxMail.id)))


def audits(lg, prefix: str) -> list[AuditEntry]:
    with lg.session() as db:
        q = select(AuditEntry).where(AuditEntry.action.like(f"{prefix}%")).order_by(AuditEntry.id)
        return list(db.scalars(q))


@pytest.fixture
def wf(ledger):
    return workflow(ledger)


def test_a_draft_is_saved_with_its_team_and_request_and_edited_whole(wf, ledger):
    app = wf.create_draft("ann", "s", fields(title="", abstract=""), known_users, T0)
    assert (app.status, app.rate_bp, app.title) == ("draft", 7000, "")
    wf.update_draft(
        "ann",
        app.id,
        fields(
            members=[TeamMember("cy", "cy@uni.hk")],
            requests=[ComputeLine("h100.3g.40gb", 10, "eval")],
            rate_bp=9000,
        ),
        known_users,
        T0 + H,
    )
    with ledger.session() as db:
        row = db.get(Application, app.id)
        team = db.execute(select(ApplicationMember.username, ApplicationMember.role)).all()
        asked = db.execute(select(ApplicationRequest.slice_type, ApplicationRequest.gpu_hours))
        assert (row.title, row.rate_bp) == ("Protein folding for Hong Kong", 9000)
        assert row.period_start == datetime(2026, 11, 2, tzinfo=UTC)  # a date: UTC midnight
        assert sorted(team) == [("ann", "pi"), ("cy", "member")]  # bo went with the old team
        assert asked.all() == [("h100.3g.40gb", 10)]
    assert [a.action for a in audits(ledger, "application.")] == [
        "application.create",
        "application.update",
    ]
    assert mails(ledger) == []  # a draft tells nobody


def test_hostile_text_is_stored_as_typed(wf, ledger):
    app = wf.create_draft(
        "ann",
        "s",
        fields(
            title=HOSTILE[:200],
            abstract=HOSTILE + "\nsecond line\tand a tab",
            organisation=HOSTILE,
            ai_area="=1+1",
            requests=[ComputeLine("h100.1g.10gb", 5, HOSTILE)],
        ),
        known_users,
        T0,
    )
    with ledger.session() as db:
        row = db.get(Application, app.id)
        assert row.abstract == HOSTILE + "\nsecond line\tand a tab"
        assert (row.organisation, row.ai_area) == (HOSTILE, "=1+1")
        assert db.scalar(select(ApplicationRequest.justification)) == HOSTILE


BAD = {
    "a team member who is not a hub user": (
        dict(members=[TeamMember("mallory")]),
        "Not a hub user: mallory",
    ),
    "an applicant who is not a hub user": ("ghost", "Not a hub user: ghost"),
    "an over-long abstract": (dict(abstract="x" * 5001), "5,001 characters long; at most 5,000"),
    "an over-long title": (dict(title="x" * 201), "title is 201 characters"),
    "a control character in the title": (dict(title="a\x1bb"), "title contains control"),
    "a line break in the title": (dict(title="a\nb"), "title contains control"),
    "a NUL in the abstract": (dict(abstract="a\x00b"), "abstract contains control"),
    "zero GPU-hours": (
        dict(requests=[ComputeLine("h100.1g.10gb", 0, "")]),
        "from 1 to 100,000",
    ),
    "too many GPU-hours": (
        dict(requests=[ComputeLine("h100.1g.10gb", 100_001, "")]),
        "from 1 to 100,000",
    ),
    "fractional GPU-hours": (
        dict(requests=[ComputeLine("h100.1g.10gb", 1.5, "")]),
        "must be a whole number",
    ),
    "a slice type without a list price": (
        dict(requests=[ComputeLine("h100x8", 10, "")]),
        "h100x8 has no list price",
    ),
    "a slice type twice": (
        dict(requests=[ComputeLine("h100.1g.10gb", 1), ComputeLine("h100.1g.10gb", 2)]),
        "requested twice",
    ),
    "a rate above the scheme's highest": (dict(rate_bp=9001), "at most 90%"),
    "a rate of zero": (dict(rate_bp=0), "more than 0%"),
    "an unknown organisation type": (dict(org_type="charity"), "organisation type"),
    "a bad e-mail": (dict(email="ann at uni"), "not an e-mail address"),
    "a period that ends first": (
        dict(period_start=(T0 + 9 * H).date(), period_end=T0.date()),
        "ends before it starts",
    ),
    "a period over five years": (
        dict(period_end=T0.date().replace(year=2032)),
        "at most five years",
    ),
    "a moment that is not a date": (dict(period_start=T0), "must be a date"),
    "the applicant in their own team": (dict(members=[TeamMember("ann")]), "the applicant"),
    "a member twice": (dict(members=[TeamMember("bo"), TeamMember("bo")]), "listed twice"),
}


@pytest.mark.parametrize(("change", "said"), BAD.values(), ids=BAD)
def test_bad_input_is_refused_with_a_sentence_and_nothing_written(wf, ledger, change, said):
    draft = wf.create_draft("ann", "s", fields(), known_users, T0)
    before = counts(ledger)
    applicant = change if isinstance(change, str) else "ann"
    spec = {} if isinstance(change, str) else change
    with pytest.raises(LedgerError, match=said) as refused:
        wf.create_draft(applicant, "s", fields(**spec), known_users, T0)
    assert refused.value.status == 400
    if applicant == "ann":
        with pytest.raises(LedgerError, match=said):
            wf.update_draft("ann", draft.id, fields(**spec), known_users, T0)
    assert counts(ledger) == before
    with ledger.session() as db:
        assert db.get(Application, draft.id).title == "Protein folding for Hong Kong"


def test_submission_needs_a_complete_application_then_freezes_it(wf, ledger):
    app = wf.create_draft(
        "ann", "s", fields(abstract=" ", ai_area="", requests=[]), known_users, T0
    )
    before = counts(ledger)
    with pytest.raises(LedgerError, match="lacks abstract, AI area, a compute request"):
        wf.submit("ann", app.id, T0)
    assert counts(ledger) == before
    wf.update_draft("ann", app.id, fields(), known_users, T0)
    done = wf.submit("ann", app.id, T0 + H)
    assert (done.status, done.submitted_at) == ("submitted", T0 + H)
    with pytest.raises(LedgerError, match="can no longer be edited") as refused:
        wf.update_draft("ann", app.id, fields(title="changed"), known_users, T0 + 2 * H)
    assert refused.value.status == 409
    with pytest.raises(LedgerError, match="is submitted; it cannot become submitted"):
        wf.submit("ann", app.id, T0 + 2 * H)
    (mail,) = mails(ledger)
    assert mail.to_addr == "ann@uni.hk" and mail.related == f"application:{app.id}"
    assert mail.subject == f"Application {app.id} (Protein folding for Hong Kong) is submitted"
    for words in ("HK$1,000.00", "HK$700.00", "HK$300.00", "Next: the secretariat"):
        assert words in mail.body
    (entry,) = audits(ledger, "application.submit")
    assert (entry.actor, entry.subject, entry.at) == ("ann", f"application:{app.id}", T0 + H)
    assert json.loads(entry.detail) == {"list_cents": 100_000, "subsidy_cents": 70_000}


def test_only_the_applicant_sees_saves_submits_or_withdraws(wf, ledger):
    app = wf.create_draft("ann", "s", fields(), known_users, T0)
    for verb in (
        lambda: wf.update_draft("bo", app.id, fields(), known_users, T0),
        lambda: wf.submit("bo", app.id, T0),
        lambda: wf.withdraw("bo", app.id, T0),
        lambda: wf.submit("ann", 999, T0),
    ):
        with pytest.raises(LedgerError, match="There is no application") as refused:
            verb()
        assert refused.value.status == 404


def test_withdrawal_until_the_decision(wf, ledger):
    app_id = submitted(wf)
    assert wf.withdraw("ann", app_id, T0 + H).status == "withdrawn"
    with pytest.raises(LedgerError, match="withdrawn; it cannot become withdrawn"):
        wf.withdraw("ann", app_id, T0 + 2 * H)
    assert "is withdrawn" in mails(ledger)[-1].subject
    (entry,) = audits(ledger, "application.withdraw")
    assert json.loads(entry.detail) == {"before": "submitted"}


def test_the_live_cost_at_todays_prices_and_the_requested_rate(ledger):
    cost = live_cost(ledger, [("h100.1g.10gb", 100), ("h100.3g.40gb", 3)], 9000, T0)
    assert [(c.list_cents, c.subsidy_cents, c.copay_cents) for c in cost.lines] == [
        (100_000, 90_000, 10_000),
        (9_000, 8_100, 900),
    ]
    assert (cost.list_cents, cost.subsidy_cents, cost.copay_cents) == (109_000, 98_100, 10_900)
    ledger.set_price("staff", "h100.1g.10gb", 1333, T0 + H, T0)
    later = live_cost(ledger, [("h100.1g.10gb", 7)], 7000, T0 + H)
    assert (later.list_cents, later.subsidy_cents, later.copay_cents) == (9331, 6531, 2800)
    with pytest.raises(LedgerError, match="h100x8 has no list price"):
        live_cost(ledger, [("h100x8", 1)], 7000, T0)


def test_the_scheme_configuration_is_checked(wf, ledger):
    bad = [
        (dict(criteria=[{"key": "a", "title": "A", "weight": 50}]), "sum to 50"),
        (dict(criteria=[{"key": "A B", "title": "A", "weight": 100}]), "not a criterion key"),
        (dict(max_rate_bp=6000), "from the scheme's standard rate"),
        (dict(report_period_months=0), "1 to 24"),
    ]
    for spec, said in bad:
        with pytest.raises(LedgerError, match=said):
            wf.configure_scheme("staff", "s", T0, **spec)
    wf.configure_scheme("staff", "s", T0, max_rate_bp=10_000, report_period_months=6)
    with ledger.session() as db:
        assert db.scalar(select(func.count()).select_from(Grant)) == 0
    assert json.loads(audits(ledger, "scheme.configure")[-1].detail) == {
        "max_rate_bp": 10_000,
        "report_period_months": 6,
    }
