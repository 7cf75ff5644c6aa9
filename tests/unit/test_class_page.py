"""The instructor's class page in-process (slicehub.quota.pages_class): the service's routes
(`make_app`) on a real SQLite ledger whose class is built through the ledger's own calls (holds
with `prewarm_window`, `claim`, `stop_unclaimed`, `close_session`, metering), served by tornado
on a local port.

Two seams stand in for the hub, each named: `QuotaHandler.get_current_user` answers the hub's
OAuth check with the identity a test sets (the XSRF test instead answers the hub's token check,
`HubOAuth.user_for_token`, so that JupyterHub's own cookie and XSRF checks run), and
`FakeHubServers`, on a local port, records the servers the page asks the hub to stop.

The class at NOW, 20 minutes into its window (03:00 to 05:00 UTC; servers pre-warmed 10
minutes ahead at HK$10.00 an hour and 70% subsidy, paid by the centre project centre-classes):
stu1 claimed their pre-warmed server at 03:02; stu2's pre-warmed server waits; stu3's was
released unclaimed at 03:15; stu4 started their own at 03:05; stu5 ran their own from 03:01 to
03:10 and runs a research server; stu6 did nothing; the instructor runs a server of their own
on the course since 03:03.
"""

import asyncio
import html as entities
import json
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from jupyterhub.services.auth import HubOAuth
from pagehtml import Page, check_accessible
from sqlalchemy import select
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.quota import api, pages_class
from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.models import AuditEntry, ClassWindow
from slicehub.quota.pages_class import focus_window, stop_servers
from slicehub.quota.service import make_app
from slicehub.quota.store import find_project
from tests.unit.quota_http import serve
from tests.unit.rules_ledger import T0, H, project

M = timedelta(minutes=1)
START, END = T0 + 2 * H, T0 + 4 * H  # 03:00 to 05:00 UTC on 2 November 2026
NOW = START + 20 * M
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
STAFF = "custom:quota:staff"


def user(name: str, *scopes: str) -> dict:
    return {"kind": "user", "name": name, "scopes": ["access:services!service=quota", *scopes]}


def hold(ledger, who, at, project_slug="ml101", server="", window=None, length=H):
    (out,) = ledger.open_sessions(
        [HoldRequest(project_slug, who, server, "h100.1g.10gb", length, at, prewarm_window=window)]
    )
    if isinstance(out, LedgerError):
        raise out
    return out


@pytest.fixture
def course(ledger) -> dict:
    """The class of the module docstring, metered up to NOW: session ids by role."""
    project(
        ledger,
        "ml101",
        grant=1000_00,
        name=f"Machine learning {HOSTILE}",
        organisation=f"HKU {HOSTILE}",
        is_course=True,
        member_cap_cents=20_00,
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=20,
    )
    project(ledger, "research", grant=1000_00)
    project(ledger, "centre-classes", grant=1000_00)
    ledger.add_member("staff", "ml101", "prof", T0, role="instructor")
    ledger.add_member("staff", "ml101", "boss", T0, role="pi")
    ledger.add_member("staff", "ml101", "helper", T0, role="member")
    for i in range(1, 7):
        name = HOSTILE if i == 2 else f"Student {i}"
        ledger.add_member("staff", "ml101", f"stu{i}", T0, role="student", name=name)
    ledger.add_member("staff", "research", "stu5", T0)
    window = ledger.add_class_window("staff", "ml101", START, END, T0).id
    ledger.add_class_window("staff", "ml101", START + 48 * H, END + 48 * H, T0)
    ledger.set_prewarm("staff", "ml101", T0, 10, 15, paid_by="centre-classes")
    ids = {}
    for who in ("stu1", "stu2", "stu3"):
        ids[f"warm-{who}"] = hold(ledger, who, START - 10 * M, window=window).id
    ids["own-stu1"] = ledger.claim(ids["warm-stu1"], "stu1", START + 2 * M).id
    ids["own-stu5"] = hold(ledger, "stu5", START + M).id
    ledger.close_session(ids["own-stu5"], START + 10 * M)
    ids["lab-stu5"] = hold(ledger, "stu5", START + M, "research", "lab").id
    ids["own-stu4"] = hold(ledger, "stu4", START + 5 * M).id
    ids["own-prof"] = hold(ledger, "prof", START + 3 * M, server="demo").id  # not a student
    ledger.stop_unclaimed(ids["warm-stu3"], START + 15 * M)
    ledger.meter(NOW)
    ids["window"] = window
    return ids


