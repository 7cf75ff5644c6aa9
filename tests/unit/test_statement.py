"""Monthly statements and the scheme report, on a real (SQLite) ledger with real metering.

The totals must equal the month's charges to the cent; charges belong to the month and day of
their period's end (a tick ending at midnight belongs to the day before); the HTML page is
well-formed, self-contained, escaped and has a chart with a text alternative.
"""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Charge, Project
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.statement import (
    CENTRE_TZ,
    Amounts,
    DaySpend,
    month_bounds,
    monthly_statement,
    scheme_report,
)
from slicehub.quota.statement_render import (
    daily_chart,
    scheme_report_csv,
    scheme_report_html,
    statement_csv,
    statement_html,
)

HKT = CENTRE_TZ
SETUP = datetime(2026, 10, 1, tzinfo=HKT)
NOW = datetime(2026, 12, 10, tzinfo=HKT)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=HKT)


def run_session(ledger, project, user, start, ticks, stop, hours=3, slice_type="h100.1g.10gb"):
    s = ledger.open_session(project, user, "", slice_type, timedelta(hours=hours), start)
    for t in ticks:
        ledger.meter(t, [s.id])
    ledger.close_session(s.id, stop)
    return s.id


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):  # the tests only read it
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('statement') / 'ledger.sqlite'}")
    ledger.upgrade()
    ledger.add_scheme("staff", "hk-ai", 7000, 10**9, SETUP)
    for slug, name in (("ai-lab", "AI <b>Lab</b> & Co"), ("other-lab", "=HYPERLINK(1)")):
        ledger.add_project(
            "staff",
            slug,
            scheme="hk-ai",
            name=name,
            organisation="HKU",
            pi="dr-chan",
            valid_from=SETUP,
            valid_until=SETUP + timedelta(days=180),
            allowed_slice_types=["*"],
            max_concurrent_sessions=10,
            policy="full_price",
            credit_limit_cents=100_00,
            now=SETUP,
        )
        for user in ("alice", "bob"):
            ledger.add_member("staff", slug, user, SETUP)
    ledger.add_grant("staff", "ai-lab", 500_00, SETUP, SETUP + timedelta(days=180), SETUP)
    ledger.add_grant("staff", "other-lab", 50_00, SETUP, SETUP + timedelta(days=180), SETUP)
    ledger.set_price("staff", "h100.1g.10gb", 1650, SETUP, SETUP)
    ledger.set_price("staff", "h100.1g.10gb", 1800, at(15, 12), SETUP)  # mid-session change
    ledger.set_price("staff", "h100.3g.40gb", 4333, SETUP, SETUP)
    ids = {}
    # 1. an ordinary session, ticked every 10 minutes
    ids["plain"] = run_session(
        ledger,
        "ai-lab",
        "alice",
        at(3, 10),
        [at(3, 10) + timedelta(minutes=10 * k) for k in range(1, 15)],
        at(3, 12, 30),
    )
    # 2. across a price change, with odd ticks and an odd price
    ids["price-change"] = run_session(
        ledger, "ai-lab", "bob", at(15, 11), [at(15, 11, 7), at(15, 12, 1)], at(15, 13)
    )
    ids["odd"] = run_session(
        ledger,
        "ai-lab",
        "bob",
        at(16, 9),
        [at(16, 9, 13), at(16, 9, 59)],
        at(16, 10, 17),
        slice_type="h100.3g.40gb",
    )
    # 3. across the month's end, one tick ending exactly at midnight
    ids["month-end"] = run_session(
        ledger,
        "ai-lab",
        "alice",
        at(30, 23),
        [at(30, 23, 30), at(1, 0, month=12), at(1, 0, 30, month=12)],
        at(1, 1, month=12),
    )
    # 4. found dead after a tick: a reversal gives back the time after the stop
    ids["reversed"] = run_session(ledger, "ai-lab", "bob", at(20, 10), [at(20, 11)], at(20, 10, 40))
    # 5. past the subsidy: the rest at full price (co-pay only)
    ids["full-price"] = run_session(
        ledger, "other-lab", "alice", at(21, 9), [at(21, 10), at(21, 12)], at(21, 14), hours=6
    )
    # 6. still running at the statement's time
    s = ledger.open_session("ai-lab", "alice", "lab", "h100.1g.10gb", timedelta(hours=2), at(25, 8))
    ledger.meter(at(25, 9), [s.id])
    ids["running"] = s.id
    yield ledger, ids
    ledger.dispose()


def charges_in(ledger, slug, month):
    starts, ends = month_bounds(month)
    with ledger.session() as db:
        pid = db.scalar(select(Project.id).where(Project.slug == slug))
        return db.scalars(
            select(Charge).where(
                Charge.project_id == pid, Charge.period_end > starts, Charge.period_end <= ends
            )
        ).all()


