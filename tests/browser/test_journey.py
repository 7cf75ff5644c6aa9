"""A researcher's journey in a real browser: Debian's Chromium driven by Playwright against a
real hub, its quota service and a real JupyterLab (no GPU here: the declared slice runs the
GPU kernel's CPU path).

Log in; the form shows prices, the subsidy's share, the co-pay and the hours the allocation
buys; start a short session; watch the progress; JupyterLab opens with the status-bar item;
a cell runs in the GPU kernel; the 80% warning arrives as a notification; Extend is granted
and the new end shows at once; a second, larger one is refused with the reason; stop.
A screenshot of each step goes to .screenshots/<test name>/ for a person to look at.

The session's clock is made short for the test: a 3-minute session (the site allows 1-minute
ones here) metered every second.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.demo_ledger import add_project

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "slicehub-demo"


@pytest.fixture
def shots(request) -> Path:
    folder = REPO / ".screenshots" / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def journey_hub(quota_hub):
    """The quota hub (1-minute sessions allowed, metered every second) and alice's "pilot"
    project: HK$3.00 of subsidy, enough for a short session and a 30-minute extension of a
    1g.10gb slice (HK$3.85 of subsidy an hour), not for two hours."""
    hub, data = quota_hub
    add_project(
        data,
        "pilot",
        grant_cents=3_00,
        members={"alice": "member"},
        name="Pilot study",
        pi="alice",
        allowed_slice_types=["h100.1g.10gb", "cpu"],
    )
    return hub, data


def ends_at(data: Path) -> datetime:
    with sqlite3.connect(data / "ledger.sqlite") as db:
        (end,) = db.execute(
            "SELECT end_at FROM sessions WHERE username='alice' AND status='active'"
        ).fetchone()
    return datetime.fromisoformat(end).replace(tzinfo=UTC)


def test_a_researchers_journey(journey_hub, browser, shots):
    from playwright.sync_api import expect

    hub, data = journey_hub
    page = browser.new_page(viewport={"width": 1400, "height": 900}, timezone_id="Asia/Hong_Kong")
    step = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{next(step):02d}-{name}.png"), full_page=True)

    # log in
    page.goto(f"{hub.url}/hub/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    shot("login")
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.goto(f"{hub.url}/hub/spawn")

    # the form: projects, prices, the subsidy's share, the co-pay, what the allocation buys
    project = page.get_by_label("Project to charge")
    expect(project).to_be_visible()
    project.select_option("pilot")
    pilot = page.locator('fieldset[data-project="pilot"]')
    expect(pilot).to_be_visible()
    expect(page.locator('fieldset[data-project="demo-lab"]')).to_be_hidden()
    expect(pilot).to_contain_text("HK$5.50")  # list price an hour
    expect(pilot).to_contain_text("HK$3.85")  # the subsidy's 70%
    expect(pilot).to_contain_text("HK$1.65")  # co-pay
    expect(pilot).to_contain_text("46 min")  # HK$3.00 of subsidy buys 46 min of a 1g.10gb
    expect(pilot.locator("tbody tr")).to_have_count(2)  # pilot may use 1g.10gb and cpu only
    page.get_by_label("Session length (hours)").fill("2")
    one_g = pilot.get_by_label(re.compile("h100.1g.10gb"))
    expect(one_g).to_be_disabled()  # 2 h is more than pilot can pay
    expect(pilot).to_contain_text("The allocation can pay 46 min of it")
    shot("form-too-long")
    page.get_by_label("Session length (hours)").fill("0.05")  # 3 minutes
    expect(one_g).to_be_enabled()
    one_g.check()
    shot("form")
    page.get_by_role("button", name=re.compile("start", re.I)).click()

    # progress in words, then JupyterLab
    progress = page.locator("#progress-message, .progress-log, #progress-details")
    try:
        expect(progress.first).to_contain_text(re.compile("[A-Za-z]"), timeout=15_000)
        shot("progress")
    except AssertionError:
        pass  # the server can be up before the progress page draws: nothing to show then
    page.wait_for_url(re.compile(r"/user/alice/lab"), timeout=120_000)
    item = page.locator("#jp-main-statusbar .jp-slicehub-StatusItem")
    expect(item).to_contain_text("h100.1g.10gb", timeout=60_000)
    expect(item).to_contain_text(re.compile(r"left"))
    expect(item).to_contain_text(re.compile(r"HK\$\d+\.\d\d subsidy"))
    shot("jupyterlab")

    # a cell in the GPU kernel (its CPU path: the slice's devices are declared)
    page.locator(".jp-LauncherCard").filter(has_text="CuPy + Dask-CUDA").first.click()
    cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    expect(cell).to_be_visible(timeout=60_000)
    # the kernel (and its Dask cluster) has started: JupyterLab's status bar says Idle
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=120_000)
    cell.click()
    page.keyboard.type("print(xp.__name__, len(client.scheduler_info()['workers']))")
    expect(cell).to_contain_text("scheduler_info")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    expect(output).to_contain_text("numpy 1", timeout=120_000)
    expect(output).to_contain_text("1g.10gb MIG slice of an H100-80GB: no GPU")
    shot("gpu-kernel-cell")

    # the 80% warning arrives as a notification, with an Extend action
    toast = page.locator(".Toastify__toast").filter(has_text="80%")
    expect(toast).to_be_visible(timeout=180_000)
    shot("warning-80")
    before = ends_at(data)
    toast.get_by_role("button", name="Extend").click()
    panel = page.locator("#slicehub-session-panel")
    expect(panel).to_be_visible()
    panel.get_by_label("Extend by").select_option("30")
    panel.get_by_role("button", name="Extend").click()
    expect(panel.locator("[role=status]")).to_contain_text(
        "the session now ends at", timeout=30_000
    )
    assert ends_at(data) - before == timedelta(minutes=30)
    shot("extended")

    # two more hours are more than pilot's subsidy can pay: refused, with the reason
    panel.get_by_label("Extend by").select_option("120")
    panel.get_by_role("button", name="Extend").click()
    expect(panel.locator("[role=alert]")).to_contain_text(
        re.compile(r"Project pilot has HK\$\d+\.\d\d of subsidy left"), timeout=30_000
    )
    assert ends_at(data) - before == timedelta(minutes=30)
    shot("refused")

    # stop from the hub's home page
    page.goto(f"{hub.url}/hub/home")
    page.get_by_role("button", name=re.compile("stop my server", re.I)).click()
    expect(page.locator("#stop")).to_be_hidden(timeout=60_000)  # the hub hides it once stopped
    expect(page.get_by_role("button", name=re.compile("start my server", re.I))).to_be_visible()
    shot("stopped")
    with sqlite3.connect(data / "ledger.sqlite") as db:
        assert db.execute(
            "SELECT count(*) FROM sessions WHERE username='alice' AND status='active'"
        ).fetchone() == (0,)
