"""Idleness on the quota service's pages: the staff page's activity and GPU signal of each
running session from the culler's latest readings (working, warned, idle, no GPU signal, not
read yet; what a server says of itself escaped), and a parked session on "My usage"."""

from datetime import timedelta

import pytest
from markupsafe import Markup
from pagehtml import Page, check_accessible

from slicehub.quota import pages
from slicehub.quota.idle_api import Seen
from slicehub.quota.parking import WARN, Reading
from slicehub.quota.reader import LedgerReader
from slicehub.quota.site_parking import SiteParking
from tests.unit.rules_ledger import T0, H, project
from tests.unit.test_pages import render_staff, render_usage

MIN = timedelta(minutes=1)
SITE = SiteParking(idle=30 * MIN, warning=5 * MIN, check=MIN)
START = T0 + 30 * MIN  # the running sessions' start, 01:30 UTC
NOW = START + 25 * MIN  # 01:55 UTC
HOSTILE = '<script>alert("x")</script><b>bold</b>'
DECLARED = "no GPU signal: the slice's devices are declared in the site file, not read"


def observed(ledger, sid, user, reading, gpu="idle", detail="", now=NOW) -> Seen:
    """What the parking API keeps of a reading (idle_api.ActivityHandler), for the pages."""
    o = ledger.observe(sid, user, "", reading, SITE, now)
    d = o.decision
    return Seen(
        now,
        user,
        "",
        o.project,
        d.idle,
        reading.busy,
        gpu,
        detail,
        d.action,
        d.park_at,
        o.opted_out,
    )


@pytest.fixture
def staff(ledger):
    """lab's running sessions at 01:55: ann's working (a busy kernel and hostile text), bo's
    warned at 25 idle minutes, cy's idle 5 min on a declared device, dee's not read yet; ann's
    other server was parked at 01:30 after 30 idle minutes."""
    project(ledger, "lab", grant=1000_00)
    for user in ("ann", "bo", "cy", "dee"):
        ledger.add_member("staff", "lab", user, T0)
    parked = ledger.open_session("lab", "ann", "old", "h100.1g.10gb", 4 * H, T0)
    ledger.observe(parked.id, "ann", "old", Reading(25 * MIN), SITE, T0 + 25 * MIN)
    ledger.park(parked.id, "ann", "old", START)
    users = ("ann", "bo", "cy", "dee")
    sid = {u: ledger.open_session("lab", u, "", "h100.1g.10gb", 4 * H, START).id for u in users}
    busy = Reading(2 * H, ("kernel train.ipynb (python3) is busy", HOSTILE))
    readings = {
        sid["ann"]: observed(ledger, sid["ann"], "ann", busy, "active", "GPU: 87% busy"),
        sid["bo"]: observed(ledger, sid["bo"], "bo", Reading(25 * MIN)),
        sid["cy"]: observed(ledger, sid["cy"], "cy", Reading(5 * MIN), "none", DECLARED),
    }
    assert readings[sid["bo"]].action == WARN
    return pages.staff_view(LedgerReader(ledger), NOW, readings=readings)


def test_the_staff_page_says_what_each_session_does(staff):
    html = render_staff(staff)
    page = Page(html)
    check_accessible(page)
    table = page.table("Running sessions")
    assert table.rows[0][9:] == ["Activity (latest check)", "GPU signal"]
    by_user = {r[1]: r[9:] for r in table.rows[1:-1]}
    assert by_user["ann"] == [
        f"working: kernel train.ipynb (python3) is busy; {HOSTILE} read 2026-11-02 01:55 UTC",
        "active: GPU: 87% busy",
    ]
    assert by_user["bo"] == [
        "idle 25 min (parked at 2026-11-02 02:00 UTC unless there is activity) "
        "read 2026-11-02 01:55 UTC",
        "idle",
    ]
    assert by_user["cy"] == ["idle 5 min read 2026-11-02 01:55 UTC", DECLARED]
    assert by_user["dee"] == ["not read yet", "not read yet"]
    assert table.rows[-1][-1] == "2 idle, 1 warned"
    assert "At the latest check 2 of them were idle, 1 with a parking warning." in page.text


def test_what_a_server_says_of_itself_is_escaped_on_the_staff_page(staff):
    html = render_staff(staff)
    page = Page(html)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert len(page.all("script")) == 1 and not page.all("b")  # the page's own script only
    assert "the slice&#39;s devices" in html


def test_activity_and_gpu_sentences():
    view = {"begun": True, "parking": None}
    at = T0
    seen = Seen(at, "ann", "", "lab", 65 * MIN, (), "none", "", "keep", None, False)
    assert pages.activity_text(seen, view) == "idle 1 h 05 min"
    assert pages.gpu_text(seen) == "no GPU signal"  # never a pretend number
    assert pages.gpu_text(
        Seen(at, "a", "", "lab", MIN, (), "none", "no NVML here", "keep", None, False)
    ) == ("no GPU signal: no NVML here")
    exempt = Seen(at, "ann", "", "lab", 3 * H, (), "idle", "", "keep", None, True)
    assert (
        pages.activity_text(exempt, view) == "idle 3 h 00 min (the project is exempt from parking)"
    )
    parking = Seen(at, "ann", "", "lab", 30 * MIN, (), "idle", "", "park", at, False)
    assert pages.activity_text(parking, view) == "idle 30 min: being parked now"
    fresh = Seen(at, "ann", "", "lab", timedelta(seconds=20), (), "idle", "", "keep", None, False)
    assert pages.activity_text(fresh, view) == "idle under a minute"
    assert (
        pages.activity_text(None, view) == "not read yet" and pages.gpu_text(None) == "not read yet"
    )
    assert pages.activity_text(None, {"begun": False, "parking": None}) == "queued: not running yet"
    hostile = Seen(at, "ann", "", "lab", MIN * 0, ("<i>x</i>",), "active", "", "keep", None, False)
    out = pages.activity_text(hostile, view)
    assert isinstance(out, Markup) and out == "working: &lt;i&gt;x&lt;/i&gt;"


def test_a_parked_session_says_why_on_my_usage(staff, ledger):
    page = Page(render_usage(LedgerReader(ledger), "ann"))
    check_accessible(page)
    rows = page.table("Your sessions in lab").rows
    assert rows[2][3] == "stopped parked after 30 min idle; HK$24.50 returned"  # 4 h held
    assert rows[1][3] == "running"
