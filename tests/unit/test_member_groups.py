"""A project's member group: the members of a hub group are the project's members too, decided
at hold time (and at extend, and for the form's project list) from the user's groups; a member
row wins; the ledger keeps who started what and, for a group member, how (the hold's audit
entry). Projects without a group decide as before."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest, MemberRow, membership
from slicehub.quota.models import AuditEntry, Project
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.reader import LedgerReader
from tests.unit.rules_ledger import T0, H, project

ONE_G = "h100.1g.10gb"  # HK$10.00 an hour at list price: HK$7.00 of subsidy


def refused(fn, *args, status=None, **kwargs) -> str:
    with pytest.raises(LedgerError) as e:
        fn(*args, **kwargs)
    if status:
        assert e.value.status == status, str(e.value)
    return str(e.value)


def audit(lg, action: str) -> list[AuditEntry]:
    with lg.session() as db:
        return db.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).all()


def vision(lg, **kw) -> None:
    """Project vision, whose member group is proj-vision; ann has a row in it, pi's row is pi."""
    project(lg, "vision", member_group="proj-vision", **kw)
    lg.add_member("staff", "vision", "pi", T0, role="pi", cap_cents=50_00)


# -- the rule, pure -------------------------------------------------------------------------


def test_a_row_wins_else_the_group_makes_a_plain_member_else_nobody():
    row = MemberRow("ann", "pi", 5_00)
    assert membership(row, "ann", "proj-vision", {"proj-vision"}) is row
    assert membership(row, "ann", "proj-vision", ()) is row
    assert membership(row, "ann", None, ()) is row
    assert membership(None, "bo", "proj-vision", {"x", "proj-vision"}) == MemberRow(
        "bo", "member", None, "group:proj-vision"
    )
    assert membership(None, "bo", "proj-vision", {"proj-vision-2", "Proj-Vision"}) is None
    assert membership(None, "bo", None, {"proj-vision"}) is None


# -- holds ----------------------------------------------------------------------------------


def test_a_group_member_without_a_row_starts_and_the_hold_says_how(ledger):
    vision(ledger)
    s = ledger.open_session("vision", "bo", "", ONE_G, H, T0, groups={"proj-vision", "other"})
    assert (s.username, s.via) == ("bo", "group:proj-vision")
    with ledger.session() as db:
        assert db.get(LedgerSession, s.id).username == "bo"  # who started what, as for anyone
    (entry,) = audit(ledger, "session.hold")
    assert (entry.actor, entry.subject) == ("bo", str(s.id))
    assert json.loads(entry.detail) == {
        "via": "group:proj-vision",
        "project": "vision",
        "slice_type": ONE_G,
    }


def test_without_the_group_it_is_todays_refusal_and_a_row_hold_is_not_audited(ledger):
    vision(ledger)
    for groups in ((), {"proj-other"}, {"PROJ-VISION"}):
        msg = refused(ledger.open_session, "vision", "bo", "", ONE_G, H, T0, groups, status=403)
        assert msg == "bo is not a member of project vision."
    project(ledger, "plain")  # no member group: a group of the same name makes nobody a member
    msg = refused(ledger.open_session, "plain", "bo", "", ONE_G, H, T0, {"plain"}, status=403)
    assert msg == "bo is not a member of project plain."
    ledger.open_session("vision", "pi", "", ONE_G, H, T0)  # a row: no group needed
    assert audit(ledger, "session.hold") == []
    with ledger.session() as db:
        assert db.scalars(select(LedgerSession.username)).all() == ["pi"]


def test_a_group_member_has_the_projects_member_cap_and_a_row_keeps_its_own(ledger):
    vision(
        ledger, member_cap_cents=10_00, max_concurrent_sessions=20
    )  # HK$10 of subsidy each: one hour, not two
    groups = {"proj-vision"}
    ledger.open_session("vision", "bo", "a", ONE_G, H, T0, groups)
    msg = refused(ledger.open_session, "vision", "bo", "b", ONE_G, H, T0, groups, status=402)
    assert msg.startswith("bo has HK$3.00 left of a HK$10.00 cap in vision")
    # pi is in the group too, but their row (cap HK$50, role pi) is what applies
    for server in "abcdefg":
        ledger.open_session("vision", "pi", server, ONE_G, H, T0, groups)
    msg = refused(ledger.open_session, "vision", "pi", "h", ONE_G, H, T0, groups, status=402)
    assert msg.startswith("pi has HK$1.00 left of a HK$50.00 cap in vision")
    assert [json.loads(e.detail)["via"] for e in audit(ledger, "session.hold")] == [
        "group:proj-vision"
    ]


