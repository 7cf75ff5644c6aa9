"""The scheme's pages in-process: the service's routes (`make_app`) on the scheme tests' SQLite
ledger (tests/unit/scheme_ledger.py), served by tornado on a local port, as a browser posts
its forms.

Two seams stand in for the hub, each named: `as_caller` answers the hub's OAuth check with the
identity a test sets (an applicant, the secretariat, a reviewer, staff), and `FakeHubUsers`
answers `GET /hub/api/users/{name}` for the scheme's hub users. What the pages show: each page
for its role and 403 or 404 for others; a refused form shown again with the sentence, what was
typed kept and nothing written; hostile text escaped; the live cost preview's numbers."""

import re
from urllib.parse import urlencode

import pytest
from pagehtml import Page, check_accessible
from sqlalchemy import func, select
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.quota import api
from slicehub.quota.models import Project
from slicehub.quota.scheme.models import Application, ChangeRequest
from slicehub.quota.service import make_app
from tests.unit.rules_ledger import T0, H
from tests.unit.scheme_ledger import DAY, HUB_USERS, under_review, workflow

NOW = T0 + H
HOSTILE = '<script>alert("x")</script>=HYPERLINK("http://evil")'
SEC = "custom:scheme:secretariat"
COM = "custom:scheme:committee"


def user(name: str, *scopes: str) -> dict:
    return {"kind": "user", "name": name, "scopes": ["access:services!service=quota", *scopes]}


class FakeHubUsers(web.RequestHandler):
    """A fake of the hub's `GET /hub/api/users/{name}`: 200 for the scheme's hub users."""

    def get(self, name):
        if name not in HUB_USERS:
            raise web.HTTPError(404)
        self.finish({"kind": "user", "name": name})


@pytest.fixture
async def site(ledger, monkeypatch):
    """`await site.call(who, method, path, form)` -> (status, html, location) of the pages."""
    for key, value in (
        ("JUPYTERHUB_API_TOKEN", "fake-token"),
        ("JUPYTERHUB_CLIENT_ID", "service-quota"),
        ("JUPYTERHUB_SERVICE_PREFIX", "/services/quota/"),
        ("JUPYTERHUB_API_URL", "http://127.0.0.1:1/hub/api"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(clock, "utcnow", lambda: NOW)
    who = {"is": user("ann")}
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: who["is"])
    hub_sock, hub_port = bind_unused_port()
    hub = HTTPServer(web.Application([(r"/hub/api/users/([^/]+)", FakeHubUsers)]))
    hub.add_sockets([hub_sock])
    app = make_app(ledger, hub=HubClient(f"http://127.0.0.1:{hub_port}/hub/api", "t"))
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])

    class Site:
        wf = workflow(ledger)

        async def call(self, who_is, method, path, form=None):
            who["is"] = who_is
            r = await AsyncHTTPClient().fetch(
                HTTPRequest(
                    f"http://127.0.0.1:{port}/services/quota/{path}",
                    method=method,
                    body=None if method == "GET" else urlencode(form or {}, doseq=True),
                    follow_redirects=False,
                ),
                raise_error=False,
            )
            return r.code, r.body.decode(), r.headers.get("Location", "")

    yield Site()
    server.stop()
    hub.stop()
    await app.settings["holds"].close()


def application_form(**kw) -> dict:
    """A complete application as the form posts it: 100 GPU-hours of h100.1g.10gb (HK$10.00
    an hour) and 3 of h100.3g.40gb (HK$30.00), bo on the team."""
    form = {
        "scheme": "s",
        "organisation": "HKU",
        "org_type": "university",
        "email": "ann@uni.hk",
        "title": "Protein folding",
        "abstract": "We fold proteins.",
        "ai_area": "biology",
        "period_start": "2026-11-02",
        "period_end": "2027-01-31",
        "rate": "",
        "member_username": ["bo", ""],
        "member_email": ["bo@uni.hk", ""],
        "slice_type": ["h100.1g.10gb", "h100.3g.40gb"],
        "gpu_hours": ["100", "3"],
        "justification": ["7B model, bf16, training", "inference, weekly"],
        "action": "save",
    }
    form.update(kw)
    return form