class FakeHubServers(web.RequestHandler):
    """A fake of the hub's `DELETE /hub/api/users/{name}/server[s/{server}]`: records each
    (user, server) it is asked to stop; answers 500 for the users in `broken`."""

    def initialize(self, stopped, broken):
        self.stopped, self.broken = stopped, broken

    def delete(self, name, server=""):
        self.stopped.append((name, server))
        self.set_status(500 if name in self.broken else 204)


@pytest.fixture
def hub_env(monkeypatch):
    for key, value in (
        ("JUPYTERHUB_API_TOKEN", "fake-token"),
        ("JUPYTERHUB_CLIENT_ID", "service-quota"),
        ("JUPYTERHUB_SERVICE_PREFIX", "/services/quota/"),
        ("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(clock, "utcnow", lambda: NOW)


class Site:
    """The service on a local port: `await site.call(method, path, form, headers)` ->
    (status, body, headers); `stopped`: what the fake hub was asked to stop."""

    def __init__(self, port, stopped, broken):
        self.port, self.stopped, self.broken = port, stopped, broken

    async def call(self, method, path, form=None, headers=None):
        r = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"http://127.0.0.1:{self.port}/services/quota/{path}",
                method=method,
                body=None if method == "GET" else urlencode(form or {}),
                headers=headers,
                follow_redirects=False,
            ),
            raise_error=False,
        )
        return r.code, r.body.decode(), r.headers


async def start_site(ledger, with_hub=True):
    stopped, broken = [], set()
    closers = []
    hub = None
    if with_hub:
        hub_server, hub_port = serve(
            web.Application(
                [
                    (
                        r"/hub/api/users/([^/]+)/server",
                        FakeHubServers,
                        {"stopped": stopped, "broken": broken},
                    ),
                    (
                        r"/hub/api/users/([^/]+)/servers/([^/]+)",
                        FakeHubServers,
                        {"stopped": stopped, "broken": broken},
                    ),
                ]
            )
        )
        closers.append(hub_server.stop)
        hub = HubClient(f"http://127.0.0.1:{hub_port}/hub/api", "t")
    app = make_app(ledger, hub=hub)
    server, port = serve(app)
    closers.append(server.stop)
    return Site(port, stopped, broken), app, closers


@pytest.fixture
async def site(ledger, course, hub_env, monkeypatch):
    """The service with a fake hub; `site.who["is"]` is who the hub's OAuth check says calls."""
    who = {"is": user("prof")}
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: who["is"])
    s, app, closers = await start_site(ledger)
    s.who = who
    yield s
    for close in closers:
        close()
    await app.settings["holds"].close()


def audits(ledger) -> list[AuditEntry]:
    with ledger.session() as db:
        return list(
            db.scalars(select(AuditEntry).where(AuditEntry.action == "class.stop-all")).all()
        )


def roster(page: Page) -> dict[str, list[str]]:
    header, *rows = page.table("Students of ml101").rows
    assert header[:3] == ["Student", "Server", "Since"]
    return {r[0].split(" ")[0]: r[1:] for r in rows}


# -- what the page shows ---------------------------------------------------------------------


