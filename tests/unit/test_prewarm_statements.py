"""Pre-warmed servers on monthly statements, to the cent (slicehub.quota.statement_prewarm): a
course that pays for its own pre-warming, and one whose pre-warming a centre project pays for,
built through the ledger's own calls (holds with `prewarm_window`, `claim`, `stop_unclaimed`,
`close_session`, metering); the lines of each statement (claimed, wasted, waiting; who paid),
its CSV (formula cells neutralised) and HTML, and `slicehub statement`.

At HK$10.00 an hour and a 70% subsidy (tests/unit/rules_ledger.py), on 2 November 2026:
ml101 pays for its own pre-warming: stu1's server claimed after 12 min (HK$2.00); stu2's
released unclaimed after 25 min (HK$4.16); @A1's stopped before a claim after 15 min (HK$2.50);
stu3's still waiting after 30 min (HK$5.00); and stu1's own hour after the claim (HK$10.00).
On 3 November, centre-classes pays for ml102's: stu7's claimed after 14 min (HK$2.33), stu8's
unclaimed after 20 min (HK$3.33); stu7's own 30 min after the claim (HK$5.00) is ml102's."""

import csv
import io
from datetime import timedelta

import pytest
from pagehtml import Page, check_accessible

from slicehub.cli import main
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.statement import Amounts, monthly_statement
from slicehub.quota.statement_prewarm import PrewarmLine, prewarm_outcome
from slicehub.quota.statement_render import statement_csv, statement_html
from tests.unit.rules_ledger import T0, H, project

M = timedelta(minutes=1)
DAY = 24 * H
START, END = T0 + 2 * H, T0 + 4 * H  # ml101's class window
START2, END2 = START + DAY, END + DAY  # ml102's
NOW = T0 + 40 * DAY


def warm(ledger, course, window, who, at):
    request = HoldRequest(course, who, "", "h100.1g.10gb", H, at, prewarm_window=window)
    (out,) = ledger.open_sessions([request])
    if isinstance(out, LedgerError):
        raise out
    return out.id


def course(ledger, slug, students, start, end, **prewarm):
    project(ledger, slug, grant=500_00, is_course=True, allowed_slice_types=["h100.1g.10gb"])
    for who in students:
        ledger.add_member("staff", slug, who, T0, role="student")
    window = ledger.add_class_window("staff", slug, start, end, T0).id
    ledger.set_prewarm("staff", slug, T0, 10, 15, **prewarm)
    return window


@pytest.fixture
def ids(ledger) -> dict[str, int]:
    """The two courses of the module docstring; session ids by name."""
    project(ledger, "centre-classes", grant=500_00)
    project(ledger, "plain")
    ledger.add_member("staff", "plain", "pat", T0)
    w1 = course(ledger, "ml101", ("stu1", "stu2", "stu3", "@A1"), START, END)
    w2 = course(ledger, "ml102", ("stu7", "stu8"), START2, END2, paid_by="centre-classes")
    out = {who: warm(ledger, "ml101", w1, who, START - 10 * M) for who in ("stu1", "stu2")}
    out["@A1"] = warm(ledger, "ml101", w1, "@A1", START - 10 * M)
    out["stu3"] = warm(ledger, "ml101", w1, "stu3", START - 10 * M)
    out["own-stu1"] = ledger.claim(out["stu1"], "stu1", START + 2 * M).id
    ledger.close_session(out["own-stu1"], START + 62 * M)
    ledger.stop_unclaimed(out["stu2"], START + 15 * M)
    ledger.close_session(out["@A1"], START + 5 * M)
    ledger.meter(START + 20 * M)  # stu3's server waits on
    out["stu7"] = warm(ledger, "ml102", w2, "stu7", START2 - 10 * M)
    out["stu8"] = warm(ledger, "ml102", w2, "stu8", START2 - 5 * M)
    out["own-stu7"] = ledger.claim(out["stu7"], "stu7", START2 + 4 * M).id
    ledger.close_session(out["stu7"], START2 + 34 * M)  # the server's id stands for stu7's own
    ledger.stop_unclaimed(out["stu8"], START2 + 15 * M)
    s = ledger.open_session("plain", "pat", "", "h100.1g.10gb", H, START)
    ledger.close_session(s.id, START + 30 * M)
    return out


def line(course, paid_by, outcome, servers, minutes, lst, sub, cop) -> PrewarmLine:
    return PrewarmLine(
        course, paid_by, outcome, servers, minutes * 60_000_000, Amounts(lst, sub, cop)
    )


