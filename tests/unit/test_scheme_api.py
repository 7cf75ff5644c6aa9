"""The scheme's REST API (slicehub.quota.scheme.api), in-process: the quota service's routes
(`make_app`) on a real SQLite ledger, served by tornado on a local port.

The seams for the hub and the clock are test_quota_groups_api.py's fixtures: `as_caller`
answers the hub's OAuth check with the identity and scopes a test sets, `fake_hub` is a fake of
the hub's `GET /hub/api/users/{name}` (200 for its users, 404 for others, or `refuse`'s
status) counting what it was asked, and `now` is the service's clock (from T0 + 1 h). The
scheme is tests/unit/scheme_ledger.py's."""

import asyncio
import csv
import io
import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.quota import api
from slicehub.quota.hub_users import HubUnavailable, HubUsers
from slicehub.quota.models import AuditEntry, Grant
from slicehub.quota.scheme.api_base import COMMITTEE_SCOPE, SECRETARIAT_SCOPE
from slicehub.quota.scheme.models import Application, ChangeRequest, ProgressReport
from slicehub.quota.scheme.outbox import OutboxMail
from slicehub.quota.scheme.report_loop import ReportOpener
from slicehub.quota.service import make_app
from tests.unit.rules_ledger import T0, H, project
from tests.unit.scheme_ledger import DAY, HUB_USERS, fields, known_users, workflow
from tests.unit.test_quota_groups_api import as_caller, fake_hub, now  # noqa: F401 (fixtures)

SLUG = "protein-folding-for-hong-kong"


def caller(name: str, *scopes: str) -> dict:
    return {"kind": "user", "name": name, "scopes": ["access:services!service=quota", *scopes]}


ANN = caller("ann")  # the PI
BO = caller("bo")  # her team member
DEE = caller("dee")  # another hub user
SEC = caller("sec", SECRETARIAT_SCOPE)
REV1, REV2, REV3 = (caller(f"rev{i}", COMMITTEE_SCOPE) for i in (1, 2, 3))
STAFF = caller("staff", api.STAFF)

FORM = {
    "scheme": "s",
    "email": "ann@uni.hk",
    "organisation": "HKU",
    "org_type": "university",
    "title": "Protein folding for Hong Kong",
    "abstract": "We fold proteins.",
    "ai_area": "biology",
    "period_start": T0.date().isoformat(),
    "period_end": (T0 + 90 * DAY).date().isoformat(),
    "members": [{"username": "bo", "email": "bo@uni.hk"}],
    "requests": [
        {"slice_type": "h100.1g.10gb", "gpu_hours": 100, "justification": "7B model, bf16"}
    ],
}


@pytest.fixture
def wf(ledger):
    return workflow(ledger)  # criteria alignment 60%, compute 40%; a fund of HK$10 million


@pytest.fixture
async def call(ledger, wf, as_caller, fake_hub, now):  # noqa: F811 (the imported fixtures)
    """`await call(who, method, path, body=None)`: (status, JSON answer, or the text of a CSV)
    of `api/scheme/{path}` as caller `who`; `call.now` is the service's clock, `call.hub` the
    fake hub, whose users are the scheme's (tests/unit/scheme_ledger.py), in no group."""
    fake_hub["groups"].update({name: [] for name in HUB_USERS})
    app = make_app(ledger, hub=HubClient(fake_hub["api_url"], "fake-service-token"))
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])

    async def fetch(who: dict, method: str, path: str, body=None, raw: bytes | None = None):
        as_caller["is"] = who
        url = f"http://127.0.0.1:{port}/services/quota/api/{path}"
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        r = await AsyncHTTPClient().fetch(
            HTTPRequest(url, method=method, body=None if method == "GET" else data),
            raise_error=False,
        )
        if r.headers.get("Content-Type", "").startswith("text/csv"):
            return r.code, r.body.decode()
        return r.code, json.loads(r.body)

    fetch.now, fetch.hub = now, fake_hub
    yield fetch
    server.stop()
    await app.settings["holds"].close()


def written(ledger) -> tuple[int, ...]:
    """What the workflow writes, counted: applications, audit entries, mails, change requests."""
    with ledger.session() as db:
        return tuple(
            db.scalar(select(func.count()).select_from(t))
            for t in (Application, AuditEntry, OutboxMail, ChangeRequest, Grant)
        )


