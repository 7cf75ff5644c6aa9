"""The review (slicehub.quota.scheme.review) and who sees what (slicehub.quota.scheme.views): the
secretariat starts the review with reviewers; a reviewer who declares a conflict no longer sees
the application, cannot score it, and their scores no longer show or count; scores cover every
criterion from 0 to 10."""

import pytest
from sqlalchemy import select

from slicehub.quota.errors import LedgerError
from slicehub.quota.scheme.models import Application, ReviewerAssignment
from slicehub.quota.scheme.outbox import OutboxMail
from slicehub.quota.scheme.views import (
    application_view,
    can_see,
    scores_seen,
    visible_applications,
)
from tests.unit.rules_ledger import T0, H
from tests.unit.scheme_ledger import fields, known_users, submitted, under_review, workflow

SEC, COM, STAFF = {"secretariat"}, {"committee"}, {"staff"}


@pytest.fixture
def wf(ledger):
    return workflow(ledger)


def seen(lg, user, roles, status=None) -> list[int]:
    with lg.session() as db:
        return [a.id for a in visible_applications(db, user, roles, status)]


def test_who_sees_which_application(wf, ledger):
    draft = wf.create_draft("ann", "s", fields(), known_users, T0).id
    mine = submitted(wf, "ann")
    theirs = under_review(wf, reviewers=["rev1"])
    other = wf.create_draft("bo", "s", fields(members=[]), known_users, T0).id
    assert seen(ledger, "ann", set()) == [draft, mine, theirs]  # own, drafts included
    assert seen(ledger, "bo", set()) == [other]
    assert seen(ledger, "sec", SEC) == [mine, theirs]  # every submitted one, no draft
    assert seen(ledger, "boss", STAFF) == [mine, theirs]
    assert seen(ledger, "sec", SEC, "under_review") == [theirs]
    assert seen(ledger, "rev1", COM) == [theirs]  # assigned only
    assert seen(ledger, "rev2", COM) == []
    assert seen(ledger, "rev1", set()) == []  # no longer on the committee: nothing
    with ledger.session() as db:
        assert can_see(db, theirs, "rev1", COM) and not can_see(db, mine, "rev1", COM)
        assert not can_see(db, draft, "sec", SEC) and not can_see(db, 999, "sec", SEC)


def test_a_conflict_removes_the_reviewer_and_hides_their_scores(wf, ledger):
    app = under_review(wf, reviewers=["rev1", "rev2"])
    wf.score("rev1", app, {"alignment": 9, "compute": 9}, T0, {"alignment": "<i>great</i>"})
    wf.score("rev2", app, {"alignment": 5, "compute": 10}, T0)
    with ledger.session() as db:
        assert scores_seen(db, app, "rev1", COM) == {
            "rev1": {
                "scores": {"alignment": (9, "<i>great</i>"), "compute": (9, "")},
                "weighted": 90,
            }
        }
        assert set(scores_seen(db, app, "sec", SEC)) == {"rev1", "rev2"}
        assert scores_seen(db, app, "ann", set()) == {}
    wf.declare_conflict("rev1", app, "a former student of mine", T0 + H)
    assert seen(ledger, "rev1", COM) == []
    with ledger.session() as db:
        assert scores_seen(db, app, "rev1", COM) == {}
        secretariat = scores_seen(db, app, "sec", SEC)
        assert secretariat == {
            "rev2": {"scores": {"alignment": (5, ""), "compute": (10, "")}, "weighted": 70}
        }
        row = db.scalar(select(ReviewerAssignment).where(ReviewerAssignment.reviewer == "rev1"))
        assert (row.conflict, row.conflict_note, row.declared_at) == (
            True,
            "a former student of mine",
            T0 + H,
        )
    for verb in (
        lambda: wf.score("rev1", app, {"alignment": 1, "compute": 1}, T0 + 2 * H),
        lambda: wf.declare_conflict("rev1", app, "again", T0 + 2 * H),
        lambda: wf.score("rev3", app, {"alignment": 1, "compute": 1}, T0 + 2 * H),
    ):
        with pytest.raises(LedgerError, match=r"no application .* assigned to you") as refused:
            verb()
        assert refused.value.status == 404