async def test_the_instructor_sees_each_students_server_and_the_courses_spend(site, ledger, course):
    code, html, headers = await site.call("GET", "classes/ml101")
    assert code == 200 and headers["Cache-Control"] == "no-store"
    page = Page(html)
    check_accessible(page)
    rows = roster(page)
    assert list(rows) == [f"stu{i}" for i in range(1, 7)] + ["All"]  # roster order, then total
    states = {u: (r[0], r[1]) for u, r in rows.items() if u != "All"}
    assert states == {
        "stu1": ("claimed", "2026-11-02 03:02 UTC"),
        "stu2": ("pre-warmed", "2026-11-02 02:50 UTC"),
        "stu3": ("stopped (not claimed in time)", "2026-11-02 03:15 UTC"),
        "stu4": ("running", "2026-11-02 03:05 UTC"),
        "stu5": ("stopped", "2026-11-02 03:10 UTC"),
        "stu6": ("not started", ""),
    }
    # their own sessions in the course, never the pre-warmed time: 18, 0, 0, 15, 9, 0 minutes
    spent = {u: r[2:5] for u, r in rows.items() if u != "All"}
    assert spent["stu1"] == ["HK$3.00", "HK$2.10", "HK$0.90"]
    assert spent["stu2"] == spent["stu3"] == spent["stu6"] == ["HK$0.00"] * 3
    assert spent["stu4"] == ["HK$2.50", "HK$1.75", "HK$0.75"]
    assert spent["stu5"] == ["HK$1.50", "HK$1.05", "HK$0.45"]
    assert rows["All"] == ["HK$7.00", "HK$4.90", "HK$2.10", ""]  # the footer spans three
    with ledger.session() as db:  # the cap left is the ledger's own rule (member_draw)
        p = find_project(db, "ml101")
        for who in ("stu1", "stu4", "stu6"):
            charged, held = ledger.member_draw(db, p, who)
            left = 20_00 - charged - held
            assert rows[who][5] == f"HK${left // 100}.{left % 100:02d}"
    assert "Of 6 students: 1 pre-warmed, 1 claimed, 1 running, 2 stopped, 1 not started." in (
        page.text
    )
    # the window's pre-warm cost: 12, 25 and 30 minutes at HK$10.00 an hour
    assert page.table("Servers pre-warmed for this class window").rows[1:] == [
        ["Claimed", "1", "12.00", "HK$2.00", "HK$1.40", "HK$0.60"],
        ["Wasted", "1", "25.00", "HK$4.16", "HK$2.91", "HK$1.25"],
        ["Waiting", "1", "30.00", "HK$5.00", "HK$3.50", "HK$1.50"],
    ]
    assert "Pre-warmed time is paid by centre-classes, never by the students." in page.text
    figures = summary(html)
    # the course's own: 300 + 250 + 150 of students and 283 of the instructor's 17 minutes;
    # the pre-warmed time is centre-classes'
    assert figures["Spent this month, list cost"] == "HK$9.83"
    assert figures["… paid by the subsidy"] == "HK$6.88"
    assert figures["… paid by the course (co-pay)"] == "HK$2.95"
    assert figures["Grants in force"] == "HK$1,000.00"
    bal = ledger.balance("ml101", NOW)
    assert figures["Subsidy left"] == money(bal.subsidy_left_cents)
    assert "2026-11-02 03:00 UTC to 2026-11-02 05:00 UTC: in progress." in page.text
    (nxt,) = page.table("The next class windows of ml101").rows[1:]
    assert nxt == ["2026-11-04 03:00 UTC", "2026-11-04 05:00 UTC", "upcoming"]
    # the form posts here with the hub's XSRF field and a box to tick; the script polls the API
    form = next(a for a in page.all("form") if a.get("id") == "stop-all")
    assert (form["method"], form["action"]) == ("post", "/services/quota/classes/ml101")
    assert any(a.get("name") == "_xsrf" and a.get("value") for a in page.all("input"))
    live = next(a for a in page.all("div") if a.get("id") == "class-live")
    assert live["data-api"] == "/services/quota/api/classes/ml101"
    assert 'href="/services/quota/classes/ml101">reload it</a>' in html  # scripts off


def summary(html: str) -> dict[str, str]:
    """A page's summary figures (<dt>…</dt><dd>…</dd>)."""
    return {
        entities.unescape(re.sub(r"\s+", " ", t)): d
        for t, d in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html, re.S)
    }