def s(path: str) -> str:
    return f"scheme/{path}"


async def under_review_by_api(call) -> int:
    status, app = await call(ANN, "POST", s("applications"), FORM)
    assert status == 201, app
    status, _ = await call(ANN, "POST", s(f"applications/{app['id']}/submit"))
    assert status == 200
    status, answer = await call(
        SEC, "POST", s(f"applications/{app['id']}/review"), {"reviewers": ["rev1", "rev2"]}
    )
    assert status == 200, answer
    return app["id"]


# -- the whole journey --------------------------------------------------------------------


async def test_the_whole_journey_through_the_api(call, ledger, wf):
    at, hub = call.now, call.hub
    # the form's live preview: 100 GPU-hours at HK$10.00, 70% subsidy
    status, cost = await call(ANN, "GET", s("cost?rate_bp=7000&line=h100.1g.10gb:100"))
    assert status == 200, cost
    assert (cost["list_cents"], cost["subsidy_cents"], cost["copay_cents"]) == (
        100_000,
        70_000,
        30_000,
    )
    status, schemes = await call(ANN, "GET", s("schemes"))
    assert [c["key"] for c in schemes["schemes"][0]["criteria"]] == ["alignment", "compute"]

    # the PI saves a draft, edits it, submits it
    status, app = await call(ANN, "POST", s("applications"), {**FORM, "title": "Draft"})
    assert status == 201, app
    assert (app["status"], app["applicant"], app["rate_bp"]) == ("draft", "ann", 7000)
    assert [(m["username"], m["role"]) for m in app["members"]] == [("ann", "pi"), ("bo", "member")]
    assert hub["asked"] == ["bo"]  # the caller signed in through the hub; bo is asked
    app_id = app["id"]
    status, app = await call(
        ANN, "PUT", s(f"applications/{app_id}"), {k: v for k, v in FORM.items() if k != "scheme"}
    )
    assert (status, app["title"]) == (200, FORM["title"])
    status, app = await call(ANN, "POST", s(f"applications/{app_id}/submit"))
    assert (status, app["status"], app["cost"]["subsidy_cents"]) == (200, "submitted", 70_000)
    status, answer = await call(ANN, "PUT", s(f"applications/{app_id}"), {"title": "Later"})
    assert status == 409 and "can no longer be edited" in answer["message"]

    # the secretariat sees it among the submitted ones and starts the review with two reviewers
    status, listed = await call(SEC, "GET", s("applications?status=submitted"))
    assert [a["id"] for a in listed["applications"]] == [app_id]
    status, app = await call(
        SEC, "POST", s(f"applications/{app_id}/review"), {"reviewers": ["rev1", "rev2"]}
    )
    assert (status, app["status"]) == (200, "under_review")
    assert [r["reviewer"] for r in app["reviewers"]] == ["rev1", "rev2"]

    # rev1 declares a conflict and no longer sees it
    assert (await call(REV1, "GET", s(f"applications/{app_id}")))[0] == 200
    status, answer = await call(
        REV1, "POST", s(f"applications/{app_id}/conflict"), {"note": "Co-author of the PI."}
    )
    assert (status, answer["conflict"]) == (200, True)
    for method, path, body in (
        ("GET", f"applications/{app_id}", None),
        ("POST", f"applications/{app_id}/scores", {"scores": {"alignment": 9, "compute": 9}}),
        ("POST", f"applications/{app_id}/conflict", {"note": "again"}),
    ):
        status, answer = await call(REV1, method, s(path), body)
        assert status == 404, (path, answer)
    assert (await call(REV1, "GET", s("applications")))[1] == {"applications": []}

    # rev2 scores every criterion and sees only their own scores
    status, app = await call(
        REV2,
        "POST",
        s(f"applications/{app_id}/scores"),
        {
            "scores": {"alignment": 8, "compute": 6},
            "comments": {"alignment": "Strong fit."},
        },
    )
    assert status == 200, app
    assert app["scores"] == {
        "rev2": {
            "scores": {
                "alignment": {"score": 8, "comment": "Strong fit."},
                "compute": {"score": 6, "comment": ""},
            },
            "weighted": 72,  # (60 x 8 + 40 x 6) / 10
        }
    }
    assert [r["reviewer"] for r in app["reviewers"]] == ["rev2"]
    status, app = await call(SEC, "GET", s(f"applications/{app_id}"))
    assert list(app["scores"]) == ["rev2"]
    assert [(r["reviewer"], r["conflict"]) for r in app["reviewers"]] == [
        ("rev1", True),
        ("rev2", False),
    ]
    status, app = await call(ANN, "GET", s(f"applications/{app_id}"))
    assert (app["scores"], app["reviewers"]) == ({}, [])  # the applicant sees no review

    # the secretariat approves with changes: half the hours at 90%
    at["at"] = T0 + 2 * DAY
    status, app = await call(
        SEC,
        "POST",
        s(f"applications/{app_id}/decision"),
        {
            "outcome": "approved_with_changes",
            "rate_bp": 9000,
            "compute": {"h100.1g.10gb": 50},
            "reasons": "Half the hours: the schedule is long.",
            "terms": "Acknowledge the scheme.",
        },
    )
    assert status == 200, app
    assert (app["status"], app["project"]) == ("approved_with_changes", SLUG)
    assert (app["decision"]["amount_cents"], app["decision"]["rate_bp"]) == (45_000, 9000)

    # the PI sees the project, with its own rate, through the service's API
    status, projects = await call(ANN, "GET", "projects")
    (p,) = projects["projects"]
    assert (p["project"], p["subsidy_rate_bp"]) == (SLUG, 9000)

    # a top-up, asked by the PI and approved by the secretariat
    status, change = await call(
        ANN,
        "POST",
        s("changes"),
        {
            "project": SLUG,
            "kind": "top_up",
            "amount_cents": 10_000,
            "justification": "More epochs.",
        },
    )
    assert (status, change["status"], change["amount_cents"]) == (201, "pending", 10_000)
    status, listed = await call(SEC, "GET", s("changes?status=pending"))
    assert [c["id"] for c in listed["changes"]] == [change["id"]]
    status, decided = await call(
        SEC,
        "POST",
        s(f"changes/{change['id']}/decision"),
        {
            "outcome": "approved",
            "note": "Fine.",
        },
    )
    assert (status, decided["status"], decided["project"]) == (200, "approved", SLUG)
    assert ledger.balance(SLUG, at["at"]).grants_cents == 55_000

    # the first quarter ends: its report opens, the PI writes the narrative
    at["at"] = T0 + 92 * DAY
    wf.open_due_reports(at["at"])  # the service's loop (ReportOpener), one pass by hand
    status, reports = await call(ANN, "GET", s("reports"))
    (report,) = reports["reports"]
    assert (report["project"], report["status"], report["overdue"]) == (SLUG, "due", False)
    status, report = await call(
        ANN, "POST", s(f"reports/{report['id']}"), {"narrative": "We folded 12 proteins."}
    )
    assert (status, report["status"], report["submitted_by"]) == (200, "submitted", "ann")
    status, reports = await call(REV2, "GET", s("reports"))  # the committee sees reports
    assert [r["narrative"] for r in reports["reports"]] == ["We folded 12 proteins."]
    with ledger.session() as db:
        subjects = db.scalars(select(OutboxMail.subject).order_by(OutboxMail.id)).all()
    assert any("approved with changes" in subject for subject in subjects)


