"""Change requests (slicehub.quota.scheme.changes) and progress reports (slicehub.quota.scheme.
reports): a PI's top-up within the fund, extension and member changes, pending until approved
(and applied, audited) or denied; reports opened per period with the ledger's figures,
submitted with a narrative, overdue when late."""

import json
import re

import pytest
from sqlalchemy import func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.models import AuditEntry, Grant, Member, Project
from slicehub.quota.scheme.fund import committed
from slicehub.quota.scheme.models import ChangeRequest
from slicehub.quota.scheme.outbox import OutboxMail
from slicehub.quota.scheme.reports import add_months, periods_ended
from slicehub.quota.scheme.validate import TeamMember
from slicehub.quota.scheme.views import visible_change_requests, visible_reports
from tests.unit.rules_ledger import T0, H
from tests.unit.scheme_ledger import DAY, known_users, under_review, workflow

SLUG = "protein-folding-for-hong-kong"


@pytest.fixture
def wf(ledger):
    """A scheme with HK$1,000.00 in its fund and one approved project (HK$700.00 committed)."""
    flow = workflow(ledger, fund=1000_00)
    flow.decide("sec", under_review(flow), "approved", T0)
    return flow


def last_mail(lg) -> OutboxMail:
    with lg.session() as db:
        return db.scalars(select(OutboxMail).order_by(OutboxMail.id.desc())).first()


def test_a_top_up_within_the_fund_is_applied_and_one_beyond_it_refused(wf, ledger):
    small = wf.request_change("ann", SLUG, "top_up", "More epochs.", T0 + H, amount_cents=200_00)
    big = wf.request_change("ann", SLUG, "top_up", "Much more.", T0 + H, amount_cents=200_00)
    assert small.status == big.status == "pending"
    assert "top-up of HK$200.00) is pending" in last_mail(ledger).body
    wf.decide_change("sec", small.id, True, T0 + 2 * H, note="fine")
    with pytest.raises(LedgerError, match=re.escape("HK$900.00 is committed and HK$100.00 is")):
        wf.decide_change("sec", big.id, True, T0 + 2 * H)
    with ledger.session() as db:
        assert committed(db, 1) == 900_00
        assert db.get(ChangeRequest, big.id).status == "pending"  # refused: unchanged
        top = db.scalar(select(Grant).where(Grant.note == f"change request {small.id}"))
        assert (top.amount_cents, top.valid_from) == (200_00, T0 + 2 * H)
    assert ledger.balance(SLUG, T0 + 2 * H).grants_cents == 900_00
    assert last_mail(ledger).subject == f"Change request {small.id} for project {SLUG} is approved"
    wf.decide_change("sec", big.id, False, T0 + 3 * H, note="The fund is spent.")
    with pytest.raises(LedgerError, match="denied; it cannot become approved"):
        wf.decide_change("sec", big.id, True, T0 + 3 * H)
    assert "Note: The fund is spent." in last_mail(ledger).body


def test_an_extension_moves_the_project_and_its_grants_end(wf, ledger):
    with ledger.session() as db:
        old_end = db.scalar(select(Project.valid_until))
    new_end = (old_end + 60 * DAY).date()
    with pytest.raises(LedgerError, match="asks for a later date"):
        wf.request_change("ann", SLUG, "extension", "late", T0, valid_until=old_end.date())
    cr = wf.request_change("ann", SLUG, "extension", "Data arrives late.", T0, valid_until=new_end)
    wf.decide_change("sec", cr.id, True, T0 + H)
    with ledger.session() as db:
        assert db.scalar(select(Project.valid_until)) == cr.valid_until
        assert db.scalars(select(Grant.valid_until)).all() == [cr.valid_until]
        entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "project.extend"))
    assert json.loads(entry.detail)["grants"] == [1]
    assert ledger.balance(SLUG, old_end + DAY).grants_cents == 700_00  # still valid then


def test_members_are_added_and_removed_but_the_pi_stays(wf, ledger):
    with pytest.raises(LedgerError, match="mallory: not hub users"):
        wf.request_change(
            "ann", SLUG, "members", "x", T0, add=[TeamMember("mallory")], known_users=known_users
        )
    with pytest.raises(LedgerError, match="The PI stays"):
        wf.request_change("ann", SLUG, "members", "x", T0, remove=["ann"])
    cr = wf.request_change(
        "ann",
        SLUG,
        "members",
        "Cy joins, Bo leaves.",
        T0,
        add=[TeamMember("cy", "cy@uni.hk")],
        remove=["bo"],
        known_users=known_users,
        reviewer="rev1",
    )
    assert cr.reviewer == "rev1"
    wf.decide_change("sec", cr.id, True, T0 + H)
    with ledger.session() as db:
        assert sorted(db.execute(select(Member.username, Member.role)).all()) == [
            ("ann", "pi"),
            ("cy", "member"),
        ]
    assert ledger.open_session(SLUG, "cy", "", "h100.1g.10gb", H, T0 + 2 * H).rate_bp == 7000
    with pytest.raises(LedgerError, match="bo is not a member"):
        ledger.open_session(SLUG, "bo", "", "h100.1g.10gb", H, T0 + 2 * H)