def element_text(html: str, element_id: str) -> str:
    """The text of the element with `element_id` (tags dropped, spaces collapsed)."""
    found = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert found, element_id
    return re.sub(r"\s+", " ", entities.unescape(re.sub(r"<[^>]+>", "", found.group(2)))).strip()


def money(cents: int) -> str:
    return f"HK${cents // 100:,}.{cents % 100:02d}"


async def test_the_pi_and_staff_see_it_and_the_json_says_the_same(site, course):
    site.who["is"] = user("boss")
    assert (await site.call("GET", "classes/ml101"))[0] == 200
    site.who["is"] = user("centre-admin", STAFF)
    code, html, _ = await site.call("GET", "classes/ml101")
    assert code == 200
    code, body, headers = await site.call("GET", "api/classes/ml101")
    assert code == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["course"] == "ml101" and data["window"]["id"] == course["window"]
    assert [(s["user"], s["state"]) for s in data["students"]] == [
        ("stu1", "claimed"),
        ("stu2", "pre-warmed"),
        ("stu3", "stopped"),
        ("stu4", "running"),
        ("stu5", "stopped"),
        ("stu6", "not started"),
    ]
    assert data["students"][0]["since"] == (START + 2 * M).isoformat()
    assert data["students"][3]["spent"] == {
        "list_cents": 250,
        "subsidy_cents": 175,
        "copay_cents": 75,
    }
    assert data["counts"] == {
        "pre-warmed": 1,
        "claimed": 1,
        "running": 1,
        "stopped": 2,
        "not started": 1,
    }
    assert data["this_month"] == {"list_cents": 983, "subsidy_cents": 688, "copay_cents": 295}
    assert data["prewarm"]["paid_by"] == "centre-classes"
    assert data["prewarm"]["wasted"] == {
        "servers": 1,
        "minutes": "25.00",
        "list_cents": 416,
        "subsidy_cents": 291,
        "copay_cents": 125,
    }
    # the live part the script puts in place is the page's own, and the layout key matches
    live = Page(f"<html lang='en'><body>{data['html']}</body></html>")
    assert roster(live) == roster(Page(html))
    assert f'data-layout="{data["layout"]}"' in html


async def test_students_members_and_strangers_get_403_whether_the_course_exists_or_not(site):
    for who in ("stu1", "helper", "stranger"):
        site.who["is"] = user(who)
        for course in ("ml101", "nope"):
            code, html, _ = await site.call("GET", f"classes/{course}")
            assert code == 403, (who, course)
            assert (
                f"The class page of {course} is for its instructors and the centre's staff"
                in Page(html).text
            )
            code, body, _ = await site.call("GET", f"api/classes/{course}")
            assert code == 403 and "for its instructors" in json.loads(body)["message"]
            code, _, _ = await site.call("POST", f"classes/{course}", {"confirm": "yes"})
            assert code == 403
    assert site.stopped == []
    site.who["is"] = user("centre-admin", STAFF)
    code, html, _ = await site.call("GET", "classes/nope")
    assert code == 404 and "There is no project 'nope'" in Page(html).text
    code, html, _ = await site.call("GET", "classes/research")
    assert code == 404 and "research is not a course" in Page(html).text


async def test_what_people_typed_is_escaped(site):
    code, html, _ = await site.call("GET", "classes/ml101")
    assert code == 200
    page = Page(html)
    check_accessible(page)  # no inline event handlers among the elements
    assert HOSTILE in page.text  # shown as typed: the course's name and organisation, a name
    assert "<img" not in html and not page.all("img")
    assert html.count("<script>") == 2  # the layout's and the page's own, nothing else
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    _, body, _ = await site.call("GET", "api/classes/ml101")
    fragment = json.loads(body)["html"]
    assert "<img" not in fragment and "&lt;img src=x onerror=alert(1)&gt;" in fragment


async def test_the_usage_page_links_instructors_to_their_class_page(site):
    for who, linked in (("prof", True), ("boss", True), ("stu1", False), ("helper", False)):
        site.who["is"] = user(who)
        code, html, _ = await site.call("GET", "usage")
        assert code == 200
        assert ('href="classes/ml101"' in html) == linked, who