# -- who sees what ------------------------------------------------------------------------


@pytest.fixture
async def cast(call, ledger, wf):
    """ann's draft, ann's application under review by rev1 and rev2, an approved project of
    hers with a pending change request and a due report: their ids."""
    status, draft = await call(ANN, "POST", s("applications"), {"scheme": "s", "title": "D"})
    assert status == 201
    reviewed = await under_review_by_api(call)
    decided = await under_review_by_api(call)
    await call(SEC, "POST", s(f"applications/{decided}/decision"), {"outcome": "approved"})
    _, change = await call(
        ANN,
        "POST",
        s("changes"),
        {
            "project": SLUG,
            "kind": "extension",
            "valid_until": (T0 + 200 * DAY).date().isoformat(),
            "justification": "Longer.",
        },
    )
    (report,) = wf.open_due_reports(T0 + 92 * DAY)
    return {
        "draft": draft["id"],
        "reviewed": reviewed,
        "decided": decided,
        "change": change["id"],
        "report": report.id,
    }


def application_calls(app_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"applications/{app_id}", None),
        ("PUT", f"applications/{app_id}", {"title": "Mine now"}),
        ("POST", f"applications/{app_id}/submit", None),
        ("POST", f"applications/{app_id}/withdraw", None),
    ]


ROLE_CALLS = [
    ("POST", "applications/{id}/review", {"reviewers": ["rev3"]}, SECRETARIAT_SCOPE),
    ("POST", "applications/{id}/reviewers", {"reviewers": ["rev3"]}, SECRETARIAT_SCOPE),
    (
        "POST",
        "applications/{id}/decision",
        {"outcome": "rejected", "reasons": "x"},
        SECRETARIAT_SCOPE,
    ),
    ("POST", "applications/{id}/conflict", {"note": "x"}, COMMITTEE_SCOPE),
    ("POST", "applications/{id}/scores", {"scores": {"alignment": 1}}, COMMITTEE_SCOPE),
]


