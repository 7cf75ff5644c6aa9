"""The quota service with a real hub: holds before a start, refusals in HK$, release at stop,
warnings and the stop at the end, a user's view limited to their own projects, and a service
that is down refusing new starts while running servers keep running."""

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.demo_ledger import add_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def token_for(hub, user):
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def quota_get(hub, token, path):
    s = requests.Session()
    s.trust_env = False
    return s.get(
        f"{hub.url}/services/quota/api/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )


def hold_as_the_spawner(hub, data, user: str) -> int:
    """A one-hour cpu hold in demo-lab for `user`'s default server, made with the spawners'
    own token (as a spawner whose answer then got lost would have made it); its session id."""
    spawner_token = (data / "quota_spawner_token").read_text().strip()
    s = requests.Session()
    s.trust_env = False
    r = s.post(
        f"{hub.url}/services/quota/api/holds",
        headers={"Authorization": f"token {spawner_token}"},
        json={
            "project": "demo-lab",
            "user": user,
            "server_name": "",
            "slice_type": "cpu",
            "duration_minutes": 60,
        },
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def ledger_rows(data, sql):
    with sqlite3.connect(data / "ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def test_a_start_is_held_charged_and_released(quota_hub):
    hub, data = quota_hub
    r = hub.start_server("bob", {"slice_type": "h100.1g.10gb", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    ((sid, status, hold, _end_at),) = ledger_rows(
        data, "SELECT id, status, hold_list_cents, end_at FROM sessions WHERE username='bob'"
    )
    assert status == "active" and hold == 550  # HK$5.50 for one hour of h100.1g.10gb
    pid = hub.api("GET", "/users/bob").json()["servers"][""]["state"]["pid"]
    env = psutil.Process(pid).environ()
    assert env["SLICEHUB_PROJECT"] == "demo-lab" and env["SLICEHUB_LEDGER_SESSION"] == str(sid)
    time.sleep(2.5)  # a few metering ticks
    charged = ledger_rows(data, f"SELECT sum(list_cents) FROM charges WHERE session_id={sid}")
    assert charged[0][0] is not None
    hub.stop_server("bob")
    ((status, stopped),) = ledger_rows(
        data, f"SELECT status, stopped_at FROM sessions WHERE id={sid}"
    )
    assert status == "stopped" and stopped is not None


def test_a_project_that_cannot_pay_is_refused_with_the_amounts(quota_hub):
    hub, data = quota_hub
    r = hub.start_server(
        "alice", {"project": "vision-group", "slice_type": "h100x1", "duration_hours": 12}
    )
    assert r.status_code == 402, r.text
    assert r.json()["message"] == (
        "Project vision-group has HK$200.00 of subsidy left; a h100x1 slice for 12 h needs "
        "HK$323.40 of subsidy (HK$462.00 at list price)."
    )
    assert hub.server_model("alice") is None
    assert ledger_rows(data, "SELECT count(*) FROM sessions") == [(0,)]
    with sqlite3.connect(data / "slicehub.sqlite") as db:
        assert db.execute("SELECT count(*) FROM slice_reservations").fetchone() == (0,)
    # alice is in two projects: without one the start asks which
    r = hub.start_server("alice", {"slice_type": "cpu"})
    assert r.status_code == 400 and "Choose the project to charge" in r.json()["message"]
    # a project she is not in
    r = hub.start_server("bob", {"project": "vision-group", "slice_type": "cpu"})
    assert r.status_code == 403 and "bob is not a member of project vision-group" in r.text


def test_users_see_their_own_projects_and_staff_see_all(quota_hub):
    hub, _data = quota_hub
    alice, bob, staff = (token_for(hub, u) for u in ("alice", "bob", "staff"))
    mine = quota_get(hub, alice, "projects").json()["projects"]
    assert sorted(p["project"] for p in mine) == ["demo-lab", "vision-group"]
    assert [p["project"] for p in quota_get(hub, bob, "projects").json()["projects"]] == [
        "demo-lab"
    ]
    r = quota_get(hub, bob, "projects/vision-group")
    assert r.status_code == 403 and "not a member" in r.json()["message"]
    assert quota_get(hub, bob, "sessions?project=vision-group").status_code == 403
    assert len(quota_get(hub, staff, "projects").json()["projects"]) == 2
    one = quota_get(hub, alice, "projects/vision-group")
    assert one.status_code == 200 and one.json()["project"] == "vision-group"
    assert one.json()["subsidy_left_cents"] == 200_00
    assert quota_get(hub, staff, "projects/no-such-lab").status_code == 404
    assert quota_get(hub, bob, "holds").status_code in (403, 405)
    metrics = quota_get(hub, staff, "../metrics")
    assert metrics.status_code == 200 and "slicehub_subsidy_left_cents" in metrics.text
    assert quota_get(hub, bob, "../metrics").status_code == 403


def test_a_browser_reads_its_projects_through_the_hubs_oauth(quota_hub):
    """No token: log in to the hub's page, then the service sends the browser through the
    hub's OAuth authorisation and back, and answers with that user's projects only."""
    hub, _data = quota_hub
    with hub.login("bob", "slicehub-demo") as browser:
        r = browser.get(f"{hub.url}/services/quota/api/projects", timeout=30)
        assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
        hops = [h.url for h in r.history]
        assert any("/hub/api/oauth2/authorize" in u for u in hops), hops
        assert any("/services/quota/oauth_callback" in u for u in hops), hops
        assert [p["project"] for p in r.json()["projects"]] == ["demo-lab"]
        again = browser.get(f"{hub.url}/services/quota/api/projects", timeout=30)
        assert again.status_code == 200 and not again.history  # the service's cookie now
        assert browser.get(f"{hub.url}/services/quota/api/holds").status_code in (403, 405)
    anonymous = requests.Session()
    anonymous.trust_env = False
    r = anonymous.get(f"{hub.url}/services/quota/api/projects", timeout=30)
    assert "/hub/login" in r.url  # sent to log in, nothing answered


def test_a_hold_whose_answer_was_lost_does_not_block_the_next_start(quota_hub):
    """The spawner gave up waiting for a hold the service did make (a timeout): the next start
    of that server finds the stale hold, releases it and goes on."""
    hub, data = quota_hub
    stale = hold_as_the_spawner(hub, data, "bob")
    # bad input from a spawner: a clear 400, and the hold stays as it was
    token = (data / "quota_spawner_token").read_text().strip()
    api = requests.Session()
    api.trust_env = False
    api.headers["Authorization"] = f"token {token}"
    base = f"{hub.url}/services/quota/api"
    for body, words in (
        ({"stopped_at": "yesterday"}, "ISO 8601"),
        ({"stopped_at": "2026-11-22T10:00:00"}, "time zone"),
        ({"stopped_at": "2026-11-22T10:00:00Z", "why": "x"}, "Unknown field"),
    ):
        r = api.post(f"{base}/sessions/{stale}/release", json=body, timeout=30)
        assert r.status_code == 400 and words in r.json()["message"], r.text
    hold = {"project": "demo-lab", "user": "bob", "slice_type": "cpu", "duration_minutes": 60}
    r = api.post(f"{base}/holds", json={**hold, "server_name": "x", "deferred": "yes"}, timeout=30)
    assert r.status_code == 400 and "deferred must be true or false" in r.json()["message"]
    assert ledger_rows(data, "SELECT id, status FROM sessions WHERE username = 'bob'") == [
        (stale, "active")
    ]
    r = hub.start_server("bob", {"slice_type": "cpu", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    rows = ledger_rows(data, "SELECT id, status FROM sessions WHERE username = 'bob' ORDER BY id")
    assert rows[0] == (stale, "stopped") and rows[1][1] == "active", rows
    assert len(rows) == 2
    hub.stop_server("bob")


def test_a_hold_without_a_server_is_closed_after_the_grace(hub_factory, tmp_path):
    """A start that failed before its spawner could release (a hub crash mid-spawn, say)
    leaves a hold no server carries: the service closes it, and leaves running ones alone."""
    cfg = tmp_path / "config.py"
    cfg.write_text(f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n")
    data = tmp_path / "data"
    env = {
        "SLICEHUB_DATA_DIR": str(data),
        "SLICEHUB_METER_INTERVAL": "1",
        "SLICEHUB_ORPHAN_GRACE": "2",
    }
    hub = hub_factory(cfg, env=env)
    for u in ("alice", "bob"):
        hub.create_user(u)
    r = hub.start_server("alice", {"project": "demo-lab", "slice_type": "cpu", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("alice")
    orphan = hold_as_the_spawner(hub, data, "bob")
    deadline = time.monotonic() + 30  # the grace, then a reconcile (every 2 s here)
    while time.monotonic() < deadline:
        status = ledger_rows(data, f"SELECT status, stop_reason FROM sessions WHERE id = {orphan}")
        if status[0][0] == "stopped":
            break
        time.sleep(1)
    assert status == [("stopped", "orphaned")]
    alice = ledger_rows(data, "SELECT status FROM sessions WHERE username = 'alice'")
    assert alice == [("active",)]  # her server runs: her session stays
    hub.stop_server("alice")


def test_warnings_then_a_graceful_stop_at_the_end(quota_hub):
    hub, data = quota_hub
    r = hub.start_server("bob", {"slice_type": "cpu", "duration_hours": 1 / 60})  # one minute
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    bob = token_for(hub, "bob")
    deadline = time.monotonic() + 120
    while hub.server_model("bob") is not None and time.monotonic() < deadline:
        time.sleep(1)
    assert hub.server_model("bob") is None, "the hub did not stop the server at the end"
    levels = {w["level"] for w in quota_get(hub, bob, "warnings").json()["warnings"]}
    assert {"budget-80", "budget-95", "end-10min"} <= levels
    ((status, hold, charged, end_at, stopped),) = ledger_rows(
        data,
        "SELECT status, hold_list_cents, charged_list_cents, end_at, stopped_at "
        "FROM sessions WHERE username='bob'",
    )
    assert status == "stopped" and charged == hold and stopped == end_at  # overshoot zero


def test_quota_service_down_refuses_starts_and_spares_running_servers(quota_hub):
    hub, _data = quota_hub
    assert hub.start_server("bob", {"slice_type": "cpu"}).status_code in (201, 202)
    hub.wait_for_server("bob")
    service = next(
        p
        for p in psutil.Process(hub.proc.pid).children(recursive=True)
        if "slicehub.quota.service" in " ".join(p.cmdline())
    )
    os.kill(service.pid, signal.SIGSTOP)
    try:
        r = hub.start_server("alice", {"project": "demo-lab", "slice_type": "cpu"})
        assert r.status_code == 503
        assert "quota service is not answering" in r.json()["message"]
        assert hub.server_model("alice") is None
        assert hub.get("/user/bob/api/status").status_code == 200  # still running
    finally:
        os.kill(service.pid, signal.SIGCONT)
    hub.stop_server("bob")


def test_a_server_that_dies_is_charged_until_it_died_and_released(quota_hub):
    hub, data = quota_hub
    assert hub.start_server("bob", {"slice_type": "cpu", "duration_hours": 2}).status_code in (
        201,
        202,
    )
    hub.wait_for_server("bob")
    pid = hub.api("GET", "/users/bob").json()["servers"][""]["state"]["pid"]
    os.kill(pid, signal.SIGKILL)  # behind the hub's back
    deadline = time.monotonic() + 90  # the hub polls servers every 30 s
    while hub.server_model("bob") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert hub.server_model("bob") is None
    deadline = time.monotonic() + 10
    while ledger_rows(data, "SELECT status FROM sessions WHERE username='bob'") != [("stopped",)]:
        assert time.monotonic() < deadline, "the ledger session was not released"
        time.sleep(0.2)
    ((charged, hold),) = ledger_rows(
        data, "SELECT charged_list_cents, hold_list_cents FROM sessions WHERE username='bob'"
    )
    assert charged < hold  # paid for the minutes it ran, not for the two hours held


def test_kill_9_of_the_service_and_the_hub_loses_and_doubles_nothing(hub_factory, tmp_path):
    from slicehub.common import clock
    from slicehub.quota.ledger import Ledger
    from tests.unit.test_ledger_properties import check_ledger

    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.JupyterHub.cleanup_servers = False\n"
    )
    data = tmp_path / "data"
    hub = hub_factory(cfg, env={"SLICEHUB_DATA_DIR": str(data), "SLICEHUB_METER_INTERVAL": "0.5"})
    hub.create_user("bob")
    assert hub.start_server("bob", {"slice_type": "h100x1"}).status_code in (201, 202)
    hub.wait_for_server("bob")

    def service():
        for p in psutil.Process(hub.proc.pid).children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "slicehub.quota.service" in " ".join(
                    p.cmdline()
                ):
                    return p
            except psutil.Error:
                continue
        raise StopIteration

    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    first = service()
    time.sleep(1.2)
    first.kill()  # kill -9 the quota service mid-metering; the hub restarts it
    deadline = time.monotonic() + 60
    while True:
        try:
            if service().pid != first.pid:
                break
        except StopIteration:
            pass
        assert time.monotonic() < deadline, "the hub did not restart the quota service"
        time.sleep(0.5)
    time.sleep(2)
    ((metered_until,),) = ledger_rows(data, "SELECT metered_until FROM sessions")
    check_ledger(ledger, clock.utcnow())  # caught up: charges tile the session exactly
    hub.stop(sig=signal.SIGKILL)  # kill -9 the hub; bob's server lives on (its service exits)
    time.sleep(1)
    hub.start()
    assert hub.server_model("bob")["ready"]
    time.sleep(1.5)
    check_ledger(ledger, clock.utcnow())
    hub.stop_server("bob")
    check_ledger(ledger, clock.utcnow())
    assert ledger_rows(data, "SELECT status FROM sessions") == [("stopped",)]
    assert ledger.balance("demo-lab", clock.utcnow()).subsidy_held_cents == 0
    assert metered_until is not None
    ledger.dispose()


def test_only_the_owner_extends_a_session_through_the_api(quota_hub):
    hub, data = quota_hub
    sid = hold_as_the_spawner(hub, data, "bob")
    ((end_before,),) = ledger_rows(data, f"SELECT end_at FROM sessions WHERE id={sid}")
    alice, bob = token_for(hub, "alice"), token_for(hub, "bob")
    with requests.Session() as s:
        s.trust_env = False
        url = f"{hub.url}/services/quota/api/sessions/{sid}/extend"
        r = s.post(url, json={"minutes": 30}, headers={"Authorization": f"token {alice}"})
        assert (
            r.status_code == 404 and r.json()["message"] == f"There is no session {sid} of yours."
        )
        r = s.post(url, json={"minutes": "30"}, headers={"Authorization": f"token {bob}"})
        assert r.status_code == 400 and "whole number" in r.json()["message"]
        assert ledger_rows(data, f"SELECT end_at FROM sessions WHERE id={sid}") == [(end_before,)]
        r = s.post(url, json={"minutes": 30}, headers={"Authorization": f"token {bob}"})
        assert r.status_code == 200, r.text
        assert r.json()["hold_list_cents"] == 120  # 1.5 h of cpu at HK$0.80


def test_the_members_of_a_projects_hub_group_see_it_and_start_on_it(quota_hub):
    """A project naming a hub group as its member group: a member of the group sees it through
    the API with their own token (the service asks the hub, with its read:users:groups scope)
    and starts a server on it (the spawner sends the user's groups with the hold), which the
    ledger records as theirs, and how; someone outside the group is refused with the sentence."""
    hub, data = quota_hub
    add_project(data, "vision-lab", grant_cents=100_00, members={}, member_group="proj-vision")
    r = hub.api("POST", "/groups/proj-vision", json={"users": ["bob"]})
    assert r.status_code == 201, r.text
    bob, alice = token_for(hub, "bob"), token_for(hub, "alice")
    mine = {p["project"]: p for p in quota_get(hub, bob, "projects").json()["projects"]}
    assert sorted(mine) == ["demo-lab", "vision-lab"]
    assert mine["vision-lab"]["member"]["via"] == "group:proj-vision"
    assert quota_get(hub, bob, "projects/vision-lab").status_code == 200
    assert quota_get(hub, alice, "projects/vision-lab").status_code == 403

    r = hub.start_server("bob", {"project": "vision-lab", "slice_type": "cpu", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    ((sid, user),) = ledger_rows(
        data,
        "SELECT s.id, s.username FROM sessions s JOIN projects p ON p.id = s.project_id "
        "WHERE p.slug = 'vision-lab'",
    )
    assert user == "bob"
    ((actor, detail),) = ledger_rows(
        data,
        f"SELECT actor, detail FROM audit_log WHERE action = 'session.hold' AND subject = '{sid}'",
    )
    assert actor == "bob" and json.loads(detail)["via"] == "group:proj-vision"
    hub.stop_server("bob")

    r = hub.start_server("alice", {"project": "vision-lab", "slice_type": "cpu"})
    assert r.status_code == 403 and "alice is not a member of project vision-lab." in r.text