ML101 = (
    line("ml101", "ml101", "claimed", 1, 12, 200, 140, 60),
    line("ml101", "ml101", "wasted", 2, 40, 416 + 250, 291 + 175, 125 + 75),
    line("ml101", "ml101", "waiting", 1, 30, 500, 350, 150),
)
ML102 = (
    line("ml102", "centre-classes", "claimed", 1, 14, 233, 163, 70),
    line("ml102", "centre-classes", "wasted", 1, 20, 333, 233, 100),
)


def test_the_outcome_of_a_pre_warmed_server():
    assert prewarm_outcome("stopped", "claimed", 7) == "claimed"
    assert prewarm_outcome("stopped", "claimed", None) == "claimed"
    assert prewarm_outcome("active", "", None) == "waiting"
    for reason in ("unclaimed", "claim-refused", "stopped", "crashed", "orphaned", "ended"):
        assert prewarm_outcome("stopped", reason, None) == "wasted"


def test_a_course_that_pays_for_its_own_pre_warming(ledger, ids):
    st = monthly_statement(ledger, "ml101", "2026-11", NOW)
    assert st.prewarm == ML101
    assert st.prewarm_total("wasted", paid_here=True) == line(
        "", "", "wasted", 2, 40, 666, 466, 200
    )
    assert st.prewarm_total("claimed", paid_here=False).servers == 0
    # the pre-warmed servers are the course's own sessions, in its totals
    assert st.total == Amounts(200 + 1000 + 416 + 250 + 500, 140 + 700 + 291 + 175 + 350, 710)
    rows = {r.session_id: r for r in st.rows}
    mine = ("stu1", "stu2", "stu3", "@A1", "own-stu1")  # ml102's are not on it
    assert {r.session_id for r in st.rows} == {ids[who] for who in mine}
    marks = {who: (rows[ids[who]].prewarm_course, rows[ids[who]].prewarm) for who in mine}
    assert marks["stu1"] == ("ml101", "claimed") and marks["stu2"] == ("ml101", "wasted")
    assert marks["@A1"] == ("ml101", "wasted") and marks["stu3"] == ("ml101", "waiting")
    assert marks["own-stu1"] == ("", "")  # the student's own hour is theirs
    assert rows[ids["own-stu1"]].amounts == Amounts(1000, 700, 300)
    assert monthly_statement(ledger, "ml101", "2026-12", NOW).prewarm == ()


def test_a_course_whose_pre_warming_a_centre_project_pays_for(ledger, ids):
    st = monthly_statement(ledger, "ml102", "2026-11", NOW)
    assert st.prewarm == ML102  # listed, paid elsewhere ...
    assert st.total == Amounts(500, 350, 150)  # ... and not in the course's totals
    assert [r.session_id for r in st.rows] == [ids["own-stu7"]]
    assert st.prewarm_total("claimed", paid_here=False) == line(
        "", "", "claimed", 1, 14, 233, 163, 70
    )
    assert st.prewarm_total("claimed", paid_here=True).amounts == Amounts()

    centre = monthly_statement(ledger, "centre-classes", "2026-11", NOW)
    assert centre.prewarm == ML102  # the payer lists them as its own, naming the course
    assert centre.total == Amounts(233 + 333, 163 + 233, 70 + 100)
    assert {(r.session_id, r.prewarm_course, r.prewarm) for r in centre.rows} == {
        (ids["stu7"], "ml102", "claimed"),
        (ids["stu8"], "ml102", "wasted"),
    }


def test_a_project_without_pre_warming_is_unchanged(ledger, ids):
    st = monthly_statement(ledger, "plain", "2026-11", NOW)
    assert st.prewarm == () and st.total == Amounts(500, 350, 150)
    assert all(r.prewarm == r.prewarm_course == "" for r in st.rows)
    rows = list(csv.DictReader(io.StringIO(statement_csv(st))))
    assert [r["session"] for r in rows][-1] == "total"
    assert all(r[k] == "" for r in rows for k in ("prewarm_course", "prewarm", "prewarm_minutes"))
    assert "Pre-warmed servers" not in statement_html(st)


def csv_rows(st) -> list[dict]:
    return list(csv.DictReader(io.StringIO(statement_csv(st))))


