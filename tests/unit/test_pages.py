"""The quota service's hub pages without a hub: the pure parts (burn rate, the days charted,
times, states), the queries on a real (SQLite) ledger with real metering, and the rendered
pages (well-formed, accessible, money in HK$ with two decimals, names escaped)."""

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from markupsafe import Markup
from pagehtml import Page, check_accessible

from slicehub.quota import pages
from slicehub.quota.hold import HoldRequest
from slicehub.quota.ledger import Ledger
from slicehub.quota.reader import LedgerReader
from slicehub.quota.statement import CENTRE_TZ, Amounts, monthly_statement

HKT = CENTRE_TZ
SETUP = datetime(2026, 10, 1, tzinfo=HKT)
NOW = datetime(2026, 11, 25, 12, tzinfo=HKT)


# -- pure helpers -------------------------------------------------------------------------


def test_burn_rate_splits_the_list_price_at_the_scheme_rate():
    assert pages.burn_rate(550, 7000, 100) == Amounts(550, 385, 165)  # HK$5.50 = 3.85 + 1.65
    odd = pages.burn_rate(555, 7000, 100)  # 388.5 cents of subsidy: the scheme rounds down
    assert odd == Amounts(555, 388, 167) and odd.subsidy_cents + odd.copay_cents == 555


def test_burn_rate_past_the_subsidy_is_all_copay_and_a_queued_session_burns_nothing():
    assert pages.burn_rate(3850, 7000, 0) == Amounts(3850, 0, 3850)
    assert pages.burn_rate(3850, 7000, -5) == Amounts(3850, 0, 3850)
    assert pages.burn_rate(3850, 7000, 100, running=False) == Amounts()
    assert pages.burn_rate(None, 7000, 100) == Amounts()  # no price in force: nothing charged
    assert pages.burn_rate(80, 0, 100) == Amounts(80, 0, 80)  # a 0% scheme
    assert pages.burn_rate(80, 10000, 100) == Amounts(80, 80, 0)


def test_chart_days_are_the_centres_last_thirty_days_today_last():
    # 17:30 UTC on 30 November is 01:30 on 1 December in Hong Kong
    days = pages.chart_days(datetime(2026, 11, 30, 17, 30, tzinfo=UTC))
    assert len(days) == 30 and days[-1] == date(2026, 12, 1) and days[0] == date(2026, 11, 2)
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))
    assert pages.chart_days(NOW, 3) == [date(2026, 11, 23), date(2026, 11, 24), NOW.date()]


def test_day_end_is_the_centres_next_midnight():
    end = pages.day_end(date(2026, 11, 30))
    assert end == datetime(2026, 12, 1, tzinfo=HKT)
    assert end.astimezone(UTC) == datetime(2026, 11, 30, 16, tzinfo=UTC)


def test_time_tag_is_utc_text_with_a_machine_readable_datetime():
    tag = pages.time_tag(datetime(2026, 11, 22, 10, 5, 30, 123, tzinfo=HKT))
    assert isinstance(tag, Markup)
    assert tag == '<time datetime="2026-11-22T02:05:30Z">2026-11-22 02:05 UTC</time>'
    assert pages.time_tag("2026-11-22T02:05:30.000123+00:00") == tag  # an API view's
    assert pages.time_tag(None) == ""


def test_session_state_in_words():
    assert pages.session_state("active", True) == "running"
    assert pages.session_state("active", False) == "queued"
    assert pages.session_state("stopped", True) == "stopped"


def test_per_hour_is_money_with_two_decimals():
    assert pages.per_hour(550) == "HK$5.50/h" and pages.per_hour(123456) == "HK$1,234.56/h"


