"""A project's member group through the quota service's API, in-process: the service's routes
(`make_app`) on a real SQLite ledger, served by tornado on a local port.

Two seams stand in for the hub, each named: `as_caller` answers the hub's OAuth check
(`HubOAuthenticated.get_current_user`) with the identity a test sets (the spawners' service, a
user, staff), as test_quota_release.py does; `FakeHubUsers` is a fake of the one hub API call the
service makes for a user's groups (`GET /hub/api/users/{name}`), on a local port, counting what
it was asked. The spawners send a user's groups with a hold and with the form's project list; a
user's own requests make the service ask the hub, at most every 30 s, and only while some
project names a member group; when the hub cannot say, only member rows count."""

import json
import logging
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import func, select
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.common.quota_client import QuotaClient, group_names
from slicehub.quota import api
from slicehub.quota.hub_groups import UserGroups
from slicehub.quota.models import AuditEntry
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.service import make_app
from tests.unit.quota_http import call as call_api
from tests.unit.quota_http import serve
from tests.unit.rules_ledger import T0, H, project

SPAWNERS = {"kind": "service", "name": "slicehub-spawner", "scopes": [api.HOLDS]}
STAFF = {"kind": "user", "name": "staff", "scopes": [api.STAFF]}
NOW = T0 + H


def user(name: str) -> dict:
    return {"kind": "user", "name": name, "scopes": ["access:services!service=quota"]}


class FakeHubUsers(web.RequestHandler):
    """A fake of the hub's `GET /hub/api/users/{name}`: the groups in `self.groups`, or the
    status in `self.refuse`; every name it was asked for in `self.asked`."""

    def initialize(self, hub):
        self.hub = hub

    def get(self, name):
        self.hub["asked"].append(name)
        if self.hub["refuse"]:
            raise web.HTTPError(self.hub["refuse"])
        if name not in self.hub["groups"]:
            raise web.HTTPError(404)
        self.finish({"kind": "user", "name": name, "groups": self.hub["groups"][name]})


@pytest.fixture
def now(monkeypatch):
    """The service's clock, which a test moves: `now["at"] += timedelta(...)`."""
    at = {"at": NOW}
    monkeypatch.setattr(clock, "utcnow", lambda: at["at"])
    return at


@pytest.fixture
def as_caller(monkeypatch):
    """The seam for the hub's OAuth check: every request is `who["is"]` (the spawners first)."""
    who = {"is": SPAWNERS}
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: who["is"])
    return who


@pytest.fixture
async def fake_hub():
    """The fake hub API: {"groups": {user: [group, ...]}, "refuse": status or 0, "asked": []}."""
    hub = {"groups": {}, "refuse": 0, "asked": []}
    sock, port = bind_unused_port()
    server = HTTPServer(web.Application([(r"/hub/api/users/([^/]+)", FakeHubUsers, {"hub": hub})]))
    server.add_sockets([sock])
    hub["api_url"] = f"http://127.0.0.1:{port}/hub/api"
    yield hub
    server.stop()


@pytest.fixture
async def service(ledger, as_caller, fake_hub, now):
    """`await call(method, path, body=None)`: (status, answer) of the service's API."""
    app = make_app(ledger, hub=HubClient(fake_hub["api_url"], "fake-service-token"))
    server, port = serve(app)

    async def call(method: str, path: str, body=None) -> tuple[int, dict]:
        return await call_api(port, method, path, body)

    yield call
    server.stop()
    await app.settings["holds"].close()


@pytest.fixture
async def service_url(ledger, as_caller, now):
    """The service's root URL (its routes as `service` serves them, without a hub)."""
    app = make_app(ledger)
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}/services/quota/"
    server.stop()
    await app.settings["holds"].close()


@pytest.fixture
def vision(ledger):
    """Project vision names hub group proj-vision; pi has a member row; so does plain's ann."""
    project(ledger, "vision", member_group="proj-vision", member_cap_cents=20_00)
    ledger.add_member("staff", "vision", "pi", T0, role="pi")
    project(ledger, "plain")
    ledger.add_member("staff", "plain", "ann", T0)


def hold_body(who: str, **more) -> dict:
    body = {"project": "vision", "user": who, "slice_type": "h100.1g.10gb", "duration_minutes": 60}
    return {**body, **more}


def sessions(ledger) -> int:
    with ledger.session() as db:
        return db.scalar(select(func.count()).select_from(LedgerSession))


# -- the spawners say which groups a user is in ----------------------------------------------


