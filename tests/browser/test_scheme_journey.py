"""The subsidy scheme's whole journey in a real browser (issue 14): Debian's Chromium driven by
Playwright against a real hub, its quota service (with the scheme's pages) and a real SMTP
server process (aiosmtpd).

alice (a PI) applies; the secretariat (staff) starts the review with two reviewers; rita
declares a conflict and no longer sees the application; rob scores it; the secretariat approves
it with changes; alice receives the e-mail (read from the SMTP server), finds the new project in
the spawn form with the approved subsidy, and starts a session charged to it.
Screenshots of each step go to .screenshots/<test name>/.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser.test_journey import PASSWORD, browser, shots  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
QUOTA = "/services/quota"


@pytest.fixture
def scheme_hub(hub_factory, tmp_path, smtp_server):
    site = tmp_path / "site.toml"
    site.write_text(
        (REPO / "hub_config" / "demo-site.toml")
        .read_text()
        .replace("min_minutes = 15", "min_minutes = 1")
    )
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        f'[deployment]\nmode = "demo"\nsite = "{site}"\n'
        '[sign_in]\nmethod = "demo"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nstarttls = false\n'
        'from_addr = "scheme@centre.example"\n'
        '[scheme]\nsecretariat = ["staff"]\ncommittee = ["rita", "rob"]\n'
    )
    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.Authenticator.allowed_users = {'alice', 'bob', 'staff', 'rita', 'rob'}\n"
    )
    data = tmp_path / "data"
    env = {
        "SLICEHUB_DEPLOYMENT": str(deployment),
        "SLICEHUB_DATA_DIR": str(data),
        "SLICEHUB_METER_INTERVAL": "1",
        "SLICEHUB_MAIL_INTERVAL": "1",
    }
    hub = hub_factory(cfg, env=env)
    for u in ("alice", "bob", "staff", "rita", "rob"):
        hub.create_user(u)
    # the scheme's published criteria (the secretariat's verb)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "slicehub.cli",
            "admin",
            "scheme",
            "criteria",
            "hk-ai-subsidy",
            "--db",
            f"sqlite:///{data / 'ledger.sqlite'}",
            "--criterion",
            "alignment:60:Alignment with Hong Kong's innovation needs",
            "--criterion",
            "request:40:Reasonableness of the compute request",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return hub, data


def ledger_one(data: Path, sql: str, *args):
    with sqlite3.connect(data / "ledger.sqlite") as db:
        return db.execute(sql, args).fetchone()


def test_from_application_to_a_session_charged_to_the_new_project(
    scheme_hub,
    smtp_server,
    browser,  # noqa: F811
    shots,  # noqa: F811
):
    from playwright.sync_api import expect

    hub, data = scheme_hub
    step = iter(range(1, 100))

    def person(name: str):
        context = browser.new_context(
            viewport={"width": 1300, "height": 900}, timezone_id="Asia/Hong_Kong"
        )
        page = context.new_page()
        page.goto(f"{hub.url}/hub/login")
        page.get_by_label("Username").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name=re.compile("sign in", re.I)).click()
        page.wait_for_url(re.compile(r"/hub/|/user/"))
        return page

    def shot(page, name: str) -> None:
        page.screenshot(path=str(shots / f"{next(step):02d}-{name}.png"), full_page=True)

    def error_free(page) -> None:
        expect(page.locator("#form-error")).to_have_count(0)

    # 1. alice applies: the form shows the cost live
    alice = person("alice")
    alice.goto(f"{hub.url}{QUOTA}/scheme/applications/new")
    alice.locator("#organisation").fill("HKU Vision Lab")
    alice.locator("#org_type").select_option("university")
    alice.locator("#email").fill("alice@hku.example")
    alice.locator("#title").fill("Foundation models for <b>medical</b> images")
    alice.locator("#abstract").fill("We fine-tune =SUM(A1:A9) vision transformers on CT scans.")
    alice.locator("#ai_area").fill("Computer vision")
    alice.locator("#period_start").fill("2027-01-01")
    alice.locator("#period_end").fill("2027-12-31")
    alice.locator("#rate").fill("70")
    alice.locator("#member-1-username").fill("bob")
    alice.locator("#member-1-email").fill("bob@hku.example")
    alice.get_by_label(re.compile(r"GPU-hours of h100\.1g\.10gb")).fill("200")
    alice.get_by_label("Justification for h100.1g.10gb").fill(
        "ViT-L, 40k CT volumes, bf16 training, weekly runs"
    )
    expect(alice.locator("#cost-list")).to_have_text("HK$1,100.00")  # 200 h at HK$5.50
    expect(alice.locator("#cost-subsidy")).to_have_text("HK$770.00")
    expect(alice.locator("#cost-copay")).to_have_text("HK$330.00")
    shot(alice, "application-form")
    alice.locator("#submit").click()
    error_free(alice)
    expect(alice.locator("#status")).to_contain_text(re.compile("submitted", re.I))
    app_url = alice.url.split("?")[0]
    assert re.search(r"/scheme/applications/\d+$", app_url), app_url
    # hostile text is shown as typed, never as markup
    expect(alice.locator("h1, main").first).to_contain_text("<b>medical</b>")
    shot(alice, "submitted")

    # 2. the secretariat starts the review with two reviewers
    staff = person("staff")
    staff.goto(app_url)
    staff.locator("#reviewers").fill("rita, rob")
    staff.locator("#start-review").click()
    error_free(staff)
    expect(staff.locator("#status")).to_contain_text(re.compile("under review", re.I))
    shot(staff, "review-started")

    # 3. rita declares a conflict: the application disappears for her
    rita = person("rita")
    rita.goto(f"{hub.url}{QUOTA}/scheme/reviews")
    expect(rita.get_by_role("link", name=re.compile("Foundation models"))).to_be_visible()
    rita.goto(app_url)
    rita.locator("#conflict-note").fill("I co-supervise a student in this lab.")
    rita.locator("#declare-conflict").click()
    rita.goto(f"{hub.url}{QUOTA}/scheme/reviews")
    expect(rita.get_by_role("link", name=re.compile("Foundation models"))).to_have_count(0)
    assert rita.goto(app_url).status == 404
    shot(rita, "conflict-declared")

    # 4. rob scores every criterion
    rob = person("rob")
    rob.goto(app_url)
    rob.locator("#score-alignment").select_option("8")
    rob.locator("#comment-alignment").fill("Strong fit with health-tech priorities.")
    rob.locator("#score-request").select_option("6")
    rob.locator("#comment-request").fill("Hours look high for the data set; trim them.")
    rob.locator("#save-scores").click()
    error_free(rob)
    shot(rob, "scored")

    # 5. the secretariat approves with changes: 150 h, HK$577.50 of subsidy, project vision-ct
    staff.goto(app_url)
    expect(staff.get_by_role("table", name="Scores")).to_contain_text("rob")
    staff.locator("#outcome-approved_with_changes").check()
    staff.locator("#amount").fill("577.50")
    staff.locator("#decision-rate").fill("70")
    staff.locator("#decision-hours-1").fill("150")
    staff.locator("#valid_from").fill(time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400)))
    staff.locator("#valid_until").fill("2027-12-31")
    staff.locator("#slug").fill("vision-ct")
    staff.locator("#terms").fill("Quarterly progress reports.")
    staff.locator("#reasons").fill("Compute request reduced to 150 GPU-hours (review).")
    staff.locator("#decide").click()
    error_free(staff)
    expect(staff.locator("#status")).to_contain_text(re.compile("approved with changes", re.I))
    expect(staff.locator("#project")).to_contain_text("vision-ct")
    shot(staff, "approved-with-changes")
    (grant,) = ledger_one(
        data,
        "SELECT sum(g.amount_cents) FROM grants g JOIN projects p ON p.id = g.project_id "
        "WHERE p.slug = 'vision-ct'",
    )
    assert grant == 577_50

    # 6. alice's e-mail, through the real SMTP server
    deadline = time.monotonic() + 60
    mails = []
    while time.monotonic() < deadline:
        mails = [
            m
            for m in smtp_server.messages()
            if m["To"] == "alice@hku.example" and "approved" in m["Subject"].lower()
        ]
        if mails:
            break
        time.sleep(1)
    assert mails, [(m["To"], m["Subject"]) for m in smtp_server.messages()]
    body = mails[-1].get_content()
    assert "vision-ct" in body and "HK$577.50" in body, body

    # 7. the new project in the spawn form, with the approved subsidy; a session charged to it
    alice.goto(f"{hub.url}/hub/spawn")
    project = alice.get_by_label("Project to charge")
    expect(project).to_be_visible()
    project.select_option("vision-ct")
    fieldset = alice.locator('fieldset[data-project="vision-ct"]')
    expect(fieldset).to_be_visible()
    expect(fieldset).to_contain_text("HK$3.85")  # 70% of a 1g.10gb hour
    alice.get_by_label("Session length (hours)").fill("0.25")
    fieldset.get_by_label(re.compile("h100.1g.10gb")).check()
    shot(alice, "spawn-form")
    alice.get_by_role("button", name=re.compile("start", re.I)).click()
    alice.wait_for_url(re.compile(r"/user/alice/lab"), timeout=120_000)
    (charged_to,) = ledger_one(
        data,
        "SELECT p.slug FROM sessions s JOIN projects p ON p.id = s.project_id "
        "WHERE s.username = 'alice' AND s.status = 'active'",
    )
    assert charged_to == "vision-ct"
    shot(alice, "session-on-the-new-project")
    hub.stop_server("alice")