# -- on a real ledger ---------------------------------------------------------------------


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=HKT)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):  # the tests only read it
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('pages') / 'ledger.sqlite'}")
    ledger.upgrade()
    ledger.add_scheme("staff", "hk-ai", 7000, 10**9, SETUP)
    for slug, name, policy in (
        ("ai-lab", "AI <b>Lab</b> & Co", "stop"),
        ("tight-lab", "Tight lab", "full_price"),
    ):
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
            policy=policy,
            credit_limit_cents=100_00,
            now=SETUP,
        )
    ledger.add_member("staff", "ai-lab", "alice", SETUP)
    ledger.add_member("staff", "ai-lab", "bob", SETUP)
    ledger.add_member("staff", "tight-lab", "alice", SETUP)
    ledger.add_grant("staff", "ai-lab", 500_00, SETUP, SETUP + timedelta(days=180), SETUP)
    ledger.add_grant("staff", "tight-lab", 1_00, SETUP, SETUP + timedelta(days=180), SETUP)
    ledger.set_price("staff", "h100.1g.10gb", 550, SETUP, SETUP)
    ledger.set_price("staff", "h100x1", 3850, SETUP, SETUP)
    ids = {}

    def run(key, project, user, start, ticks, stop=None, slice_type="h100.1g.10gb"):
        s = ledger.open_session(project, user, "", slice_type, timedelta(hours=3), start)
        for t in ticks:
            ledger.meter(t, [s.id])
        if stop is not None:
            ledger.close_session(s.id, stop)
        ids[key] = s.id

    # October (last month): outside this month, partly inside the last 30 days
    run("oct", "ai-lab", "alice", at(31, 22, month=10), [at(31, 23, month=10)], at(1, 1))
    # a tick that ends at midnight HKT belongs to the day before
    run("midnight", "ai-lab", "alice", at(9, 23), [at(10, 0)], at(10, 1))
    run("bob", "ai-lab", "bob", at(20, 10), [at(20, 11)], at(20, 12))
    # running now: bob's on h100.1g.10gb; alice's in tight-lab past its HK$1.00 of subsidy
    run("running", "ai-lab", "bob", NOW - timedelta(hours=1), [NOW - timedelta(minutes=1)])
    run(
        "credit",
        "tight-lab",
        "alice",
        NOW - timedelta(hours=1),
        [NOW - timedelta(minutes=1)],
        slice_type="h100x1",
    )
    # a deferred hold: a batch job still queued
    (queued,) = ledger.open_sessions(
        [HoldRequest("ai-lab", "alice", "q", "h100x1", timedelta(hours=1), NOW, True)]
    )
    ids["queued"] = queued.id
    yield ledger, ids
    ledger.dispose()


def test_daily_spend_matches_the_statements_days(ledger):
    ledger, _ = ledger
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    days = [d.day for d in st.days]
    got = pages.daily_spend(ledger, ["ai-lab"], days)["ai-lab"]
    assert got == st.days  # same days, same cents, the midnight rule included
    ninth = next(d for d in got if d.day == date(2026, 11, 9))
    assert ninth.amounts.list_cents == 550  # 23:00-24:00 on the 9th, ticked at midnight


def test_usage_shows_the_users_projects_this_month_and_own_sessions(ledger):
    ledger, ids = ledger
    reader = LedgerReader(ledger)
    (lab,) = pages.usage(reader, "bob", NOW)
    assert lab.project["project"] == "ai-lab"
    st = monthly_statement(ledger, "ai-lab", "2026-11", NOW)
    assert lab.this_month == st.total  # the project's month, every member's sessions
    assert len(lab.days) == 30 and lab.days[-1].day == NOW.date()
    assert lab.days_total.list_cents > lab.this_month.list_cents  # 31 Oct is charted too
    assert {s["id"] for s in lab.sessions} == {ids["bob"], ids["running"]}  # his own only
    alice = pages.usage(reader, "alice", NOW)
    assert [u.project["project"] for u in alice] == ["ai-lab", "tight-lab"]
    assert ids["bob"] not in {s["id"] for u in alice for s in u.sessions}
    assert pages.usage(reader, "nobody", NOW) == []


def test_staff_view_burn_rates_and_filters(ledger):
    ledger, ids = ledger
    reader = LedgerReader(ledger)
    view = pages.staff_view(reader, NOW)
    by_id = {r.view["id"]: r for r in view.running}
    assert set(by_id) == {ids["running"], ids["credit"], ids["queued"]} and view.count == 3
    assert by_id[ids["running"]].burn == Amounts(550, 385, 165)
    assert by_id[ids["credit"]].burn == Amounts(3850, 0, 3850)  # subsidy spent: all co-pay
    assert by_id[ids["queued"]].burn == Amounts() and by_id[ids["queued"]].state == "queued"
    assert view.burn == Amounts(4400, 385, 4015)
    assert view.spent.list_cents == sum(r.spent.list_cents for r in view.running) > 0
    assert [p["project"] for p in view.projects] == ["ai-lab", "tight-lab"]
    assert view.slice_types == ["h100.1g.10gb", "h100x1"]
    assert pages.staff_view(reader, NOW, project="tight-lab").count == 1
    assert pages.staff_view(reader, NOW, slice_type="h100x1").count == 2
    assert pages.staff_view(reader, NOW, user="bob").count == 1
    assert pages.staff_view(reader, NOW, user="nobody").count == 0


# -- the rendered pages -------------------------------------------------------------------


def render_usage(reader, user):
    return pages.render(
        "usage.html.j2",
        title="My usage",
        page="usage",
        projects=pages.usage(reader, user, NOW),
        user=user,
        is_staff=False,
        hub_home="/hub/home",
    )


