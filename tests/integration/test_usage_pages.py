"""The quota service's hub pages with a real hub: "My usage" behind the hub's login, showing a
user their projects, a chart and their own sessions only; "Running sessions" for staff with
burn rates, 403 for everyone else; links to both in the hub's nav bar."""

import sqlite3
import time

import pytest
import requests
from pagehtml import Page, check_accessible

from slicehub.common.money import format_money

pytestmark = pytest.mark.integration

PASSWORD = "slicehub-demo"  # the demo users' password (hub_config, SLICEHUB_DEMO_PASSWORD)


def ledger_rows(data, sql):
    with sqlite3.connect(data / "ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def run_a_session(hub, user, options, seconds=2.5):
    r = hub.start_server(user, options)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(user)
    time.sleep(seconds)  # a few metering ticks (every second here)
    hub.stop_server(user)


def test_my_usage_shows_balance_chart_and_only_the_users_own_sessions(quota_hub):
    hub, data = quota_hub
    run_a_session(hub, "bob", {"slice_type": "h100x1", "duration_hours": 1})
    run_a_session(hub, "alice", {"project": "demo-lab", "slice_type": "cpu"}, seconds=0.5)
    with hub.login("bob", PASSWORD) as browser:
        r = browser.get(f"{hub.url}/services/quota/usage", timeout=30)
        assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
        assert r.headers["Content-Type"].startswith("text/html")
        assert any("/hub/api/oauth2/authorize" in h.url for h in r.history)  # the hub's OAuth
    page = Page(r.text)
    check_accessible(page)
    assert "demo-lab" in page.text and "vision-group" not in page.text  # bob's project only
    assert page.svg_titles == ["Daily spend of demo-lab, last 30 days"]
    ((charged, subsidy),) = ledger_rows(
        data,
        "SELECT charged_list_cents, charged_subsidy_cents FROM sessions WHERE username = 'bob'",
    )
    _header, *rows = page.table("Your sessions in demo-lab").rows
    assert len(rows) == 1, rows  # alice's session is not on bob's page
    (row,) = rows
    assert row[0] == "h100x1" and row[3] == "stopped" and "UTC" in row[1]
    assert row[4:] == [
        format_money(charged),
        format_money(subsidy),
        format_money(charged - subsidy),
    ]
    ((spent,),) = ledger_rows(data, "SELECT sum(charged_subsidy_cents) FROM sessions")
    left = page.text.split("Subsidy left", 1)[1].split("Subsidy held", 1)[0].strip()
    assert left == format_money(500_00 - spent)  # demo-lab's HK$500.00 grant, less both users'


def test_the_staff_page_is_for_staff_and_anonymous_visitors_go_to_the_login(quota_hub):
    hub, _data = quota_hub
    with hub.login("bob", PASSWORD) as browser:
        r = browser.get(f"{hub.url}/services/quota/staff", timeout=30)
        assert r.status_code == 403
        assert r.headers["Content-Type"].startswith("text/html")
        page = Page(r.text)
        check_accessible(page)
        assert "This page is for the centre's staff" in page.text
        home = browser.get(f"{hub.url}/hub/home", timeout=30)  # the hub's nav bar
        assert 'href="/services/quota/usage">My usage</a>' in home.text
        assert "/services/quota/staff" not in home.text
        root = browser.get(f"{hub.url}/services/quota/", timeout=30)  # the services menu's link
        assert root.status_code == 200 and root.url.endswith("/services/quota/usage")
    anonymous = requests.Session()
    anonymous.trust_env = False
    with anonymous:
        for path in ("usage", "staff"):
            r = anonymous.get(f"{hub.url}/services/quota/{path}", timeout=30)
            assert "/hub/login" in r.url, r.url  # sent to log in, nothing shown
            assert "Subsidy" not in r.text and "Running sessions" not in r.text


def test_staff_see_a_running_session_with_its_burn_rate(quota_hub):
    hub, _data = quota_hub
    r = hub.start_server("bob", {"slice_type": "h100.1g.10gb", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    time.sleep(1.5)
    with hub.login("staff", PASSWORD) as browser:
        home = browser.get(f"{hub.url}/hub/home", timeout=30)
        assert 'href="/services/quota/staff">Running sessions</a>' in home.text
        r = browser.get(f"{hub.url}/services/quota/staff", timeout=30)
        assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
        page = Page(r.text)
        check_accessible(page)
        running = page.table("Running sessions")
        (row,) = [row for row in running.rows if row[1:3] == ["bob", "demo-lab"]]
        assert row[0] == "h100.1g.10gb"
        assert row[5:7] == ["HK$5.50/h", "HK$1.65/h"]  # list price; co-pay at a 70% subsidy
        assert all(cell.startswith("HK$") for cell in row[7:9])
        assert "UTC" in row[3] and "UTC" in row[4]
        balances = page.table("Every project's balance")
        assert [r[0].split()[0] for r in balances.rows[1:]] == ["demo-lab", "vision-group"]
        one = browser.get(
            f"{hub.url}/services/quota/staff", params={"project": "vision-group"}, timeout=30
        )
        assert "No session is running that matches the filter." in Page(one.text).text
    hub.stop_server("bob")