async def test_another_user_gets_404_on_everything_theirs_and_403_on_role_endpoints(
    call, cast, ledger
):
    before = written(ledger)
    for app_id in (cast["draft"], cast["reviewed"], 9999):
        for method, path, body in application_calls(app_id):
            status, answer = await call(DEE, method, s(path), body)
            assert status == 404, (method, path, answer)
            assert answer["message"].startswith(f"There is no application {app_id}")
        for method, path, body, scope in ROLE_CALLS:
            status, answer = await call(DEE, method, s(path.format(id=app_id)), body)
            assert (status, answer["message"]) == (403, f"This needs the {scope} permission.")
    status, answer = await call(
        DEE, "POST", s(f"changes/{cast['change']}/decision"), {"outcome": "approved"}
    )
    assert status == 403
    status, answer = await call(
        DEE,
        "POST",
        s("changes"),
        {
            "project": SLUG,
            "kind": "top_up",
            "amount_cents": 100,
            "justification": "Mine.",
        },
    )
    assert (status, answer["message"]) == (404, f"There is no project {SLUG!r} of yours.")
    status, answer = await call(DEE, "POST", s(f"reports/{cast['report']}"), {"narrative": "x"})
    assert status == 404
    for listing, key in (
        ("applications", "applications"),
        ("changes", "changes"),
        ("reports", "reports"),
    ):
        assert (await call(DEE, "GET", s(listing)))[1] == {key: []}
    for path in ("dashboard", "dashboard.csv"):
        assert (await call(DEE, "GET", s(path)))[0] == 403
    assert written(ledger) == before


async def test_a_reviewer_sees_only_what_is_assigned_and_the_secretariat_no_drafts(call, cast):
    # rev3 is on the committee but not assigned: 404 everywhere on it
    for method, path, body, _ in ROLE_CALLS[3:]:
        status, _ = await call(REV3, method, s(path.format(id=cast["reviewed"])), body)
        assert status == 404
    assert (await call(REV3, "GET", s(f"applications/{cast['reviewed']}")))[0] == 404
    status, listed = await call(REV1, "GET", s("applications"))
    assert [a["id"] for a in listed["applications"]] == [cast["reviewed"], cast["decided"]]
    # a draft is its applicant's alone, the secretariat's verbs included
    for method, path, body, _ in ROLE_CALLS[:3]:
        status, _ = await call(SEC, method, s(path.format(id=cast["draft"])), body)
        assert status == 404
    status, listed = await call(SEC, "GET", s("applications"))
    assert cast["draft"] not in [a["id"] for a in listed["applications"]]
    # the applicant may not decide their own application
    status, _ = await call(
        ANN, "POST", s(f"applications/{cast['reviewed']}/decision"), {"outcome": "approved"}
    )
    assert status == 403
    # staff and the committee see the dashboard; the applicant does not
    for who in (STAFF, SEC, REV1):
        assert (await call(who, "GET", s("dashboard")))[0] == 200
    assert (await call(ANN, "GET", s("dashboard")))[0] == 403


# -- bad input ----------------------------------------------------------------------------