def test_totals_equal_the_months_charges_to_the_cent(ledger):
    ledger, _ = ledger
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    rows = charges_in(ledger, "ai-lab", "2026-11")
    assert st.charges == len(rows) > 20
    assert st.total == Amounts(
        sum(c.list_cents for c in rows),
        sum(c.subsidy_cents for c in rows),
        sum(c.copay_cents for c in rows),
    )
    assert st.total.list_cents > 0
    assert st.total.subsidy_cents + st.total.copay_cents == st.total.list_cents
    by_rows = Amounts()
    for r in st.rows:
        assert r.amounts.subsidy_cents + r.amounts.copay_cents == r.amounts.list_cents
        by_rows += r.amounts
    assert by_rows == st.total
    by_days = Amounts()
    for d in st.days:
        by_days += d.amounts
    assert by_days == st.total
    assert [d.day for d in st.days] == [date(2026, 11, n) for n in range(1, 31)]


def test_rows_per_session_with_slice_hours(ledger):
    ledger, ids = ledger
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    rows = {r.session_id: r for r in st.rows}
    assert set(rows) == {
        ids["plain"],
        ids["price-change"],
        ids["odd"],
        ids["month-end"],
        ids["reversed"],
        ids["running"],
    }
    assert [r.started_at for r in st.rows] == sorted(r.started_at for r in st.rows)
    plain = rows[ids["plain"]]
    assert (plain.username, plain.slice_type) == ("alice", "h100.1g.10gb")
    assert plain.slice_hours == Decimal("2.5000")
    assert plain.amounts.list_cents == 4125  # 2.5 h at HK$16.50
    assert plain.amounts.subsidy_cents == 2887  # 70%, rounded down
    assert rows[ids["reversed"]].slice_hours == Decimal("0.6667")  # 1 h charged, 20 min back
    assert rows[ids["reversed"]].amounts.list_cents == 1200  # 40 min at HK$18.00
    # 11:00-12:00 at 16.50, 12:00-13:00 at 18.00
    assert rows[ids["price-change"]].amounts.list_cents == 1650 + 1800
    assert rows[ids["running"]].stopped_at is None
    assert rows[ids["month-end"]].slice_hours == Decimal("1.0000")


def test_a_session_across_the_months_end_is_split_by_its_charges(ledger):
    ledger, ids = ledger
    nov = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    dec = monthly_statement(ledger, "ai-lab", "2026-12", NOW)
    n = next(r for r in nov.rows if r.session_id == ids["month-end"])
    d = next(r for r in dec.rows if r.session_id == ids["month-end"])
    with ledger.session() as db:
        s = db.get(LedgerSession, ids["month-end"])
    assert n.amounts.list_cents + d.amounts.list_cents == s.charged_list_cents
    assert n.micros + d.micros == 2 * 3_600_000_000
    # the tick that ended at exactly 00:00 on 1 December counts for 30 November
    assert nov.days[-1].amounts.list_cents == 1800  # 1 h at HK$18.00
    assert dec.days[0].amounts.list_cents == 1800
    assert [r.session_id for r in dec.rows] == [ids["month-end"]]


def test_other_projects_and_empty_months(ledger):
    ledger, ids = ledger
    other = monthly_statement(ledger, "other-lab", "2026-11", NOW)
    assert [r.session_id for r in other.rows] == [ids["full-price"]]
    row = other.rows[0]
    assert row.amounts.subsidy_cents == 50_00  # the whole grant, then full price
    assert row.amounts.copay_cents == row.amounts.list_cents - 50_00
    empty = monthly_statement(ledger, "ai-lab", "2026-10", NOW)
    assert empty.rows == [] and empty.total == Amounts() and len(empty.days) == 31


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "26-11", "November", "2026-00", ""])
def test_bad_months_and_unknown_projects_are_refused(ledger, month):
    ledger, _ = ledger
    with pytest.raises(LedgerError, match="is not a month"):
        monthly_statement(ledger, "ai-lab", month, NOW)
    with pytest.raises(LedgerError, match="There is no project 'nope'") as e:
        monthly_statement(ledger, "nope", "2026-11", NOW)
    assert e.value.status == 404


def test_month_bounds_are_hong_kong_months():
    starts, ends = month_bounds("2026-12")
    assert starts == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert ends == datetime(2026, 12, 31, 16, tzinfo=UTC)


def test_csv_has_a_row_per_session_and_a_total(ledger):
    ledger, _ = ledger
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    rows = list(csv.DictReader(io.StringIO(statement_csv(st))))
    sessions, total = rows[:-1], rows[-1]
    assert total["session"] == "total" and len(sessions) == len(st.rows)
    for col, cents in (
        ("list_cost_hkd", st.total.list_cents),
        ("subsidy_hkd", st.total.subsidy_cents),
        ("copay_hkd", st.total.copay_cents),
    ):
        assert Decimal(total[col]) == Decimal(cents) / 100
        assert sum(Decimal(r[col]) for r in sessions) == Decimal(total[col])
    assert sessions[0]["start"].endswith("+08:00")
    assert any(r["stop"] == "" for r in sessions)  # the running session