def applications(ledger) -> int:
    with ledger.session() as db:
        return db.scalar(select(func.count()).select_from(Application))


def field(page: Page, element_id: str) -> str:
    return next(a for _, a in page.elements if a.get("id") == element_id)["value"]


def output(page: str, key: str) -> str:
    return re.search(rf'<output id="cost-{key}">([^<]*)</output>', page).group(1)


# -- the applicant ---------------------------------------------------------------------------


async def test_an_applicant_saves_a_draft_then_submits_it_and_it_becomes_read_only(site, ledger):
    ann = user("ann")
    code, html, _ = await site.call(ann, "GET", "scheme/applications/new")
    assert code == 200
    check_accessible(Page(html))
    code, _, where = await site.call(ann, "POST", "scheme/applications/new", application_form())
    assert code == 303 and where.endswith("?done=saved")
    path = where.split("/services/quota/")[1].split("?")[0]
    code, html, _ = await site.call(ann, "GET", path + "?done=saved")
    assert code == 200 and "Your draft is saved." in html
    assert 'value="Protein folding"' in html and 'value="bo"' in html  # the draft, editable
    check_accessible(Page(html))
    form = application_form(action="submit", title="Protein folding v2")
    code, _, where = await site.call(ann, "POST", path, form)
    assert code == 303 and where.endswith("?done=submitted")
    code, html, _ = await site.call(ann, "GET", path)
    page = Page(html)
    check_accessible(page)
    assert 'id="status"' in html and "submitted" in page.text and "Protein folding v2" in page.text
    assert 'name="title"' not in html  # read-only now
    assert [r[1] for r in page.table("What happened").rows[1:]] == ["draft created", "submitted"]
    code, html, _ = await site.call(ann, "GET", "scheme/applications")
    assert code == 200 and "Protein folding v2" in Page(html).table("Your applications").rows[1][1]
    code, _, where = await site.call(ann, "POST", path, {"action": "withdraw"})
    assert code == 303 and where.endswith("?done=withdrawn")
    code, html, _ = await site.call(ann, "POST", path, {"action": "withdraw"})
    assert code == 403  # withdrawn: no way out


async def test_a_refused_form_keeps_what_was_typed_with_the_sentence_and_writes_nothing(
    site, ledger
):
    ann = user("ann")
    form = application_form(rate="95", title=HOSTILE, action="submit")
    code, html, _ = await site.call(ann, "POST", "scheme/applications/new", form)
    assert code == 400
    page = Page(html)
    check_accessible(page)
    assert "The subsidy rate must be more than 0% and at most 90%." in page.text
    assert 'id="form-error"' in html and 'value="95"' in html
    assert field(page, "title") == HOSTILE and "<script>alert" not in html  # kept, escaped
    assert 'value="7B model' not in html and "7B model, bf16, training</textarea>" in html
    assert applications(ledger) == 0
    code, html, _ = await site.call(
        ann, "POST", "scheme/applications/new", application_form(member_username=["zed", ""])
    )
    assert code == 400 and "Not a hub user: zed" in html and 'value="zed"' in html
    code, html, _ = await site.call(
        ann, "POST", "scheme/applications/new", application_form(gpu_hours=["ten", ""])
    )
    assert code == 400 and "must be a whole number" in html and 'value="ten"' in html
    code, html, _ = await site.call(
        ann, "POST", "scheme/applications/new", application_form(abstract="", action="submit")
    )
    assert code == 400 and "The application is not complete: it lacks abstract." in html
    assert applications(ledger) == 0