BAD_DRAFTS = [
    ({k: v for k, v in FORM.items() if k != "scheme"}, "scheme must name the scheme"),
    ({**FORM, "colour": "red"}, "Unknown field 'colour'"),
    ({**FORM, "title": None}, "title must be text."),
    ({**FORM, "abstract": "x" * 5001}, "The abstract is 5,001 characters long; at most 5,000"),
    ({**FORM, "rate_bp": 9500}, "more than 0% and at most 90%"),
    ({**FORM, "rate_bp": 0}, "more than 0% and at most 90%"),
    ({**FORM, "period_start": "2026/11/02"}, "period_start must be a date, YYYY-MM-DD."),
    ({**FORM, "org_type": "charity"}, "organisation type 'charity' is unknown"),
    ({**FORM, "title": "a\x00b"}, "contains control characters"),
    ({**FORM, "members": ["bo"]}, "Entry 1 of members must be an object."),
    ({**FORM, "members": [{"username": "zed"}]}, "Not a hub user: zed"),
    ({**FORM, "members": [{"username": "bo", "role": "pi"}]}, "unknown field 'role'"),
    ({**FORM, "members": [{"username": "Bad Name!"}]}, "is not a hub user name"),
    (
        {**FORM, "requests": [{"slice_type": "h100.1g.10gb", "gpu_hours": 0}]},
        "must be from 1 to 100,000",
    ),
    (
        {**FORM, "requests": [{"slice_type": "h100.1g.10gb", "gpu_hours": 100_001}]},
        "must be from 1 to 100,000",
    ),
    (
        {**FORM, "requests": [{"slice_type": "h100.1g.10gb", "gpu_hours": 1.5}]},
        "must be a whole number",
    ),
    ({**FORM, "requests": [{"slice_type": "a100.7g", "gpu_hours": 5}]}, "has no list price"),
]


@pytest.mark.parametrize(("body", "sentence"), BAD_DRAFTS)
async def test_a_bad_draft_is_a_400_with_a_sentence_and_nothing_written(
    call, ledger, body, sentence
):
    before = written(ledger)
    status, answer = await call(ANN, "POST", s("applications"), body)
    assert status == 400, answer
    assert sentence in answer["message"]
    assert written(ledger) == before


async def test_not_json_and_a_hub_that_cannot_say_are_refused_with_nothing_written(call, ledger):
    before = written(ledger)
    status, answer = await call(ANN, "POST", s("applications"), raw=b"{title:")
    assert (status, answer["message"]) == (400, "The request body is not JSON.")
    call.hub["refuse"] = 500
    status, answer = await call(ANN, "POST", s("applications"), FORM)
    assert status == 503
    assert answer["message"].startswith("The hub did not answer whether bo is a hub user")
    assert written(ledger) == before


async def test_hostile_text_is_stored_as_typed(call):
    hostile = {
        **FORM,
        "title": "<script>alert('x')</script>",
        "organisation": '=HYPERLINK("http://evil","click")',
        "abstract": "+1 & <b>bold</b>\n@SUM(A1)",
    }
    status, app = await call(ANN, "POST", s("applications"), hostile)
    assert status == 201, app
    status, app = await call(ANN, "GET", s(f"applications/{app['id']}"))
    for key in ("title", "organisation", "abstract"):
        assert app[key] == hostile[key]


async def test_an_incomplete_draft_is_not_submitted(call, ledger):
    status, app = await call(ANN, "POST", s("applications"), {"scheme": "s", "title": "T"})
    before = written(ledger)
    status, answer = await call(ANN, "POST", s(f"applications/{app['id']}/submit"))
    assert status == 400
    assert answer["message"].startswith("The application is not complete: it lacks contact e-mail")
    assert written(ledger) == before
    assert (await call(ANN, "GET", s(f"applications/{app['id']}")))[1]["status"] == "draft"