def test_only_the_pi_asks_and_bad_requests_write_nothing(wf, ledger):
    def entries():
        with ledger.session() as db:
            return db.scalar(select(func.count()).select_from(AuditEntry))

    before = entries()
    for ask, said in (
        (lambda: wf.request_change("bo", SLUG, "top_up", "x", T0, amount_cents=1), "of yours"),
        (lambda: wf.request_change("ann", "nope", "top_up", "x", T0, amount_cents=1), "of yours"),
        (lambda: wf.request_change("ann", SLUG, "top_up", " ", T0, amount_cents=1), "Say why"),
        (lambda: wf.request_change("ann", SLUG, "top_up", "x", T0, amount_cents=0), "more than"),
        (lambda: wf.request_change("ann", SLUG, "rename", "x", T0), "one of top_up"),
        (lambda: wf.request_change("ann", SLUG, "extension", "x", T0), "names the new end"),
        (lambda: wf.request_change("ann", SLUG, "members", "x", T0), "at least one member"),
        (lambda: wf.decide_change("sec", 99, True, T0), "no change request 99"),
    ):
        with pytest.raises(LedgerError, match=said):
            ask()
    assert entries() == before


def test_months_and_report_periods():
    jan31 = T0.replace(month=1, day=31, year=2027)
    assert add_months(jan31, 1).date().isoformat() == "2027-02-28"
    assert add_months(jan31, 13).date().isoformat() == "2028-02-29"
    start, end = T0, T0 + 200 * DAY
    assert periods_ended(start, end, 3, T0 + 10 * DAY) == []
    assert periods_ended(start, end, 3, end) == [
        (start, add_months(start, 3)),
        (add_months(start, 3), add_months(start, 6)),
        (add_months(start, 6), end),  # the last one ends with the project
    ]


def test_reports_are_opened_prefilled_submitted_and_overdue(wf, ledger):
    s = ledger.open_session(SLUG, "bo", "", "h100.1g.10gb", 2 * H, T0 + DAY)
    ledger.close_session(s.id, T0 + DAY + 1.5 * H)  # 1.5 h charged, HK$15.00 list
    with ledger.session() as db:
        start, end = db.execute(select(Project.valid_from, Project.valid_until)).one()
    first_end = end  # a 90-day project: its one period ends with it, before three months
    assert first_end < add_months(start, 3)
    assert wf.open_due_reports(first_end - H) == []
    (report,) = wf.open_due_reports(first_end)
    assert wf.open_due_reports(first_end + DAY) == []  # opened once
    assert (report.status, report.due_at) == ("due", first_end + 30 * DAY)
    figures = json.loads(report.prefilled)
    assert figures["slice_types"] == {
        "h100.1g.10gb": {
            "seconds": 5400,
            "gpu_hours": "1.50",
            "list_cents": 1500,
            "subsidy_cents": 1050,
            "copay_cents": 450,
        }
    }
    assert (figures["sessions"], figures["subsidy_cents"], figures["copay_cents"]) == (1, 1050, 450)
    assert figures["idle_share_bp"] == 0
    mail = last_mail(ledger)
    assert mail.to_addr == "ann@uni.hk" and "is due" in mail.subject
    assert [r.id for r, _ in wf.overdue_reports(first_end + 31 * DAY)] == [report.id]
    with pytest.raises(LedgerError, match=r"no progress report .* of yours"):
        wf.submit_report("bo", report.id, "We did it.", first_end + DAY)
    with pytest.raises(LedgerError, match="Write the narrative"):
        wf.submit_report("ann", report.id, "  ", first_end + DAY)
    done = wf.submit_report("ann", report.id, "<b>We folded</b> =1+1", first_end + DAY)
    assert (done.status, done.narrative) == ("submitted", "<b>We folded</b> =1+1")
    with pytest.raises(LedgerError, match="submitted; it cannot become submitted"):
        wf.submit_report("ann", report.id, "again", first_end + DAY)
    assert wf.overdue_reports(first_end + 31 * DAY) == []
    assert [r.status for r, slug in wf.reports(SLUG)] == ["submitted"]


def test_who_sees_change_requests_and_reports(wf, ledger):
    cr = wf.request_change("ann", SLUG, "top_up", "x", T0, amount_cents=1, reviewer="rev1")
    with ledger.session() as db:
        end = db.scalar(select(Project.valid_until))
    (report,) = wf.open_due_reports(end)
    with ledger.session() as db:

        def seen(user, roles):
            changes = [c.id for c, _ in visible_change_requests(db, user, roles)]
            return changes, [r.id for r, _ in visible_reports(db, user, roles)]

        assert seen("ann", set()) == ([cr.id], [report.id])  # the PI
        assert seen("bo", set()) == ([], [])  # a member, not the PI
        assert seen("sec", {"secretariat"}) == ([cr.id], [report.id])
        assert seen("rev1", {"committee"}) == ([cr.id], [report.id])  # named as its reviewer
        assert seen("rev2", {"committee"}) == ([], [report.id])