# -- stop all ----------------------------------------------------------------------------------


async def test_stop_all_asks_the_hub_to_stop_exactly_the_students_running_servers(
    site, ledger, course
):
    code, html, _ = await site.call("POST", "classes/ml101", {})  # the box not ticked
    assert code == 400 and pages_class.UNCONFIRMED in Page(html).text
    assert site.stopped == [] and audits(ledger) == []
    code, _, headers = await site.call("POST", "classes/ml101", {"confirm": "yes"})
    assert code == 303
    assert headers["Location"] == "/services/quota/classes/ml101?done=stopped"
    # stu1's claimed server, stu2's pre-warmed one, stu4's own; never stu5's research server,
    # a stopped one, or a server of someone who is not a student
    assert sorted(site.stopped) == [("stu1", ""), ("stu2", ""), ("stu4", "")]
    (entry,) = audits(ledger)
    assert (entry.actor, entry.subject) == ("prof", "ml101")
    assert json.loads(entry.detail) == {"asked": 3, "accepted": 3, "failed": []}
    code, html, _ = await site.call("GET", "classes/ml101?done=stopped")
    assert element_text(html, "done") == (
        "prof asked the hub at 2026-11-02 03:20 UTC to stop 3 servers of the course's "
        "students; the hub accepted 3."
    )
    # pressed again once the servers are gone (the fake hub stops nothing in the ledger: the
    # spawners would release the sessions): what the ledger still holds active is asked again
    for sid in (course["own-stu1"], course["warm-stu2"], course["own-stu4"], course["own-prof"]):
        ledger.close_session(sid, NOW)
    site.stopped.clear()
    code, _, _ = await site.call("POST", "classes/ml101", {"confirm": "yes"})
    assert code == 303 and site.stopped == []
    _, html, _ = await site.call("GET", "classes/ml101?done=stopped")
    assert element_text(html, "done") == (
        "prof pressed Stop all servers at 2026-11-02 03:20 UTC; no server of the course's "
        "students was running."
    )
    assert [json.loads(e.detail)["asked"] for e in audits(ledger)] == [3, 0]


async def test_a_server_the_hub_does_not_stop_is_reported(site, ledger):
    site.broken.add("stu2")
    site.who["is"] = user("centre-admin", STAFF)
    code, _, _ = await site.call("POST", "classes/ml101", {"confirm": "yes"})
    assert code == 303 and len(site.stopped) == 3
    (entry,) = audits(ledger)
    assert entry.actor == "centre-admin"
    assert json.loads(entry.detail) == {"asked": 3, "accepted": 2, "failed": ["stu2/"]}
    site.who["is"] = user("prof")
    _, html, _ = await site.call("GET", "classes/ml101")
    assert element_text(html, "last-stop") == (
        "Last time, centre-admin asked the hub at 2026-11-02 03:20 UTC to stop 3 servers of "
        "the course's students; the hub accepted 2. Not accepted: stu2/; the hub's log says why."
    )


async def test_without_a_hub_the_page_says_so_and_stops_nothing(
    ledger, course, hub_env, monkeypatch
):
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: user("prof"))
    site, app, closers = await start_site(ledger, with_hub=False)
    try:
        code, html, _ = await site.call("GET", "classes/ml101")
        page = Page(html)
        assert code == 200 and "runs without a hub to ask" in page.text
        assert "disabled" in next(a for a in page.all("button") if a["id"] == "stop-button")
        code, html, _ = await site.call("POST", "classes/ml101", {"confirm": "yes"})
        assert code == 503 and pages_class.NO_HUB in Page(html).text
        assert audits(ledger) == []
    finally:
        for close in closers:
            close()
        await app.settings["holds"].close()