async def test_bad_review_scores_decisions_and_changes_write_nothing(call, ledger):
    app_id = await under_review_by_api(call)
    before = written(ledger)
    bad = [
        (SEC, f"applications/{app_id}/reviewers", {"reviewers": ["ghost"]}, 400, "Not a hub user"),
        (SEC, f"applications/{app_id}/reviewers", {"reviewers": ["bo"]}, 400, "on the team"),
        (SEC, f"applications/{app_id}/reviewers", {}, 400, "reviewers must list"),
        (
            REV2,
            f"applications/{app_id}/scores",
            {"scores": {"alignment": 11, "compute": 1}},
            400,
            "from 0 to 10",
        ),
        (
            REV2,
            f"applications/{app_id}/scores",
            {"scores": {"alignment": 5}},
            400,
            "missing: compute",
        ),
        (REV2, f"applications/{app_id}/scores", {"scores": [5]}, 400, "scores must be an object"),
        (SEC, f"applications/{app_id}/decision", {"outcome": "maybe"}, 400, "'maybe' is unknown"),
        (
            SEC,
            f"applications/{app_id}/decision",
            {"outcome": "approved", "amount_cents": -5},
            400,
            "must be more than zero",
        ),
        (SEC, f"applications/{app_id}/decision", {"outcome": "rejected"}, 400, "Give the reasons"),
        (
            SEC,
            f"applications/{app_id}/decision",
            {"outcome": "approved", "amount_cents": 10**12 + 1},
            409,
            "would over-commit",
        ),
    ]
    for who, path, body, code, sentence in bad:
        status, answer = await call(who, "POST", s(path), body)
        assert (status, sentence in answer["message"]) == (code, True), (path, body, answer)
    assert written(ledger) == before
    await call(SEC, "POST", s(f"applications/{app_id}/decision"), {"outcome": "approved"})
    before = written(ledger)
    for body, sentence in (
        (
            {"project": SLUG, "kind": "top_up", "amount_cents": 0, "justification": "x"},
            "must be more than zero",
        ),
        ({"project": SLUG, "kind": "gift", "justification": "x"}, "kind must be one of"),
        (
            {
                "project": SLUG,
                "kind": "members",
                "add": [{"username": "zed"}],
                "justification": "x",
            },
            "zed: not hub users",
        ),
        ({"project": SLUG, "kind": "top_up", "amount_cents": 5}, "Say why"),
    ):
        status, answer = await call(ANN, "POST", s("changes"), body)
        assert (status, sentence in answer["message"]) == (400, True), (body, answer)
    status, answer = await call(ANN, "GET", s("cost?rate_bp=7000&line=h100.1g.10gb:0"))
    assert (status, "from 1 to 100,000" in answer["message"]) == (400, True)
    status, answer = await call(ANN, "GET", s("reports?overdue=yes"))
    assert status == 400
    assert written(ledger) == before


# -- the dashboard ------------------------------------------------------------------------