async def test_a_group_members_hold_is_accepted_a_strangers_refused_with_the_sentence(
    ledger, service, vision
):
    status, held = await service("POST", "holds", hold_body("bo", groups=["proj-vision", "x"]))
    assert status == 201, held
    assert (held["user"], held["project"], held["hold_subsidy_cents"]) == ("bo", "vision", 7_00)
    with ledger.session() as db:
        entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "session.hold"))
    assert (entry.actor, entry.subject) == ("bo", str(held["id"]))
    assert json.loads(entry.detail)["via"] == "group:proj-vision"
    for groups in ([], ["proj-other"]):
        status, answer = await service("POST", "holds", hold_body("cy", groups=groups))
        assert (status, answer["message"]) == (403, "cy is not a member of project vision.")
    status, answer = await service("POST", "holds", hold_body("cy"))  # no groups: rows only
    assert (status, answer["message"]) == (403, "cy is not a member of project vision.")
    status, _ = await service("POST", "holds", hold_body("pi", server_name="nb"))  # a row
    assert status == 201
    assert sessions(ledger) == 2


BAD_GROUPS = {
    "not a list": ("proj-vision", "groups must be a list of hub group names."),
    "a number": ([7], "groups: '7' is not a group name"),
    "a space": (["proj vision"], "groups: 'proj vision' is not a group name"),
    "empty": ([""], "groups: '' is not a group name"),
    "too long": (["g" * 101], "is not a group name (letters, digits, '.', '_', '-', at most 100"),
    "a slash": (["../admin"], "groups: '../admin' is not a group name"),
    "too many": ([f"g{i}" for i in range(1001)], "groups lists 1001 groups; at most 1000."),
}


@pytest.mark.parametrize("case", list(BAD_GROUPS))
async def test_bad_groups_in_a_hold_are_a_400_with_a_sentence_and_hold_nothing(
    ledger, service, vision, case
):
    groups, words = BAD_GROUPS[case]
    status, answer = await service("POST", "holds", hold_body("bo", groups=groups))
    assert status == 400 and words in answer["message"], answer
    assert answer["message"].endswith(".")
    assert sessions(ledger) == 0


async def test_unknown_fields_are_still_refused(ledger, service, vision):
    status, answer = await service("POST", "holds", hold_body("bo", group=["proj-vision"]))
    assert status == 400 and answer["message"].startswith("Unknown field 'group'; fields:")
    assert "groups" in answer["message"] and sessions(ledger) == 0


async def test_the_spawners_project_list_carries_the_users_groups(service, vision, fake_hub):
    status, answer = await service("GET", "projects?user=bo&groups=other,proj-vision")
    assert status == 200
    ((view,),) = [[p for p in answer["projects"] if p["project"] == "vision"]]
    assert len(answer["projects"]) == 1
    assert view["member"] == {
        "role": "member",
        "via": "group:proj-vision",
        "cap_cents": 20_00,
        "cap_left_cents": 20_00,
        "class_windows": [],
    }
    assert (await service("GET", "projects?user=bo"))[1]["projects"] == []
    assert (await service("GET", "projects?user=bo&groups="))[1]["projects"] == []
    status, answer = await service("GET", f"projects?user=bo&groups={quote('proj vision')}")
    assert status == 400 and "'proj vision' is not a group name" in answer["message"]
    status, answer = await service("GET", "projects?user=bo&groups=a,,b")
    assert status == 400 and "'' is not a group name" in answer["message"]
    status, answer = await service("GET", "projects?groups=proj-vision")
    assert (status, answer["message"]) == (400, "groups are the groups of a user: give user too.")
    assert fake_hub["asked"] == []  # the spawners said; the hub was not asked


async def test_the_spawners_client_sends_the_groups_a_project_can_name(service_url, vision):
    """The quota client, as the spawners use it, against the service: a group no project could
    name ("Domain Users") is left out, as it could make nobody a member."""
    client = QuotaClient(service_url, "the-spawners-token")
    groups = ["Domain Users", "proj-vision", "proj-vision", "x"]
    (view,) = await client.projects("bo", groups)
    assert (view["project"], view["member"]["via"]) == ("vision", "group:proj-vision")
    assert await client.projects("bo") == []
    held = await client.hold("vision", "bo", "", "h100.1g.10gb", 60, False, groups)
    assert held["user"] == "bo"
    with pytest.raises(web.HTTPError) as refused:
        await client.hold("vision", "cy", "", "h100.1g.10gb", 60, groups=["Domain Users"])
    assert refused.value.status_code == 403
    assert refused.value.log_message == "cy is not a member of project vision."
    assert group_names(groups) == ["proj-vision", "x"]


# -- a user's own requests: the service asks the hub ------------------------------------------


