"""Idle time and parking on statements and the scheme report, to the cent: a ledger with a
parked session, one stopped while idle, one stopped while working, and one parked just after
the month's end; the numbers in the statement, its CSV and HTML, and the scheme report."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pagehtml import Page, check_accessible

from slicehub.quota.parking import PARK, WARN, Reading
from slicehub.quota.site_parking import SiteParking
from slicehub.quota.statement import IdleTime, monthly_statement, scheme_report
from slicehub.quota.statement_render import (
    scheme_report_csv,
    scheme_report_html,
    statement_csv,
    statement_html,
)
from tests.unit.rules_ledger import T0, H, project

MIN = timedelta(minutes=1)
SITE = SiteParking(idle=30 * MIN, warning=5 * MIN, check=MIN)
NOW = T0 + 40 * 24 * H
# 23:30 on 30 November in Hong Kong: parked at 00:05 on 1 December, in December's statement
LATE = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)


@pytest.fixture
def ids(ledger):
    """lab: ann's session parked after 30 idle minutes (4 h held); bo's stopped 16 minutes
    into an idle stretch; cy's stopped while working (reason '=1+1', a formula a spreadsheet
    must not run); dee's parked across the month's end. other: nothing."""
    project(ledger, "lab")
    project(ledger, "other")
    for user in ("ann", "bo", "cy", "dee"):
        ledger.add_member("staff", "lab", user, T0)
    out = {}

    s = ledger.open_session("lab", "ann", "", "h100.1g.10gb", 4 * H, T0)
    for idle, action in ((25 * MIN, WARN), (30 * MIN, PARK)):
        o = ledger.observe(s.id, "ann", "", Reading(idle), SITE, T0 + idle)
        assert o.decision.action == action
    out["parked"] = ledger.park(s.id, "ann", "", T0 + 30 * MIN).id

    s = ledger.open_session("lab", "bo", "", "h100.1g.10gb", 4 * H, T0)
    ledger.observe(s.id, "bo", "", Reading(10 * MIN), SITE, T0 + H)  # idle since 0:50
    out["idle"] = ledger.close_session(s.id, T0 + H + 6 * MIN).id

    s = ledger.open_session("lab", "cy", "", "h100.1g.10gb", 4 * H, T0)
    busy = Reading(2 * H, ("kernel train.ipynb (python3) is busy",))
    ledger.observe(s.id, "cy", "", busy, SITE, T0 + 2 * H)
    out["busy"] = ledger.close_session(s.id, T0 + 2 * H, "=1+1").id

    s = ledger.open_session("lab", "dee", "", "h100.1g.10gb", H, LATE)
    ledger.observe(s.id, "dee", "", Reading(25 * MIN), SITE, LATE + 25 * MIN)
    ledger.observe(s.id, "dee", "", Reading(35 * MIN), SITE, LATE + 35 * MIN)
    out["december"] = ledger.park(s.id, "dee", "", LATE + 35 * MIN).id
    return out


PARKED = IdleTime(1800, 500, 350, 1, 2800 - 350)  # 30 min at HK$10.00, 70%; 4 h held
IDLE = IdleTime(960, 1100 - 833, 770 - 583, 0, 0)  # 16 of 66 min; 50 min cost HK$8.33
DECEMBER = IdleTime(2100, 583, 408, 1, 700 - 408)  # 35 min of a 1 h hold


def test_the_months_idle_time_and_parking_to_the_cent(ledger, ids):
    st = monthly_statement(ledger, "lab", "2026-11", NOW)
    rows = {r.session_id: r for r in st.rows}
    assert set(rows) == {ids["parked"], ids["idle"], ids["busy"]}
    assert rows[ids["parked"]].idle == PARKED and rows[ids["parked"]].stop_reason == "parked"
    assert rows[ids["idle"]].idle == IDLE and rows[ids["idle"]].stop_reason == "stopped"
    assert rows[ids["busy"]].idle == IdleTime() and not rows[ids["busy"]].idle
    assert st.idle == IdleTime(2760, 767, 537, 1, 2450)
    assert st.idle.slice_hours == Decimal("0.7667")
    # the idle amounts are part of the charges: the parked session was charged only them
    assert rows[ids["parked"]].amounts.list_cents == PARKED.list_cents
    assert st.total.subsidy_cents == 350 + 770 + 1400

    dec = monthly_statement(ledger, "lab", "2026-12", NOW)
    assert [r.session_id for r in dec.rows] == [ids["december"]]
    assert dec.idle == DECEMBER and dec.rows[0].idle == DECEMBER
    assert monthly_statement(ledger, "other", "2026-11", NOW).idle == IdleTime()


def test_the_statement_csv_has_the_idle_columns_and_totals(ledger, ids):
    text = statement_csv(monthly_statement(ledger, "lab", "2026-11", NOW))
    rows = {r["session"]: r for r in csv.DictReader(io.StringIO(text))}
    parked, idle, busy, total = (
        rows[k] for k in (str(ids["parked"]), str(ids["idle"]), str(ids["busy"]), "total")
    )
    assert [parked[k] for k in ("stop_reason", "parked", "idle_slice_hours")] == [
        "parked",
        "1",
        "0.5000",
    ]
    assert [parked[k] for k in ("idle_list_cost_hkd", "idle_subsidy_hkd")] == ["5.00", "3.50"]
    assert parked["parking_returned_subsidy_hkd"] == "24.50"
    assert [idle[k] for k in ("parked", "idle_slice_hours", "idle_list_cost_hkd")] == [
        "0",
        "0.2667",
        "2.67",
    ]
    assert (idle["idle_subsidy_hkd"], idle["parking_returned_subsidy_hkd"]) == ("1.87", "0.00")
    assert busy["stop_reason"] == "'=1+1"  # a spreadsheet shows it, never runs it
    assert busy["idle_slice_hours"] == "0.0000"
    assert [total[k] for k in ("parked", "idle_slice_hours", "idle_list_cost_hkd")] == [
        "1",
        "0.7667",
        "7.67",
    ]
    assert (total["idle_subsidy_hkd"], total["parking_returned_subsidy_hkd"]) == ("5.37", "24.50")


def summary(page: str) -> dict[str, str]:
    """The summary's terms and figures (<dt>…</dt><dd>…</dd>)."""
    return {html.unescape(t): d for t, d in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page)}