async def test_the_live_preview_prices_the_request_at_todays_list_prices(site, ledger):
    # 100 h x HK$10.00 + 3 h x HK$30.00 = HK$1,090.00; at 72.5%: 725.00 + 65.25 of subsidy
    form = application_form(rate="72.5", period_end="2026-10-01")  # refused: ends first
    code, html, _ = await site.call(user("ann"), "POST", "scheme/applications/new", form)
    assert code == 400 and "The period ends before it starts" in html
    assert output(html, "list") == "HK$1,090.00"
    assert output(html, "subsidy") == "HK$790.25"
    assert output(html, "copay") == "HK$299.75"
    # what the page's script computes from: each line's price and the scheme's rate
    assert 'data-slice-type="h100.1g.10gb" data-cents-per-hour="1000"' in html
    assert 'data-cents-per-hour="3000"' in html and 'data-rate-bp="7000"' in html
    code, html, _ = await site.call(user("ann"), "GET", "scheme/applications/new")
    assert output(html, "list") == "HK$0.00" and "function schemeCost" in html


# -- who sees what ---------------------------------------------------------------------------


async def test_each_page_for_its_role_and_403_or_404_for_others(site, ledger):
    app_id = under_review(site.wf, reviewers=("rev1",), title=HOSTILE)
    plain, sec = user("dee"), user("sec", SEC)
    rev1, rev2 = user("rev1", COM), user("rev2", COM)
    staff = user("boss", api.STAFF)
    for path, allowed, refused in (
        ("scheme/secretariat", [sec], [plain, rev1, staff]),
        ("scheme/reviews", [rev1, rev2], [plain, sec]),
        ("scheme/dashboard", [sec, rev1, staff], [plain]),
        ("scheme/projects", [plain, sec], []),
        ("scheme/reports", [plain, rev1], []),
        ("scheme/applications", [plain], []),
    ):
        for who in allowed:
            code, html, _ = await site.call(who, "GET", path)
            assert code == 200, (path, who["name"])
            page = Page(html)
            check_accessible(page)
            assert "<script>alert" not in html
        for who in refused:
            code, html, _ = await site.call(who, "GET", path)
            assert code == 403 and "This page is for" in html, (path, who["name"])
    for who, code in ((user("ann"), 200), (sec, 200), (rev1, 200), (staff, 200)):
        got, html, _ = await site.call(who, "GET", f"scheme/applications/{app_id}")
        assert got == code
        assert HOSTILE in Page(html).text and "<script>alert" not in html
    for who in (plain, rev2, user("bo")):  # bo is on the team, not the applicant
        got, html, _ = await site.call(who, "GET", f"scheme/applications/{app_id}")
        assert got == 404 and f"There is no application {app_id}" in html
    got, _, _ = await site.call(sec, "GET", "scheme/applications/99999999999999")
    assert got == 404
    code, html, _ = await site.call(sec, "GET", "scheme/secretariat")
    rows = Page(html).table("Under review").rows
    assert rows[1][0] == str(app_id) and rows[1][5] == "complete" and rows[1][6] == "rev1"
    code, html, _ = await site.call(staff, "GET", "scheme/dashboard")
    assert 'href="/services/quota/api/scheme/dashboard.csv"' in html
    statuses = Page(html).table("Applications of s by status")
    assert statuses.rows[0][1:3] == ["submitted", "under review"]
    assert statuses.rows[1][:3] == ["University", "0", "1"] and statuses.rows[-1][2] == "1"


async def test_a_reviewer_scores_or_declares_a_conflict_and_loses_the_application(site, ledger):
    app_id = under_review(site.wf, reviewers=("rev1", "rev2"))
    rev1, rev2, sec = user("rev1", COM), user("rev2", COM), user("sec", SEC)
    path = f"scheme/applications/{app_id}"
    code, html, _ = await site.call(rev1, "GET", path)
    check_accessible(Page(html))
    form = {"action": "score", "score-alignment": "8", "comment-alignment": HOSTILE}
    code, html, _ = await site.call(rev1, "POST", path, form)  # compute is not scored
    assert code == 400 and "Score every criterion; missing: compute." in html
    assert 'option value="8" selected' in html and "&lt;script&gt;" in html
    code, _, where = await site.call(rev1, "POST", path, {**form, "score-compute": "6"})
    assert code == 303 and where.endswith("?done=scored")
    code, html, _ = await site.call(sec, "GET", path)
    assert Page(html).table("Scores").rows[1][-1] == "72"  # 60% x 8 + 40% x 6
    code, _, where = await site.call(rev2, "POST", path, {"action": "conflict", "note": "my PhD"})
    assert code == 303 and where.endswith("scheme/reviews?done=conflict")
    code, html, _ = await site.call(rev2, "GET", "scheme/reviews?done=conflict")
    assert "No application is assigned to you." in html and "Your conflict" in html
    assert (await site.call(rev2, "GET", path))[0] == 404
    code, html, _ = await site.call(sec, "GET", path)
    assert "declared" in Page(html).table("Reviewers").rows[2][2]