SCORES = {
    "a criterion missing": ({"alignment": 5}, "missing: compute"),
    "an unknown criterion": ({"alignment": 5, "compute": 5, "beauty": 9}, "no criterion beauty"),
    "a score above 10": ({"alignment": 11, "compute": 5}, "from 0 to 10"),
    "a negative score": ({"alignment": -1, "compute": 5}, "from 0 to 10"),
    "a fractional score": ({"alignment": 7.5, "compute": 5}, "whole number"),
}


@pytest.mark.parametrize(("scores", "said"), SCORES.values(), ids=SCORES)
def test_scores_cover_every_criterion_from_0_to_10(wf, ledger, scores, said):
    app = under_review(wf)
    with pytest.raises(LedgerError, match=said):
        wf.score("rev1", app, scores, T0)
    with ledger.session() as db:
        assert scores_seen(db, app, "sec", SEC) == {}


def test_scoring_again_replaces_the_scores_and_comments_are_checked(wf, ledger):
    app = under_review(wf)
    wf.score("rev1", app, {"alignment": 2, "compute": 3}, T0, {"compute": "=cmd|' /C calc'!A0"})
    wf.score("rev1", app, {"alignment": 10, "compute": 10}, T0 + H)
    with ledger.session() as db:
        assert scores_seen(db, app, "sec", SEC)["rev1"]["weighted"] == 100
    with pytest.raises(LedgerError, match="contains control characters"):
        wf.score("rev1", app, {"alignment": 1, "compute": 1}, T0, {"compute": "\x07"})
    with pytest.raises(LedgerError, match="2,001 characters"):
        wf.score("rev1", app, {"alignment": 1, "compute": 1}, T0, {"compute": "x" * 2001})


def test_the_review_starts_on_a_submitted_application_with_reviewers(wf, ledger):
    draft = wf.create_draft("ann", "s", fields(), known_users, T0).id
    with pytest.raises(LedgerError, match="draft; it cannot become under review"):
        wf.start_review("sec", draft, ["rev1"], T0)
    app = submitted(wf)
    for reviewers, said in (
        ([], "at least one reviewer"),
        (["bo"], "bo is on the team"),
        (["ann"], "ann is on the team"),
        (["rev1", "rev1"], "each reviewer once"),
        (["not a name"], "not a hub user name"),
    ):
        with pytest.raises(LedgerError, match=said):
            wf.start_review("sec", app, reviewers, T0)
    with pytest.raises(LedgerError, match="not under review"):
        wf.assign_reviewers("sec", app, ["rev3"], T0)
    wf.start_review("sec", app, ["rev1"], T0 + H)
    wf.assign_reviewers("sec", app, ["rev2"], T0 + H)
    with pytest.raises(LedgerError, match="rev2 is already assigned"):
        wf.assign_reviewers("sec", app, ["rev2"], T0 + H)
    assert seen(ledger, "rev2", COM) == [app]
    with ledger.session() as db:
        last = db.scalars(select(OutboxMail).order_by(OutboxMail.id.desc())).first()
    assert last.subject.endswith("is under review") and "reviewers score it" in last.body


def test_an_application_as_the_api_shows_it(wf, ledger):
    app = under_review(wf)
    wf.decide("sec", app, "approved", T0 + 3 * 24 * H, terms="<b>terms</b>")
    with ledger.session() as db:
        view = application_view(db, db.get(Application, app), T0 + 10 * 24 * H)
    assert (view["status"], view["age_days"], view["project"]) == (
        "approved",
        10,
        "protein-folding-for-hong-kong",
    )
    assert view["members"] == [
        {"username": "ann", "email": "ann@uni.hk", "role": "pi"},
        {"username": "bo", "email": "bo@uni.hk", "role": "member"},
    ]
    assert view["cost"] == {"list_cents": 100_000, "subsidy_cents": 70_000, "copay_cents": 30_000}
    assert view["decision"]["amount_cents"] == 70_000
    assert view["decision"]["terms"] == "<b>terms</b>"
    assert view["decision"]["compute"] == {"h100.1g.10gb": 100}