async def test_a_users_own_requests_ask_the_hub_at_most_every_30_seconds(
    service, vision, as_caller, fake_hub, now
):
    fake_hub["groups"] = {"bo": ["proj-vision", "Domain Users"]}
    as_caller["is"] = user("bo")
    status, answer = await service("GET", "projects")
    assert status == 200 and [p["project"] for p in answer["projects"]] == ["vision"]
    assert answer["projects"][0]["member"]["via"] == "group:proj-vision"
    assert (await service("GET", "projects/vision"))[0] == 200
    assert (await service("GET", "sessions?project=vision"))[0] == 200
    assert fake_hub["asked"] == ["bo"]  # once, kept for 30 s
    fake_hub["groups"] = {"bo": ["Domain Users"]}  # bo leaves the group
    now["at"] += timedelta(seconds=29)
    assert (await service("GET", "projects/vision"))[0] == 200
    now["at"] += timedelta(seconds=2)
    status, answer = await service("GET", "projects/vision")
    assert (status, answer["message"]) == (403, "You are not a member of project vision.")
    assert (await service("GET", "projects"))[1]["projects"] == []
    assert fake_hub["asked"] == ["bo", "bo"]


async def test_when_the_hub_refuses_to_say_only_rows_count_and_the_log_says_so(
    service, vision, as_caller, fake_hub, caplog
):
    fake_hub["groups"] = {"bo": ["proj-vision"], "pi": ["proj-vision"]}
    fake_hub["refuse"] = 403  # as a hub would without the read:users:groups scope
    caplog.set_level(logging.WARNING, "slicehub.quota")
    as_caller["is"] = user("bo")
    assert (await service("GET", "projects"))[1]["projects"] == []
    assert (await service("GET", "projects/vision"))[0] == 403
    as_caller["is"] = user("pi")  # a row needs no group
    assert [p["project"] for p in (await service("GET", "projects"))[1]["projects"]] == ["vision"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "did not say which groups bo is in (answered 403" in w and "only member rows" in w
        for w in warnings
    ), warnings
    assert fake_hub["asked"] == ["bo", "bo", "pi"]  # nothing kept from a hub that could not say


async def test_a_hub_that_does_not_answer_means_no_groups_and_a_line_in_the_log(caplog, now):
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there
    groups = UserGroups(HubClient(f"http://127.0.0.1:{port}/hub/api", "fake-service-token"))
    caplog.set_level(logging.WARNING, "slicehub.quota")
    assert await groups.of("bo") == frozenset()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("The hub did not say which groups bo is in (")
    assert line.endswith("only member rows count for them until it answers")
    assert await UserGroups(None).of("bo") == frozenset()  # no hub at all: rows only, quietly


async def test_without_member_groups_the_hub_is_never_asked(ledger, service, as_caller, fake_hub):
    project(ledger, "plain")
    ledger.add_member("staff", "plain", "ann", T0)
    as_caller["is"] = user("ann")
    assert [p["project"] for p in (await service("GET", "projects"))[1]["projects"]] == ["plain"]
    assert (await service("GET", "projects/plain"))[0] == 200
    assert fake_hub["asked"] == []


async def test_only_the_spawners_say_which_groups_a_user_is_in(service, vision, as_caller):
    as_caller["is"] = user("bo")
    status, answer = await service("GET", "projects?groups=proj-vision")
    assert status == 403
    assert answer["message"] == (
        "Only the hub's spawners may say which groups a user is in; yours come from the hub."
    )
    status, answer = await service("POST", "holds", hold_body("bo", groups=["proj-vision"]))
    assert (status, answer["message"]) == (403, "This needs the custom:quota:holds permission.")


async def test_an_extension_asks_the_hub_for_the_session_users_groups(
    ledger, service, vision, as_caller, fake_hub, now
):
    status, held = await service("POST", "holds", hold_body("bo", groups=["proj-vision"]))
    assert status == 201
    fake_hub["groups"] = {"bo": ["proj-vision"]}
    as_caller["is"] = user("bo")  # the status bar, with bo's server's token
    status, answer = await service("POST", f"sessions/{held['id']}/extend", {"minutes": 30})
    assert status == 200, answer
    now["at"] += timedelta(minutes=1)
    fake_hub["groups"] = {"bo": []}
    as_caller["is"] = STAFF  # staff extend anyone's: the session's user's groups still count
    status, answer = await service("POST", f"sessions/{held['id']}/extend", {"minutes": 30})
    assert (status, answer["message"]) == (403, "bo is no longer a member of project vision.")
    assert fake_hub["asked"] == ["bo", "bo"]
