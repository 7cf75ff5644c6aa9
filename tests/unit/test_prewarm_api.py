"""Pre-warming through the quota service's API, in-process: the service's routes (`make_app`)
on a real SQLite ledger, served by tornado on a local port, with the seam for the hub's OAuth
check (`as_caller`, as in test_quota_groups_api.py) and a fake of the one hub call a refused
claim makes (`DELETE /hub/api/users/{name}/server`, on a local port, recording what it was
asked). The spawners hold a pre-warmed server with `prewarm_window`; the student's server claims
it with the student's identity; the classroom service reads the plan and releases the
unclaimed; nobody else may do either."""

from datetime import timedelta

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.quota import api
from slicehub.quota.prewarm_api import CLASSES
from slicehub.quota.service import make_app
from tests.unit.quota_http import call as call_api
from tests.unit.quota_http import serve
from tests.unit.rules_ledger import T0, H, project

M = timedelta(minutes=1)
START, END = T0 + 2 * H, T0 + 4 * H
SPAWNERS = {"kind": "service", "name": "slicehub-spawner", "scopes": [api.HOLDS]}
CLASSROOM = {"kind": "service", "name": "classroom", "scopes": [CLASSES]}


def user(name: str) -> dict:
    return {"kind": "user", "name": name, "scopes": ["access:services!service=quota"]}


class FakeHubStop(web.RequestHandler):
    """A fake of the hub's `DELETE /hub/api/users/{name}/server`: records the name."""

    def initialize(self, stopped):
        self.stopped = stopped

    def delete(self, name):
        self.stopped.append(name)
        self.set_status(204)


@pytest.fixture
async def service(ledger, monkeypatch):
    """(call, who, now, stopped): `await call(method, path, body)` as `who["is"]` at
    `now["at"]`; `stopped` lists the servers the fake hub was asked to stop."""
    at, who, stopped = {"at": START - 5 * M}, {"is": SPAWNERS}, []
    monkeypatch.setattr(clock, "utcnow", lambda: at["at"])
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: who["is"])
    hub_sock, hub_port = bind_unused_port()
    hub = HTTPServer(
        web.Application([(r"/hub/api/users/([^/]+)/server", FakeHubStop, {"stopped": stopped})])
    )
    hub.add_sockets([hub_sock])
    app = make_app(ledger, hub=HubClient(f"http://127.0.0.1:{hub_port}/hub/api", "t"))
    server, port = serve(app)

    async def call(method: str, path: str, body=None) -> tuple[int, dict]:
        return await call_api(port, method, path, body)

    yield call, who, at, stopped
    server.stop()
    hub.stop()
    await app.settings["holds"].close()


@pytest.fixture
def window(ledger) -> int:
    project(ledger, "ml101", is_course=True, member_cap_cents=50_00)
    for name in ("stu1", "stu2"):
        ledger.add_member("staff", "ml101", name, T0, role="student")
    w = ledger.add_class_window("staff", "ml101", START, END, T0)
    ledger.set_prewarm("staff", "ml101", T0, 10, 15, slice_type="h100.1g.10gb")
    return w.id


def prewarm_body(who: str, window: int, **more) -> dict:
    body = {
        "project": "ml101",
        "user": who,
        "slice_type": "h100.1g.10gb",
        "duration_minutes": 120,
        "prewarm_window": window,
    }
    return {**body, **more}


async def test_a_pre_warmed_server_is_claimed_by_its_student_only(service, window):
    call, who, now, stopped = service
    status, held = await call("POST", "holds", prewarm_body("stu1", window))
    assert status == 201, held
    assert (held["prewarm_window"], held["end_at"]) == (window, END.isoformat())
    for bad in ("x", True, 1.5):
        status, answer = await call("POST", "holds", prewarm_body("stu2", bad))
        assert (status, answer["message"]) == (
            400,
            "prewarm_window must be a class window's id (a number).",
        )
    who["is"] = user("stu1")
    status, early = await call("POST", f"sessions/{held['id']}/claim")
    assert status == 425 and "Your class starts at" in early["message"]
    now["at"] = START + 2 * M
    who["is"] = user("stu2")  # another student's token cannot take it
    status, answer = await call("POST", f"sessions/{held['id']}/claim")
    assert status == 404, answer
    who["is"] = user("stu1")
    status, mine = await call("POST", f"sessions/{held['id']}/claim")
    assert status == 200, mine
    assert (mine["user"], mine["project"], mine["started_at"]) == (
        "stu1",
        "ml101",
        now["at"].isoformat(),
    )
    # the server's spawner and kernels ask by the pre-warmed id: they find the student's
    who["is"] = SPAWNERS
    status, listed = await call("GET", "sessions?user=stu1&active=1")
    assert [(s["id"], s["claimed_from"]) for s in listed["sessions"]] == [(mine["id"], held["id"])]
    assert stopped == []


async def test_a_claim_the_student_cannot_pay_stops_the_server(service, window, ledger):
    call, who, now, stopped = service
    ledger.add_member("staff", "ml101", "stu3", T0, role="student", cap_cents=1)
    status, held = await call("POST", "holds", prewarm_body("stu3", window))
    assert status == 201, held
    now["at"] = START
    who["is"] = user("stu3")
    status, refused = await call("POST", f"sessions/{held['id']}/claim")
    assert status == 402 and "cap in ml101" in refused["message"]
    assert stopped == ["stu3"]


async def test_the_classroom_service_reads_the_plan_and_releases_the_unclaimed(service, window):
    call, who, now, _ = service
    status, held = await call("POST", "holds", prewarm_body("stu2", window))
    assert status == 201
    for caller in (user("stu2"), SPAWNERS):
        who["is"] = caller
        assert (await call("GET", "classes"))[0] == 403
        assert (await call("POST", f"sessions/{held['id']}/unclaimed"))[0] == 403
    who["is"] = CLASSROOM
    now["at"] = START + 15 * M
    status, plan = await call("GET", "classes")
    assert status == 200
    (c,) = plan["classes"]
    assert (c["course"], c["phase"], c["students"], c["stop_unclaimed"]) == (
        "ml101",
        "closing",
        ["stu1", "stu2"],
        True,
    )
    assert c["servers"] == [
        {
            "user": "stu2",
            "server_name": "",
            "session": held["id"],
            "state": "pre-warmed",
            "stop_reason": "",
        }
    ]
    status, gone = await call("POST", f"sessions/{held['id']}/unclaimed")
    assert (status, gone["stop_reason"]) == (200, "unclaimed")
    assert gone["charged_list_cents"] == 1000 * 20 // 60  # held 5 min early, + 15 min of class