def test_the_csv_has_the_pre_warm_columns_and_lines_to_the_cent(ledger, ids):
    rows = csv_rows(monthly_statement(ledger, "ml101", "2026-11", NOW))
    by = {r["session"]: r for r in rows if r["session"] not in ("total", "prewarm")}
    cols = ("prewarm_course", "prewarm_paid_by", "prewarm", "prewarm_servers", "prewarm_minutes")
    assert [by[str(ids["stu1"])][k] for k in cols] == ["ml101", "ml101", "claimed", "", "12.00"]
    assert [by[str(ids["stu2"])][k] for k in cols] == ["ml101", "ml101", "wasted", "", "25.00"]
    assert [by[str(ids["own-stu1"])][k] for k in cols] == ["", "", "", "", ""]
    assert by[str(ids["@A1"])]["user"] == "'@A1"  # a spreadsheet shows it, never runs it
    assert by[str(ids["@A1"])]["list_cost_hkd"] == "2.50"
    total = next(r for r in rows if r["session"] == "total")
    assert total["list_cost_hkd"] == "23.66" and [total[k] for k in cols] == [""] * 5
    assert [r["session"] for r in rows[-3:]] == ["prewarm"] * 3  # after the total
    lines = [
        [r[k] for k in (*cols, "list_cost_hkd", "subsidy_hkd", "copay_hkd")] for r in rows[-3:]
    ]
    assert lines == [
        ["ml101", "ml101", "claimed", "1", "12.00", "2.00", "1.40", "0.60"],
        ["ml101", "ml101", "wasted", "2", "40.00", "6.66", "4.66", "2.00"],
        ["ml101", "ml101", "waiting", "1", "30.00", "5.00", "3.50", "1.50"],
    ]

    rows = csv_rows(monthly_statement(ledger, "ml102", "2026-11", NOW))
    assert [r["session"] for r in rows] == [str(ids["own-stu7"]), "total", "prewarm", "prewarm"]
    assert rows[1]["list_cost_hkd"] == "5.00"
    assert [(r["prewarm_paid_by"], r["prewarm"], r["list_cost_hkd"]) for r in rows[2:]] == [
        ("centre-classes", "claimed", "2.33"),
        ("centre-classes", "wasted", "3.33"),
    ]
    rows = csv_rows(monthly_statement(ledger, "centre-classes", "2026-11", NOW))
    assert {r["prewarm_course"] for r in rows if r["session"] != "total"} == {"ml102"}


def test_the_statement_page_shows_claimed_and_wasted_and_who_paid(ledger, ids):
    text = statement_html(monthly_statement(ledger, "ml101", "2026-11", NOW))
    page = Page(text)
    check_accessible(page)
    t = page.table("Pre-warmed servers charged in November 2026")
    header, *body, claimed, wasted, waiting = t.rows
    assert header == [
        "Course",
        "Paid by",
        "Outcome",
        "Servers",
        "Server-minutes",
        "List cost",
        "Subsidy",
        "Co-pay",
    ]
    assert body == [
        ["ml101", "ml101 (this project)", "claimed", "1", "12.00", "HK$2.00", "HK$1.40", "HK$0.60"],
        ["ml101", "ml101 (this project)", "wasted", "2", "40.00", "HK$6.66", "HK$4.66", "HK$2.00"],
        ["ml101", "ml101 (this project)", "waiting", "1", "30.00", "HK$5.00", "HK$3.50", "HK$1.50"],
    ]
    assert claimed == ["Claimed, in total", "1", "12.00", "HK$2.00", "HK$1.40", "HK$0.60"]
    assert wasted == ["Wasted, in total", "2", "40.00", "HK$6.66", "HK$4.66", "HK$2.00"]
    assert waiting[0] == "Waiting, in total"
    assert "Pre-warmed server-minutes, wasted" in page.text
    sessions = page.table("Sessions charged in November 2026")
    user_cells = [r[1] for r in sessions.rows[1:-1]]
    assert "stu1pre-warmed for ml101: claimed" in user_cells and "stu1" in user_cells

    page = Page(statement_html(monthly_statement(ledger, "ml102", "2026-11", NOW)))
    check_accessible(page)
    t = page.table("Pre-warmed servers charged in November 2026")
    assert [r[1] for r in t.rows[1:3]] == ["centre-classes", "centre-classes"]
    assert t.rows[-1][0] == "Wasted, in total"  # no server waits: no waiting line
    assert "on that project's statement, not in these totals" in page.text

    ledger.add_class_window("staff", "ml101", START + 40 * DAY, END + 40 * DAY, T0)
    quiet = Page(statement_html(monthly_statement(ledger, "ml101", "2026-10", NOW)))
    assert "No pre-warmed server was charged this month." in quiet.text  # a course, still said


def test_slicehub_statement_writes_the_pre_warm_lines(ledger, ids, capsys):
    argv = ["statement", "--project", "ml102", "--month", "2026-11", "--db", ledger.url]
    assert main(argv) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["session"], r["prewarm_course"], r["prewarm"]) for r in rows[-2:]] == [
        ("prewarm", "ml102", "claimed"),
        ("prewarm", "ml102", "wasted"),
    ]