async def test_the_dashboard_counts_statuses_decision_times_and_the_fund(call, ledger, wf):
    at = call.now
    ledger.add_scheme("staff", '=HYPERLINK("http://evil")', 7000, 50_000_00, T0)
    project(ledger, "staff-made", grant=100_00)  # no application: under no_application
    approved = wf.create_draft("ann", "s", fields(), known_users, T0)
    wf.submit("ann", approved.id, T0)
    wf.start_review("sec", approved.id, ["rev1"], T0)
    wf.decide("sec", approved.id, "approved", T0 + 2 * DAY)  # HK$700.00, 2 days
    rejected = wf.create_draft("cy", "s", fields(org_type="company", members=[]), known_users, T0)
    wf.submit("cy", rejected.id, T0)
    wf.start_review("sec", rejected.id, ["rev1"], T0)
    wf.decide("sec", rejected.id, "rejected", T0 + 10 * DAY, reasons="Out of scope.")
    gone = wf.create_draft("dee", "s", fields(members=[]), known_users, T0)
    wf.withdraw("dee", gone.id, T0)
    wf.create_draft("bo", "s", fields(members=[]), known_users, T0)  # a draft: not counted
    # an hour on the approved project: HK$10.00 at list, HK$7.00 of subsidy disbursed
    ledger.open_session(SLUG, "bo", "", "h100.1g.10gb", H, T0 + 3 * DAY)
    ledger.meter(T0 + 3 * DAY + H)
    at["at"] = T0 + 3 * DAY + H

    status, d = await call(STAFF, "GET", s("dashboard"))
    assert status == 200, d
    assert d["applications"] == {
        "submitted": 0,
        "under_review": 0,
        "approved": 1,
        "approved_with_changes": 0,
        "rejected": 1,
        "withdrawn": 1,
    }
    assert d["decisions"] == {"count": 2, "median_days": 6.0, "p90_days": 10.0}
    hostile, main = d["schemes"]
    assert (hostile["name"], hostile["left_cents"]) == ('=HYPERLINK("http://evil")', 50_000_00)
    assert main["name"] == "s"
    money = {k: main[k] for k in ("fund_cents", "approved_cents", "committed_cents")}
    assert money == {"fund_cents": 10**9, "approved_cents": 700_00, "committed_cents": 800_00}
    assert (main["disbursed_cents"], main["left_cents"]) == (7_00, 10**9 - 800_00)
    uni, company = main["by_org_type"]["university"], main["by_org_type"]["company"]
    assert (uni["approved_cents"], uni["committed_cents"], uni["disbursed_cents"]) == (
        700_00,
        700_00,
        7_00,
    )
    assert uni["applications"]["withdrawn"] == 1 and uni["decisions"]["median_days"] == 2.0
    assert (company["applications"]["rejected"], company["committed_cents"]) == (1, 0)
    assert main["by_org_type"]["no_application"]["committed_cents"] == 100_00

    status, text = await call(SEC, "GET", s("dashboard.csv"))
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["scheme"] for r in rows} == {'\'=HYPERLINK("http://evil")', "s"}  # neutralised
    total = next(r for r in rows if r["scheme"] == "s" and r["org_type"] == "total")
    assert (total["approved"], total["rejected"], total["withdrawn"], total["decisions"]) == (
        "1",
        "1",
        "1",
        "2",
    )
    assert (total["median_decision_days"], total["p90_decision_days"]) == ("6.0", "10.0")
    assert (total["fund_hkd"], total["committed_hkd"], total["disbursed_hkd"]) == (
        "10000000.00",
        "800.00",
        "7.00",
    )
    assert total["left_hkd"] == "9999200.00"
    uni_row = next(r for r in rows if r["scheme"] == "s" and r["org_type"] == "university")
    assert (uni_row["approved_hkd"], uni_row["fund_hkd"], uni_row["left_hkd"]) == ("700.00", "", "")


# -- the hub's users and the report loop ---------------------------------------------------


async def test_hub_users_are_kept_a_while_and_strangers_asked_again(call):
    at, hub = call.now, call.hub
    users = HubUsers(HubClient(hub["api_url"], "fake-service-token"))
    assert await users.known(["bo", "zed"]) == {"bo"}
    assert await users.known(["bo", "zed"]) == {"bo"}
    assert sorted(hub["asked"]) == ["bo", "zed", "zed"]  # bo kept, zed asked again
    at["at"] += timedelta(minutes=6)
    hub["refuse"] = 403  # as a hub would without read:users:name
    with pytest.raises(HubUnavailable, match="whether bo is a hub user"):
        await users.known(["bo"])
    with pytest.raises(HubUnavailable):
        await HubUsers(None).known(["bo"])
    assert await HubUsers(None).known([]) == set()


async def test_the_report_loop_opens_due_reports_once_and_survives_a_bad_pass(
    ledger, caplog, monkeypatch
):
    project(ledger, "plain")  # valid 30 days: its one report period ends then
    monkeypatch.setattr(clock, "utcnow", lambda: T0 + 31 * DAY)
    opener = ReportOpener(ledger, interval=0.01)
    real = opener.workflow.open_due_reports
    passes = []

    def flaky(at):
        passes.append(at)
        if len(passes) == 1:
            raise RuntimeError("database away")
        return real(at)

    monkeypatch.setattr(opener.workflow, "open_due_reports", flaky)
    caplog.set_level(logging.INFO, "slicehub.quota")
    task = asyncio.create_task(opener.run())
    while len(passes) < 4:
        await asyncio.sleep(0.01)
    opener.stop()
    await asyncio.wait_for(task, 1)
    with ledger.session() as db:
        assert db.scalar(select(func.count()).select_from(ProgressReport)) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Opening due progress reports failed") for m in messages)
    assert "Opened 1 progress report(s) whose period ended" in messages
