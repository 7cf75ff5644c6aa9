"""The release API (POST /services/quota/api/sessions/{id}/release) in-process: the service's
routes (`make_app`) on a real SQLite ledger, served by tornado on a local port, without a hub.

One seam replaces the hub: `as_the_spawners` answers the hub's OAuth check
(`HubOAuthenticated.get_current_user`) with the spawners' service identity and its
custom:quota:holds scope, as the hub would for their token. A release keeps why the session
ended (`reason`: stopped, crashed, start-failed); an unknown reason is a 400 with a sentence and
changes nothing."""

import json

import pytest
from sqlalchemy import func, select
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from slicehub.common import clock
from slicehub.quota import api
from slicehub.quota.models import AuditEntry
from slicehub.quota.models import Session as LedgerSession
from slicehub.quota.service import make_app
from tests.unit.rules_ledger import T0, H, project

FAKE_SPAWNER_IDENTITY = {"kind": "service", "name": "slicehub-spawner", "scopes": [api.HOLDS]}


@pytest.fixture
def as_the_spawners(monkeypatch):
    """The seam: every request is the spawners' (a fake of the hub's OAuth answer)."""
    monkeypatch.setattr(api.QuotaHandler, "get_current_user", lambda _: FAKE_SPAWNER_IDENTITY)


@pytest.fixture
async def release(ledger, as_the_spawners, monkeypatch):
    """`await release(session_id, body)`: (status, answer) of the release API."""
    monkeypatch.setattr(clock, "utcnow", lambda: T0 + H)
    app = make_app(ledger)
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])

    async def post(session_id: int, body: dict) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{port}/services/quota/api/sessions/{session_id}/release"
        request = HTTPRequest(url, method="POST", body=json.dumps(body))
        r = await AsyncHTTPClient().fetch(request, raise_error=False)
        return r.code, json.loads(r.body)

    yield post
    server.stop()
    await app.settings["holds"].close()


def held(ledger) -> int:
    project(ledger, "lab")
    ledger.add_member("staff", "lab", "ada", T0)
    return ledger.open_session("lab", "ada", "", "h100.1g.10gb", 2 * H, T0).id


def row(ledger, session_id: int) -> tuple:
    with ledger.session() as db:
        s = db.get(LedgerSession, session_id)
        audit = db.scalar(select(func.count()).select_from(AuditEntry))
        return s.status, s.stop_reason, s.charged_list_cents, s.metered_until, audit


async def test_a_release_keeps_its_reason(ledger, release):
    sid = held(ledger)
    status, answer = await release(sid, {"reason": "crashed"})
    assert status == 200 and answer["status"] == "stopped"
    assert answer["charged_list_cents"] == 1000  # an hour of HK$10.00 an hour
    assert row(ledger, sid)[:2] == ("stopped", "crashed")


async def test_a_release_without_a_reason_is_a_stop(ledger, release):
    sid = held(ledger)
    assert (await release(sid, {}))[0] == 200
    assert row(ledger, sid)[:2] == ("stopped", "stopped")


async def test_an_unknown_reason_is_refused_and_changes_nothing(ledger, release):
    sid = held(ledger)
    before = row(ledger, sid)
    status, answer = await release(sid, {"reason": "exploded"})
    assert status == 400
    assert answer["message"] == (
        "reason must be one of stopped, crashed, start-failed, not 'exploded'."
    )
    assert row(ledger, sid) == before and before[0] == "active"
    assert (await release(sid, {"reason": "start-failed"}))[0] == 200  # still releasable
    assert row(ledger, sid)[:2] == ("stopped", "start-failed")
