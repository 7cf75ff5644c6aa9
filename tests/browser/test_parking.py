"""Idle parking in a real hub, its quota service, its culler service and a real JupyterLab in
Debian's Chromium (issue 13). The site's parking is made short for the test: idle 24 s, warned
12 s before, every server read every 3 s.

In one hub, side by side:
- bob's kernel runs `time.sleep(3600)`: busy and silent. It is never parked, however long;
- alice, in JupyterLab, edits a notebook and leaves it unsaved; she is warned, presses "Keep
  working", and is not parked when she would have been; then she leaves: warned again, the tab
  saves her notebook, the session is parked. Her edit is on disk, her slice is free, and the
  ledger charged her session to the moment of parking and gave the rest of its hold back, to the
  cent. Her next visit to the form says why it stopped.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.browser.test_journey import PASSWORD, browser, shots  # noqa: F401 (fixtures)
from tests.integration.test_local_slices import reservations
from tests.integration.test_quota_hub import token_for
from tests.jupyterserver import execute_request

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
IDLE_S, WARNING_S, CHECK_S = 24, 12, 3
PRICE_CENTS = 550  # h100.1g.10gb, an hour
RATE_BP = 7000  # the demo scheme's subsidy


@pytest.fixture
def parking_hub(hub_factory, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        (REPO / "hub_config" / "demo-site.toml")
        .read_text()
        .replace("min_minutes = 15", "min_minutes = 1")
        + f'\n[parking]\nidle = "{IDLE_S} s"\nwarning = "{WARNING_S} s"\ncheck = "{CHECK_S} s"\n'
    )
    cfg = tmp_path / "config.py"
    cfg.write_text(f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n")
    data = tmp_path / "data"
    hub = hub_factory(
        cfg,
        env={
            "SLICEHUB_DATA_DIR": str(data),
            "SLICEHUB_SITE": str(site),
            "SLICEHUB_METER_INTERVAL": "1",
        },
    )
    for u in ("alice", "bob"):
        hub.create_user(u)
    return hub, data


def start_cell(ws_url: str, token: str, code: str) -> None:
    """Send `code` to a kernel and leave once it is busy (it goes on running)."""

    async def go() -> None:
        ws = await websocket_connect(
            HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
        )
        msg_id, message = execute_request(code, "t")
        ws.write_message(message)
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 60))
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "busy":
                    break
        ws.close()
        while await asyncio.wait_for(ws.read_message(), 10) is not None:
            pass

    # in a thread of its own: Playwright's sync API runs an event loop in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def session_row(data: Path, user: str) -> dict:
    with sqlite3.connect(data / "ledger.sqlite") as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT * FROM sessions WHERE username=? ORDER BY id DESC LIMIT 1", (user,)
        ).fetchone()
    return dict(row)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_idle_is_parked_with_a_warning_and_a_refund_busy_is_never(parking_hub, browser, shots):  # noqa: F811
    from playwright.sync_api import expect

    hub, data = parking_hub

    # bob: a kernel busy with a silent computation
    r = hub.start_server("bob", {"slice_type": "cpu", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    bob_token = token_for(hub, "bob")
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"token {bob_token}"
    kernel = s.post(f"{hub.url}/user/bob/api/kernels", json={"name": "python3"}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    ws = (
        hub.url.replace("http://", "ws://")
        + f"/user/bob/api/kernels/{kernel.json()['id']}/channels"
    )
    start_cell(ws, bob_token, "import time; time.sleep(3600)")

    # alice: JupyterLab, a notebook with an edit she does not save
    page = browser.new_page(viewport={"width": 1400, "height": 900}, timezone_id="Asia/Hong_Kong")
    step = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{next(step):02d}-{name}.png"), full_page=True)

    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.goto(f"{hub.url}/hub/spawn")
    page.get_by_label("Session length (hours)").fill("1")
    page.locator('fieldset[data-project="demo-lab"]').get_by_label(
        re.compile("h100.1g.10gb")
    ).check()
    page.get_by_role("button", name=re.compile("start", re.I)).click()
    page.wait_for_url(re.compile(r"/user/alice/lab"), timeout=120_000)
    assert set(reservations(data)) >= {"alice/"}
    page.locator(".jp-LauncherCard").filter(has_text=re.compile(r"^Python 3")).first.click()
    cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    expect(cell).to_be_visible(timeout=60_000)
    cell.click()
    page.keyboard.type("print('written before lunch')")
    expect(cell).to_contain_text("written before lunch")
    shot("unsaved-edit")

    # warned, with a way to stay
    toast = page.locator(".Toastify__toast").filter(has_text="will be parked")
    expect(toast).to_be_visible(timeout=60_000)
    expect(toast).to_contain_text("returned to demo-lab")
    shot("warned")
    kept_at = time.monotonic()
    toast.get_by_role("button", name="Keep working").click()
    expect(toast).to_be_hidden(timeout=10_000)
    # where she would have been parked (the first warning + its lead + a check), she is not
    time.sleep(WARNING_S + 2 * CHECK_S)
    assert session_row(data, "alice")["status"] == "active"

    # she leaves: warned again, the tab saves, the session is parked
    expect(toast).to_be_visible(timeout=60_000)
    deadline = time.monotonic() + IDLE_S + 4 * CHECK_S + 30
    while session_row(data, "alice")["status"] == "active" and time.monotonic() < deadline:
        time.sleep(1)
    parked = session_row(data, "alice")
    assert parked["stop_reason"] == "parked", parked
    assert time.monotonic() - kept_at >= IDLE_S  # not before the window from "Keep working"
    shot("parked")

    # the edit is on disk; the slice is free; the server stops
    notebooks = list((data / "homes" / "alice").rglob("*.ipynb"))
    assert any("written before lunch" in p.read_text() for p in notebooks), notebooks
    deadline = time.monotonic() + 60
    while "alice/" in reservations(data) and time.monotonic() < deadline:
        time.sleep(1)
    assert "alice/" not in reservations(data)
    assert hub.api("GET", "/users/alice").json()["servers"] == {}

    # charged to the moment of parking; the rest of the hold back to demo-lab, to the cent
    started, stopped = when(parked["started_at"]), when(parked["stopped_at"])
    micros = (stopped - started) // timedelta(microseconds=1)
    expected_list = PRICE_CENTS * micros // 3_600_000_000
    assert parked["charged_list_cents"] == expected_list
    assert parked["charged_subsidy_cents"] == expected_list * RATE_BP // 10_000
    assert parked["hold_list_cents"] == PRICE_CENTS  # one hour held
    # parked within the window plus one check (+10 s: the tab's save, on a loaded machine)
    assert IDLE_S <= parked["idle_seconds"] <= IDLE_S + CHECK_S + 10, parked
    assert 0 < parked["idle_list_cents"] <= expected_list
    with sqlite3.connect(data / "ledger.sqlite") as db:
        (charged,) = db.execute(
            "SELECT sum(list_cents) FROM charges WHERE session_id=?", (parked["id"],)
        ).fetchone()
        actions = [
            a
            for (a,) in db.execute(
                "SELECT action FROM audit_log WHERE subject=? ORDER BY id", (str(parked["id"]),)
            )
        ]
    assert charged == expected_list
    assert actions.count("session.idle-warning") == 2 and actions[-1] == "session.release"

    # her next visit says why
    page.goto(f"{hub.url}/hub/spawn")
    notice = page.locator("#slicehub-notice")
    expect(notice).to_contain_text("was parked at", timeout=30_000)
    expect(notice).to_contain_text("went back to demo-lab")
    shot("next-visit")

    # bob's silent, busy kernel: never parked, never warned
    bob = session_row(data, "bob")
    assert bob["status"] == "active" and bob["idle_warned_at"] is None, bob
    with sqlite3.connect(data / "ledger.sqlite") as db:
        (warnings,) = db.execute(
            "SELECT count(*) FROM audit_log WHERE subject=? AND action='session.idle-warning'",
            (str(bob["id"]),),
        ).fetchone()
    assert warnings == 0
    assert hub.api("GET", "/users/bob").json()["servers"][""]["ready"]
