"""A class starts at once, on a real hub with the local spawner (issue 15): a course of three
students with a class window starting in under a minute and a one-minute lead. The classroom
service starts the three students' own servers (making their hub users: none has signed in);
each server's user is its student and another student's token cannot reach it; the first
student reaching their server inside the window claims it, and the ledger hands the session
over at that second; the two servers nobody claimed are stopped when the claim time is over;
the pre-warmed time is charged to the course's pre-warm line (never to a student's cap), to the
cent, and the claimed student's own session runs on from the claim."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from slicehub.quota.ledger import Ledger
from slicehub.quota.pricing import PricePoint, PriceSchedule
from tests.demo_ledger import add_project
from tests.hubprocess import REPO_ROOT

pytestmark = pytest.mark.integration

STUDENTS = ("stu1", "stu2", "stu3")
PRICE = 550  # h100.1g.10gb in the classroom site, cents an hour
SITE = REPO_ROOT / "tests" / "fixtures" / "sites" / "classroom-site.toml"


@pytest.fixture
def class_hub(hub_factory, tmp_path):
    """A hub on the classroom site: metering and the classroom service every second."""
    site = tmp_path / "site.toml"
    site.write_text(SITE.read_text().replace("min_minutes = 15", "min_minutes = 1"))
    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO_ROOT / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.LocalSliceSpawner.quota_timeout = 5\n"
    )
    data = tmp_path / "data"
    hub = hub_factory(
        cfg,
        env={
            "SLICEHUB_DATA_DIR": str(data),
            "SLICEHUB_SITE": str(site),
            "SLICEHUB_METER_INTERVAL": "1",
            "SLICEHUB_CLASSROOM_INTERVAL": "1",
        },
    )
    return hub, data


def sessions(data) -> list[sqlite3.Row]:
    with sqlite3.connect(data / "ledger.sqlite") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM sessions ORDER BY id").fetchall()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def server_of(hub, name: str) -> dict | None:
    """`name`'s default server on the hub (None: no such user yet, or no server)."""
    r = hub.api("GET", f"/users/{name}")
    return r.json().get("servers", {}).get("") if r.status_code == 200 else None


def wait(what, check, timeout: float, hub):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{hub.log_tail(80)}")
        time.sleep(0.25)
    return found


def test_a_course_is_pre_warmed_claimed_by_its_students_and_the_rest_stopped(class_hub):
    hub, data = class_hub
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now + timedelta(seconds=40), now + timedelta(minutes=30)
    add_project(
        data,
        "ml101",
        grant_cents=1000_00,
        members=dict.fromkeys(STUDENTS, "student"),
        windows=((start, end),),
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=50,
        is_course=True,
        member_cap_cents=50_00,
    )
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:  # lead 1 min: the window is warming already; unclaimed stopped 1 min into it
        ledger.set_prewarm("staff", "ml101", now, lead_minutes=1, claim_minutes=1)
    finally:
        ledger.dispose()

    # at the lead time: every student's own server, started by the classroom service
    for name in STUDENTS:
        wait(f"{name}'s pre-warmed server", lambda n=name: server_of(hub, n), 60, hub)
        hub.wait_for_server(name, timeout=90)
    warm = {r["username"]: r for r in sessions(data)}
    assert sorted(warm) == list(STUDENTS)
    assert {(r["prewarm_window_id"], r["status"]) for r in warm.values()} == {(1, "active")}
    for name in STUDENTS:
        r = hub.api("GET", f"/users/{name}")
        assert r.json()["name"] == name and r.json()["servers"][""]["ready"]

    tokens = {}
    for name in ("stu1", "stu2"):
        r = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
        assert r.status_code == 201, r.text
        tokens[name] = r.json()["token"]

    def as_user(name: str, path: str) -> requests.Response:
        return requests.get(
            f"{hub.url}{path}", headers={"Authorization": f"token {tokens[name]}"}, timeout=30
        )

    # another student's token cannot reach stu1's server (and does not claim it)
    assert as_user("stu2", "/user/stu1/api/status").status_code == 403

    # inside the window stu1 reaches their server: the session is handed over then
    wait("the class window to open", lambda: datetime.now(UTC) >= start, 60, hub)
    reached = datetime.now(UTC)
    assert as_user("stu1", "/user/stu1/api/status").status_code == 200
    rows = wait(
        "stu1's claim",
        lambda: [r for r in sessions(data) if r["stop_reason"] == "claimed"],
        20,
        hub,
    )
    (claimed,) = rows
    own = next(r for r in sessions(data) if r["id"] == claimed["handed_to"])
    claim_at = when(claimed["stopped_at"])
    assert reached - timedelta(seconds=1) <= claim_at <= reached + timedelta(seconds=10)
    assert (own["username"], own["status"], own["prewarm_window_id"]) == ("stu1", "active", None)
    assert when(own["started_at"]) == claim_at and when(own["end_at"]) == end

    # the claim time over: nobody claimed stu2's and stu3's servers; stopped, slices freed
    for name in ("stu2", "stu3"):
        wait(f"{name}'s unclaimed server stopped", lambda n=name: not hub.server_model(n), 120, hub)
    assert hub.server_model("stu1")["ready"]
    done = {r["username"]: r for r in sessions(data) if r["prewarm_window_id"] == 1}
    assert {n: done[n]["stop_reason"] for n in STUDENTS} == {
        "stu1": "claimed",
        "stu2": "unclaimed",
        "stu3": "unclaimed",
    }

    # the money: every pre-warmed second on the course's pre-warm line, to the cent; the
    # students' caps untouched by it; stu1's own session is theirs from the claim
    schedule = PriceSchedule([PricePoint(now - timedelta(days=1), PRICE)])
    with sqlite3.connect(data / "ledger.sqlite") as db:
        (course_id,) = db.execute("SELECT id FROM projects WHERE slug='ml101'").fetchone()
    for name, r in done.items():
        assert r["project_id"] == course_id
        spent = schedule.cost(when(r["started_at"]), when(r["stopped_at"]))
        assert r["charged_list_cents"] == spent, name
    hub.stop_server("stu1")
    final = next(r for r in sessions(data) if r["id"] == own["id"])
    assert final["status"] == "stopped"
    assert final["charged_list_cents"] == schedule.cost(claim_at, when(final["stopped_at"]))