def test_the_statement_page_shows_idle_time_and_parking(ledger, ids):
    text = statement_html(monthly_statement(ledger, "lab", "2026-11", NOW))
    page = Page(text)
    check_accessible(page)
    figures = summary(text)
    assert figures["Slice-hours charged while idle"] == "0.77"
    assert (figures["… their list cost"], figures["… their subsidy"]) == ("HK$7.67", "HK$5.37")
    assert figures["Sessions parked"] == "1"
    assert figures["Subsidy returned by parking"] == "HK$24.50"
    t = page.table("Sessions that stopped in November 2026 after idle time")
    header, *body, foot = t.rows
    assert header[3:] == [
        "Why",
        "Idle slice-hours",
        "Idle list cost",
        "Idle subsidy",
        "Subsidy returned",
    ]
    assert [r[0] for r in body] == [str(ids["parked"]), str(ids["idle"])]  # not the busy one
    assert body[0][3:] == ["parked", "0.50", "HK$5.00", "HK$3.50", "HK$24.50"]
    assert body[1][3:] == ["stopped", "0.27", "HK$2.67", "HK$1.87", "HK$0.00"]
    assert foot == ["Total (1 parked)", "0.77", "HK$7.67", "HK$5.37", "HK$24.50"]

    empty = Page(statement_html(monthly_statement(ledger, "other", "2026-11", NOW)))
    assert "No session that stopped this month was charged for idle time or parked." in empty.text


def test_the_scheme_report_per_project_and_in_total(ledger, ids):
    rep = scheme_report(ledger, "s", NOW)
    lines = {x.slug: x for x in rep.lines}
    assert lines["lab"].idle == PARKED + IDLE + DECEMBER == IdleTime(4860, 1350, 945, 2, 2742)
    assert lines["other"].idle == IdleTime()
    assert rep.idle == lines["lab"].idle
    assert (rep.totals["idle_subsidy"], rep.totals["parking_returned"]) == (945, 2742)

    rows = {r["project"]: r for r in csv.DictReader(io.StringIO(scheme_report_csv([rep])))}
    for key in ("lab", "total"):
        assert rows[key]["parked_sessions"] == "2"
        assert rows[key]["idle_slice_hours"] == "1.3500"
        assert (rows[key]["idle_list_cost_hkd"], rows[key]["idle_subsidy_hkd"]) == ("13.50", "9.45")
        assert rows[key]["parking_returned_subsidy_hkd"] == "27.42"
    assert rows["other"]["parked_sessions"] == "0" and rows["other"]["idle_subsidy_hkd"] == "0.00"

    text = scheme_report_html([rep], NOW)
    page = Page(text)
    check_accessible(page)
    figures = summary(text)
    assert figures["… of which for idle time"] == "HK$9.45"
    assert figures["Subsidy returned by parking"] == "HK$27.42"
    t = page.table("Idle time and parking in the projects of scheme s")
    assert t.rows[1] == ["lab", "1.35", "HK$13.50", "HK$9.45", "2", "HK$27.42"]
    assert t.rows[2] == ["other", "0.00", "HK$0.00", "HK$0.00", "0", "HK$0.00"]
    assert t.rows[3] == ["Total", "1.35", "HK$13.50", "HK$9.45", "2", "HK$27.42"]