async def test_the_secretariat_decides_and_the_pi_asks_for_a_top_up(site, ledger):
    app_id = under_review(site.wf, reviewers=("rev1",))
    sec, ann = user("sec", SEC), user("ann")
    path = f"scheme/applications/{app_id}"
    decision = {
        "action": "decide",
        "outcome": "approved_with_changes",
        "amount": "500",
        "rate": "70",
        "slice_type": "h100.1g.10gb",
        "gpu_hours": "80",
        "terms": HOSTILE,
        "reasons": "",
        "slug": "fold",
    }
    code, html, _ = await site.call(sec, "POST", path, decision)
    assert code == 400 and "Give the reasons for a rejection or for the changes." in html
    assert 'value="approved_with_changes" checked' in html
    assert 'value="500"' in html and 'value="80"' in html and 'value="fold"' in html
    with ledger.session() as db:
        assert db.scalar(select(Project).where(Project.slug == "fold")) is None
    code, _, where = await site.call(sec, "POST", path, {**decision, "reasons": "Less compute."})
    assert code == 303 and where.endswith("?done=decided")
    code, html, _ = await site.call(ann, "GET", path)
    assert "approved with changes" in html and 'id="project">fold<' in html
    assert "HK$500.00" in html and "<script>alert" not in html
    code, html, _ = await site.call(ann, "GET", "scheme/projects")
    check_accessible(Page(html))
    assert Page(html).table("Your projects as PI").rows[1][0].startswith("fold")
    ask = {"project": "fold", "kind": "top_up", "amount": "lots", "justification": "More."}
    code, html, _ = await site.call(ann, "POST", "scheme/projects", ask)
    assert code == 400 and "The top-up is an amount in HK$" in html and 'value="lots"' in html
    code, _, where = await site.call(ann, "POST", "scheme/projects", {**ask, "amount": "200"})
    assert code == 303 and where.endswith("?done=change")
    with ledger.session() as db:
        change = db.scalar(select(ChangeRequest.id))
    code, html, _ = await site.call(sec, "GET", "scheme/secretariat")
    assert f'id="approve-{change}"' in html
    form = {"change": str(change), "decision": "approve", "note": "Fine."}
    code, _, where = await site.call(sec, "POST", "scheme/secretariat", form)
    assert code == 303 and where.endswith("?done=change-decided")
    assert ledger.balance("fold", NOW).grants_cents == 700_00
    assert (await site.call(ann, "POST", "scheme/secretariat", form))[0] == 403


async def test_a_pi_writes_the_progress_report_that_others_cannot_see(site, ledger):
    site.wf.decide("sec", under_review(site.wf), "approved", NOW, slug="fold")
    (report,) = site.wf.open_due_reports(T0 + 120 * DAY)
    ann, path = user("ann"), f"scheme/reports/{report.id}"
    code, html, _ = await site.call(ann, "GET", path)
    assert code == 200 and 'id="report-form"' in html
    check_accessible(Page(html))
    code, html, _ = await site.call(ann, "POST", path, {"narrative": "  "})
    assert code == 400 and "Write the narrative" in html
    code, _, where = await site.call(ann, "POST", path, {"narrative": HOSTILE})
    assert code == 303 and where.endswith("?done=report")
    code, html, _ = await site.call(user("rev1", COM), "GET", path)
    assert code == 200 and HOSTILE in Page(html).text and "<script>alert" not in html
    assert (await site.call(user("dee"), "GET", path))[0] == 404