class WellFormed(HTMLParser):
    """Fails on an end tag that does not close the open element; collects what tests look at."""

    VOID = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self):
        super().__init__()
        self.stack, self.tags, self.attrs, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(page: str) -> WellFormed:
    p = WellFormed()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed: {p.stack}"
    return p


def test_html_statement_is_well_formed_self_contained_and_accessible(ledger):
    ledger, _ = ledger
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    page = statement_html(st)
    p = parse_html(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "title" in p.tags and "svg" in p.tags and "table" in p.tags
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags
    for tag, attrs in p.attrs:
        assert not any(k.startswith("on") for k in attrs), tag
        assert "src" not in attrs and "href" not in attrs, tag
    svg = next(a for t, a in p.attrs if t == "svg")
    assert svg["role"] == "img"
    ids = {a.get("id") for _, a in p.attrs}
    assert set(svg["aria-labelledby"].split()) <= ids  # the chart's title and description
    assert p.tags.count("rect") >= 5  # bars for the days with spend
    assert all("scope" in a for t, a in p.attrs if t == "th")
    text = "".join(p.text)
    total = f"HK${st.total.list_cents // 100:,}.{st.total.list_cents % 100:02d}"
    assert total in text
    assert "HK$28.87" in text  # a session's subsidy, two decimals
    # names typed by people are escaped, never markup
    assert "AI <b>Lab</b> & Co" in text and "b" not in p.tags
    assert "&lt;b&gt;" in page


def test_html_statement_for_an_empty_month(ledger):
    ledger, _ = ledger
    page = statement_html(monthly_statement(ledger, "ai-lab", "2026-10", NOW))
    p = parse_html(page)
    assert "No session was charged this month." in "".join(p.text)
    assert p.tags.count("rect") == 0 and "svg" in p.tags


def test_scheme_report_per_project(ledger):
    ledger, _ = ledger
    rep = scheme_report(ledger, "hk-ai", NOW)
    assert [x.slug for x in rep.lines] == ["ai-lab", "other-lab"]
    for x in rep.lines:
        with ledger.session() as db:
            pid = db.scalar(select(Project.id).where(Project.slug == x.slug))
            subsidy, copay = db.execute(
                select(func.sum(Charge.subsidy_cents), func.sum(Charge.copay_cents)).where(
                    Charge.project_id == pid
                )
            ).one()
        assert x.subsidy_disbursed_cents == subsidy and x.charged.copay_cents == copay
        assert x.balance == ledger.balance(x.slug, NOW)
    assert rep.grants_awarded_cents == 550_00
    assert rep.fund_unawarded_cents == 10**9 - 550_00
    assert rep.totals["subsidy_disbursed"] == sum(x.subsidy_disbursed_cents for x in rep.lines)
    other = rep.lines[1]
    assert other.balance.subsidy_left_cents == 0 and other.subsidy_disbursed_cents == 50_00
    with pytest.raises(LedgerError, match="There is no scheme 'nope'"):
        scheme_report(ledger, "nope", NOW)


def test_scheme_report_csv_and_html(ledger):
    ledger, _ = ledger
    rep = scheme_report(ledger, "hk-ai", NOW)
    rows = list(csv.DictReader(io.StringIO(scheme_report_csv([rep]))))
    assert [r["project"] for r in rows] == ["ai-lab", "other-lab", "total"]
    assert rows[1]["name"] == "'=HYPERLINK(1)"  # a spreadsheet shows it, never runs it
    assert Decimal(rows[2]["subsidy_disbursed_hkd"]) == sum(
        Decimal(r["subsidy_disbursed_hkd"]) for r in rows[:2]
    )
    p = parse_html(scheme_report_html([rep], NOW))
    text = "".join(p.text)
    assert "Scheme hk-ai" in text and "HK$550.00" in text and "script" not in p.tags


def test_daily_chart_stacks_subsidy_and_copay_to_scale():
    days = [
        DaySpend(date(2026, 11, 1), Amounts(1000, 700, 300)),
        DaySpend(date(2026, 11, 2), Amounts(0, 0, 0)),
        DaySpend(date(2026, 11, 3), Amounts(-50, -35, -15)),  # only a reversal that day
        DaySpend(date(2026, 11, 4), Amounts(400, 0, 400)),
    ]
    chart = daily_chart(days)
    a, b, c, d = chart["bars"]
    assert a["sub_h"] / a["cop_h"] == pytest.approx(700 / 300)
    assert a["cop_y"] + a["cop_h"] == pytest.approx(a["sub_y"])  # co-pay sits on subsidy
    assert (b["sub_h"], b["cop_h"], c["sub_h"], c["cop_h"]) == (0, 0, 0, 0)
    assert (a["sub_h"] + a["cop_h"]) / d["cop_h"] == pytest.approx(1000 / 400)
    assert chart["ticks"][-1]["label"] == "HK$10.00" and chart["max_label"] == "HK$10.00"