async def test_stop_all_is_refused_without_the_hubs_xsrf_token(
    ledger, course, hub_env, monkeypatch
):
    """No identity seam here: the hub's token check (`user_for_token`) is the fake, and the
    cookie and XSRF checks are JupyterHub's own, as in production."""
    tokens = {"prof-token": user("prof", "access:services")}

    def user_for_token(self, token, use_cache=True, session_id="", *, sync=True):
        model = tokens.get(token)
        if sync:
            return model

        async def answer():
            return model

        return answer()

    monkeypatch.setattr(HubOAuth, "user_for_token", user_for_token)
    site, app, closers = await start_site(ledger)
    try:
        name = HubOAuth.instance().cookie_name
        signed = web.create_signed_value(app.settings["cookie_secret"], name, "prof-token")
        login = f"{name}={signed.decode()}"
        code, html, headers = await site.call("GET", "classes/ml101", headers={"Cookie": login})
        assert code == 200
        xsrf_cookie = next(
            c.split(";")[0] for c in headers.get_list("Set-Cookie") if c.startswith("_xsrf=")
        )
        token = next(a["value"] for a in Page(html).all("input") if a.get("name") == "_xsrf")
        cookies = {"Cookie": f"{login}; {xsrf_cookie}", "Sec-Fetch-Mode": "navigate"}
        for form in ({"confirm": "yes"}, {"confirm": "yes", "_xsrf": "forged"}):
            code, html, _ = await site.call("POST", "classes/ml101", form, cookies)
            assert code == 403, form
        assert site.stopped == [] and audits(ledger) == []
        form = {"confirm": "yes", "_xsrf": token}
        code, _, _ = await site.call("POST", "classes/ml101", form, cookies)
        assert code == 303
        assert sorted(site.stopped) == [("stu1", ""), ("stu2", ""), ("stu4", "")]
        # the page's script polls with the token in a header, as a fetch() would send it
        fetch = {**cookies, "Sec-Fetch-Mode": "cors", "X-XSRFToken": token}
        code, body, _ = await site.call("GET", "api/classes/ml101", headers=fetch)
        assert code == 200 and json.loads(body)["course"] == "ml101"
        fetch.pop("X-XSRFToken")
        code, _, headers = await site.call("GET", "api/classes/ml101", headers=fetch)
        assert code == 302 and "oauth2/authorize" in headers["Location"]  # not signed in
    finally:
        for close in closers:
            close()
        await app.settings["holds"].close()


class FakeSlowHub:
    """A fake hub whose `stop_server` takes a moment, counting how many run at once; it raises
    for "boom" and refuses (False) for "no"."""

    def __init__(self):
        self.running = self.most = 0
        self.asked = []

    async def stop_server(self, user, server_name):
        self.asked.append(user)
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        if user == "boom":
            raise OSError("connection reset")
        return user != "no"


async def test_stop_servers_bounds_the_hub_calls_and_reports_what_failed():
    hub = FakeSlowHub()
    servers = [(f"s{i}", "") for i in range(23)] + [("boom", ""), ("no", "x")]
    failed = await stop_servers(hub, servers, concurrency=4)
    assert hub.most == 4 and sorted(hub.asked) == sorted(u for u, _ in servers)
    assert failed == [("boom", ""), ("no", "x")]
    assert await stop_servers(hub, []) == []


# -- the pure rules ------------------------------------------------------------------------


def test_the_window_shown_is_the_current_one_else_the_latest_started_else_the_next(ledger):
    project(ledger, "c", is_course=True)
    for day in (0, 2):
        ledger.add_class_window("staff", "c", START + day * 24 * H, END + day * 24 * H, T0)
    with ledger.session() as db:
        windows = db.scalars(select(ClassWindow).order_by(ClassWindow.starts_at)).all()
    first, second = windows
    lead = 10 * M
    assert focus_window([], lead, NOW) is None
    assert focus_window(windows, lead, T0) is first  # before any: the next
    assert focus_window(windows, lead, START - 5 * M) is first  # its pre-warm lead
    assert focus_window(windows, lead, END + H) is first  # after it: the latest started
    assert focus_window(windows, lead, second.starts_at - 5 * M) is second
    assert focus_window(windows, timedelta(), second.starts_at - 5 * M) is first
    assert focus_window(windows, lead, second.ends_at + 99 * H) is second