def test_a_batch_counts_a_group_members_holds_against_their_cap_in_order(ledger):
    vision(ledger, member_cap_cents=15_00)
    g = frozenset({"proj-vision"})
    outcomes = ledger.open_sessions(
        [
            HoldRequest("vision", "bo", "a", ONE_G, H, T0, groups=g),
            HoldRequest("vision", "bo", "b", ONE_G, H, T0, groups=g),
            HoldRequest("vision", "bo", "c", ONE_G, H, T0, groups=g),
            HoldRequest("vision", "cy", "a", ONE_G, H, T0),  # not in the group
        ]
    )
    assert [type(o).__name__ for o in outcomes] == [
        "HeldSession",
        "HeldSession",
        "LedgerError",
        "LedgerError",
    ]
    assert str(outcomes[2]).startswith("bo has HK$1.00 left of a HK$15.00 cap")
    assert str(outcomes[3]) == "cy is not a member of project vision."
    # what bo drew in that batch is read back for the next one
    msg = refused(ledger.open_session, "vision", "bo", "d", ONE_G, H / 6, T0, g, status=402)
    assert "bo has HK$1.00 left" in msg
    assert len(audit(ledger, "session.hold")) == 2


def statements(lg, fn) -> int:
    seen = []

    def count(*_):
        seen.append(1)

    event.listen(lg.engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(lg.engine, "before_cursor_execute", count)
    return len(seen)


def test_a_batch_of_group_members_costs_one_statement_more_than_one_of_row_members(ledger):
    """The same reads and writes (a fixed number: SQLite writes the sessions row by row, PostgreSQL
    by one COPY, tests/integration/test_ledger_postgres.py), plus one insert of the audit entries
    of the group members' holds, however many."""
    spec = dict(grant=10_000_00, member_cap_cents=50_00, max_concurrent_sessions=500)
    project(ledger, "rows", **spec)
    project(ledger, "vision", member_group="proj-vision", **spec)
    users = [f"u{i:02d}" for i in range(40)]
    for u in users:
        ledger.add_member("staff", "rows", u, T0)
    g = frozenset({"proj-vision"})
    by_row = [HoldRequest("rows", u, "r", ONE_G, H, T0, groups=g) for u in users]
    by_group = [HoldRequest("vision", u, "g", ONE_G, H, T0, groups=g) for u in users]
    ledger.open_session("rows", "u00", "warm-up", ONE_G, H, T0)  # the price list, read once
    rows_cost = statements(ledger, lambda: ledger.open_sessions(by_row))
    group_cost = statements(ledger, lambda: ledger.open_sessions(by_group))
    assert group_cost == rows_cost + 1
    assert len(audit(ledger, "session.hold")) == 40


# -- extend ---------------------------------------------------------------------------------


def test_a_group_member_extends_while_in_the_group_and_the_audit_says_how(ledger):
    vision(ledger)
    g = {"proj-vision"}
    sid = ledger.open_session("vision", "bo", "", ONE_G, H, T0, g).id
    s, _ = ledger.extend(sid, "bo", H, T0 + H / 2, g)
    assert s.end_at == T0 + 2 * H
    (entry,) = audit(ledger, "session.extend")
    assert json.loads(entry.detail)["via"] == "group:proj-vision"
    msg = refused(ledger.extend, sid, "bo", H, T0 + H, (), status=403)
    assert msg == "bo is no longer a member of project vision."
    # a row member's extension is audited as before, without a via
    pid = ledger.open_session("vision", "pi", "", ONE_G, H, T0).id
    ledger.extend(pid, "pi", H, T0 + H / 2)
    assert "via" not in json.loads(audit(ledger, "session.extend")[-1].detail)


# -- staff ----------------------------------------------------------------------------------


def test_staff_name_change_and_clear_a_projects_group_each_audited(ledger):
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ann", T0)
    assert ledger.set_member_group("ops", "lab", "proj-lab", T0 + H) is None
    assert ledger.set_member_group("ops", "lab", "proj-lab.2026_a", T0 + H) == "proj-lab"
    ledger.open_session("lab", "bo", "", ONE_G, H, T0 + H, {"proj-lab.2026_a"})
    assert ledger.set_member_group("ops", "lab", None, T0 + 2 * H) == "proj-lab.2026_a"
    msg = refused(ledger.open_session, "lab", "bo", "b", ONE_G, H, T0 + 2 * H, {"proj-lab"})
    assert msg == "bo is not a member of project lab."
    ledger.open_session("lab", "ann", "", ONE_G, H, T0 + 2 * H)  # rows stay
    entries = audit(ledger, "project.member_group")
    assert [(e.actor, e.subject, json.loads(e.detail)) for e in entries] == [
        ("ops", "lab", {"member_group": "proj-lab", "before": None}),
        ("ops", "lab", {"member_group": "proj-lab.2026_a", "before": "proj-lab"}),
        ("ops", "lab", {"member_group": None, "before": "proj-lab.2026_a"}),
    ]


def test_a_project_added_with_a_group_records_it(ledger):
    project(ledger, "vision", member_group="proj-vision")
    (entry,) = audit(ledger, "project.add")[-1:]
    assert json.loads(entry.detail)["member_group"] == "proj-vision"
    project(ledger, "plain")
    assert "member_group" not in json.loads(audit(ledger, "project.add")[-1].detail)


BAD_GROUPS = ["", "proj vision", "proj/vision", "proj@vision", "x" * 101, "é-group", 7, ["a"]]


@pytest.mark.parametrize("name", BAD_GROUPS, ids=repr)
def test_a_bad_group_name_is_refused_with_a_sentence_and_changes_nothing(ledger, name):
    project(ledger, "lab")
    msg = refused(ledger.set_member_group, "ops", "lab", name, T0, status=400)
    assert "is not a group name" in msg and msg.endswith(".")
    msg = refused(project, ledger, "lab2", member_group=name, status=400)
    assert "is not a group name" in msg
    with ledger.session() as db:
        assert db.scalars(select(Project.slug)).all() == ["lab"]
        assert db.scalar(select(Project.member_group)) is None
    assert audit(ledger, "project.member_group") == []


def test_a_course_takes_no_members_from_a_group(ledger):
    project(ledger, "ml101", is_course=True)
    msg = refused(ledger.set_member_group, "ops", "ml101", "cs-class", T0, status=400)
    assert msg == (
        "ml101 is a course: its students come from its roster, so it takes no members from a group."
    )
    refused(project, ledger, "ml102", is_course=True, member_group="cs-class", status=400)
    assert ledger.set_member_group("ops", "ml101", None, T0) is None  # clearing is harmless
    assert "no project 'nope'" in refused(
        ledger.set_member_group, "ops", "nope", "g", T0, status=404
    )


# -- what the API and pages read ------------------------------------------------------------


def test_the_form_lists_a_group_members_projects_with_how_and_their_cap(ledger):
    vision(ledger, member_cap_cents=20_00)
    project(ledger, "plain")
    ledger.add_member("staff", "plain", "bo", T0, cap_cents=5_00)
    ledger.open_session("vision", "bo", "", ONE_G, H, T0, {"proj-vision"})  # HK$7.00 drawn
    reader = LedgerReader(ledger)
    views = reader.projects("bo", T0 + H, None, {"proj-vision"})
    assert [(v["project"], v["member_group"]) for v in views] == [
        ("plain", None),
        ("vision", "proj-vision"),
    ]
    assert views[1]["member"] == {
        "role": "member",
        "via": "group:proj-vision",
        "cap_cents": 20_00,
        "cap_left_cents": 13_00,
        "class_windows": [],
    }
    assert views[0]["member"]["via"] == "row" and views[0]["member"]["cap_cents"] == 5_00
    assert [v["project"] for v in reader.projects("bo", T0 + H)] == ["plain"]
    assert reader.is_member("bo", "vision", {"proj-vision"})
    assert not reader.is_member("bo", "vision", {"other"})
    assert reader.is_member("pi", "vision")  # a row, whatever the groups
    assert reader.member_groups() == {"proj-vision"}
    assert reader.session_owner(1) == "bo" and reader.session_owner(99) is None


def test_without_member_groups_nobodys_groups_are_needed(ledger):
    project(ledger, "lab")
    assert LedgerReader(ledger).member_groups() == frozenset()


def test_group_holds_are_decided_at_each_hold_from_the_groups_given_then(ledger):
    vision(ledger)
    ledger.open_session("vision", "bo", "a", ONE_G, H, T0, {"proj-vision"})
    # bo left the group: the next start is refused, the running session is left alone
    refused(ledger.open_session, "vision", "bo", "b", ONE_G, H, T0 + H / 4, (), status=403)
    ledger.meter(T0 + H / 2)
    with ledger.session() as db:
        (s,) = db.scalars(select(LedgerSession)).all()
    assert (s.status, s.charged_list_cents) == ("active", 5_00)
    assert timedelta(0) < s.end_at - (T0 + H / 2)