def test_usage_page_is_accessible_and_reads_in_hkd(ledger):
    ledger, _ = ledger
    html = render_usage(LedgerReader(ledger), "alice")
    page = Page(html)
    check_accessible(page)
    assert page.svg_titles == [
        "Daily spend of ai-lab, last 30 days",
        "Daily spend of tight-lab, last 30 days",
    ]
    mine = page.table("Your sessions in ai-lab")
    header, *rows = mine.rows
    assert header[:4] == ["Slice type", "Started", "Ended or ends", "Status"]
    assert [r[3] for r in rows] == ["queued", "stopped", "stopped"]  # newest first
    assert rows[1][4:] == ["HK$11.00", "HK$7.70", "HK$3.30"]  # 2 h at HK$5.50
    assert all(cell.startswith("HK$") for r in rows for cell in r[4:])
    assert "UTC" in rows[1][1]  # the fallback text; the page's script shows local time
    assert len(page.all("time")) >= 6 and all("datetime" in a for a in page.all("time"))
    assert "AI <b>Lab</b> & Co" in page.text and "&lt;b&gt;" in html  # escaped, not markup
    assert "Subsidy left" in page.text and "(not used: policy stop)" in page.text
    assert not page.all("b")


def test_usage_page_for_a_user_without_projects(ledger):
    ledger, _ = ledger
    page = Page(render_usage(LedgerReader(ledger), "nobody"))
    check_accessible(page)
    assert "You are not a member of any project yet" in page.text and not page.all("svg")


def render_staff(view):
    return pages.render(
        "staff.html.j2",
        title="Running sessions",
        page="staff",
        view=view,
        user="staff",
        is_staff=True,
        hub_home="/hub/home",
    )


def test_staff_page_is_accessible_with_labelled_filters(ledger):
    ledger, _ = ledger
    html = render_staff(pages.staff_view(LedgerReader(ledger), NOW, user='x"><script>'))
    page = Page(html)
    check_accessible(page)
    assert {a["name"] for a in page.all("select")} == {"project", "slice_type"}
    assert page.all("input")[0]["value"] == 'x"><script>'  # back in the box, escaped
    assert "<script>" not in html.split("<script>\n")[0]
    assert "No session is running that matches the filter." in page.text

    page = Page(render_staff(pages.staff_view(LedgerReader(ledger), NOW)))
    check_accessible(page)
    running = page.table("Running sessions")
    row = next(r for r in running.rows if r[1] == "bob")
    assert row[0] == "h100.1g.10gb" and row[5:7] == ["HK$5.50/h", "HK$1.65/h"]
    assert running.rows[-1][0].startswith("Total (3 sessions)")
    balances = page.table("Every project's balance")
    assert [r[0].split()[0] for r in balances.rows[1:]] == ["ai-lab", "tight-lab"]
    assert "burning HK$44.00/h at list price, of which HK$40.15/h is co-pay" in page.text


def test_daily_spend_on_postgresql(pg_url):
    """The day buckets are one CASE grouped in a subquery: PostgreSQL groups it too."""
    ledger = Ledger(pg_url)
    try:
        ledger.upgrade()
        ledger.add_scheme("staff", "hk-ai", 7000, 10**9, SETUP)
        ledger.add_project(
            "staff",
            "pg-lab",
            scheme="hk-ai",
            name="PG lab",
            organisation="HKU",
            pi="dr-chan",
            valid_from=SETUP,
            valid_until=SETUP + timedelta(days=180),
            allowed_slice_types=["*"],
            max_concurrent_sessions=10,
            now=SETUP,
        )
        ledger.add_member("staff", "pg-lab", "alice", SETUP)
        ledger.add_grant("staff", "pg-lab", 500_00, SETUP, SETUP + timedelta(days=180), SETUP)
        ledger.set_price("staff", "h100.1g.10gb", 550, SETUP, SETUP)
        for start in (at(9, 23), at(20, 10)):
            s = ledger.open_session(
                "pg-lab", "alice", "", "h100.1g.10gb", timedelta(hours=3), start
            )
            ledger.meter(start + timedelta(hours=1), [s.id])
            ledger.close_session(s.id, start + timedelta(hours=2))
        st = monthly_statement(ledger, "pg-lab", "2026-11", NOW)
        got = pages.daily_spend(ledger, ["pg-lab"], [d.day for d in st.days])["pg-lab"]
        assert got == st.days and sum(d.amounts.list_cents for d in got) == 2200
        (lab,) = pages.usage(LedgerReader(ledger), "alice", NOW)
        assert lab.this_month == st.total
    finally:
        ledger.dispose()
