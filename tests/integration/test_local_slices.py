"""The demo hub for real: JupyterHub + configurable-http-proxy + LocalSliceSpawner, no GPU.

What a user and an operator rely on: two researchers starting at once get different slices
(seen in their servers' own environments), a request for a type with none free is refused with a
sentence, slices stay held across a hub restart while servers run, stop frees the slice, invalid
options are refused with 400 and hold nothing, and reconcile frees what no server holds.
"""

import asyncio
import json
import os
import pwd
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import requests

from slicehub.common import clock
from slicehub.quota.demo import seed_if_empty
from slicehub.quota.ledger import Ledger
from slicehub.spawners.local.manager import SliceManager
from slicehub.spawners.site import load_site
from tests.demo_ledger import join_demo_lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
THREE_G = {"project": "demo-lab", "slice_type": "h100.3g.40gb", "duration_hours": 1}


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "slicehub_test_config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.JupyterHub.cleanup_servers = False\n"
        "c.Authenticator.allowed_users = {'alice', 'bob', 'carol', 'staff'}\n" + extra
    )
    return cfg


@pytest.fixture
def demo_hub(hub_factory, tmp_path):
    data = tmp_path / "data"
    hub = hub_factory(write_config(tmp_path), env={"SLICEHUB_DATA_DIR": str(data)})
    join_demo_lab(data, "carol")  # into the project the quota service seeded at start-up
    return hub, data


def reservations(data: Path) -> dict[str, dict]:
    with sqlite3.connect(data / "slicehub.sqlite") as db:
        rows = db.execute("SELECT holder, assignment FROM slice_reservations").fetchall()
    return {h: json.loads(a) for h, a in rows}


def server_env(hub, user: str) -> dict[str, str]:
    state = hub.api("GET", f"/users/{user}").json()["servers"][""]["state"]
    return psutil.Process(state["pid"]).environ()


def start_together(hub, users, options):
    results = {}

    def go(u):
        results[u] = hub.start_server(u, options)

    threads = [threading.Thread(target=go, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_slices_through_a_real_hub(demo_hub):
    hub, data = demo_hub
    for u in ("alice", "bob", "carol"):
        hub.create_user(u)

    # alice and bob at the same moment: both served, on different MIG instances
    results = start_together(hub, ["alice", "bob"], THREE_G)
    assert {r.status_code for r in results.values()} <= {201, 202}, {
        u: r.text for u, r in results.items()
    }
    hub.wait_for_server("alice")
    hub.wait_for_server("bob")
    env_a, env_b = server_env(hub, "alice"), server_env(hub, "bob")
    for env in (env_a, env_b):
        assert env["CUDA_VISIBLE_DEVICES"].startswith("MIG-")
        assert env["SLICEHUB_SLICE_TYPE"] == "h100.3g.40gb"
        assert env["SLICEHUB_GPU_MEMORY_BYTES"] == str(40 * 1024**3)
        assert env["SLICEHUB_SESSION_END"].endswith("+00:00")
        assert env["SLICEHUB_DEVICES_DECLARED"] == "1"
    assert env_a["CUDA_VISIBLE_DEVICES"] != env_b["CUDA_VISIBLE_DEVICES"]
    held = reservations(data)
    assert set(held) == {"alice/", "bob/"}
    assert held["alice/"]["devices"] == [env_a["CUDA_VISIBLE_DEVICES"]]

    # both 3g.40gb instances are taken: carol is told so, and nothing is held for her
    r = hub.start_server("carol", THREE_G)
    assert r.status_code == 409
    assert "No h100.3g.40gb slice is free right now" in r.json()["message"]
    assert set(reservations(data)) == {"alice/", "bob/"}
    assert hub.server_model("carol") is None

    # the server is reachable through the proxy
    assert hub.get("/user/alice/api/status").status_code == 200

    # hub restart with servers running: still running, still held, nothing double-allocated
    pids = {
        u: server_env(hub, u)["SLICEHUB_SLICE_TYPE"]
        and hub.api("GET", f"/users/{u}").json()["servers"][""]["state"]["pid"]
        for u in ("alice", "bob")
    }
    hub.restart()
    for u in ("alice", "bob"):
        model = hub.server_model(u)
        assert model is not None and model["ready"], model
        assert psutil.pid_exists(pids[u])
    assert hub.get("/user/bob/api/status").status_code == 200
    assert reservations(data) == held
    r = hub.start_server("carol", THREE_G)
    assert r.status_code == 409, r.text

    # stop frees the slice: carol now gets alice's
    hub.stop_server("alice")
    assert set(reservations(data)) == {"bob/"}
    assert (
        not psutil.pid_exists(pids["alice"]) or psutil.Process(pids["alice"]).status() == "zombie"
    )
    r = hub.start_server("carol", THREE_G)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("carol")
    assert server_env(hub, "carol")["CUDA_VISIBLE_DEVICES"] == env_a["CUDA_VISIBLE_DEVICES"]
    hub.stop_server("carol")
    hub.stop_server("bob")
    assert reservations(data) == {}


@pytest.mark.parametrize(
    "options, words",
    [
        ({"slice_type": "h100.3g.40gb", "gres": "gpu:h100:8"}, "Unknown option 'gres'"),
        ({"slice_type": 3}, "must be a string"),
        ({"slice_type": "h100.3g.40gb", "duration_hours": 100000}, "outside"),
        ({"slice_type": "h100.3g.40gb; touch /tmp/pwned"}, "is not a slice type name"),
        ({"slice_type": "h100.7g.80gb"}, "is not offered here"),
    ],
)
def test_invalid_options_give_400_and_hold_nothing(demo_hub, options, words):
    hub, data = demo_hub
    hub.create_user("alice")
    r = hub.start_server("alice", options)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert hub.server_model("alice") is None
    assert not (data / "slicehub.sqlite").exists() or reservations(data) == {}


def test_the_form_shows_prices_and_free_counts(demo_hub):
    hub, _data = demo_hub
    hub.create_user("bob")
    assert hub.start_server("bob", {"slice_type": "h100x1"}).status_code in (201, 202)
    hub.wait_for_server("bob")
    session = requests.Session()
    session.trust_env = False
    session.get(f"{hub.url}/hub/login")
    login = {
        "username": "alice",
        "password": "slicehub-demo",
        "_xsrf": session.cookies.get("_xsrf"),
    }
    r = session.post(f"{hub.url}/hub/login", data=login)
    assert r.status_code == 200 and "/hub/login" not in r.url, r.url
    page = session.get(f"{hub.url}/hub/spawn").text
    assert "HK$16.50" in page and "h100.3g.40gb" in page
    assert "2 of 2" in page  # both 3g.40gb free
    assert "none free" in page  # bob holds the one whole H100
    assert "declared" in page
    # alice is in two projects: the form asks which, with what each has left
    assert 'name="project"' in page
    # bob's running h100x1 holds 2 h x HK$38.50 x 70% = HK$53.90 of demo-lab's HK$500.00
    assert "Demo research lab (demo-lab): HK$446.10 of subsidy left, 70% subsidised" in page
    assert "vision-group" in page
    # each type with the subsidy's share and the co-pay per hour, and the hours it buys:
    # h100x1 at HK$38.50 is HK$26.95 of subsidy an hour; vision-group's HK$200 buys 7.4 h
    assert "HK$26.95" in page and "HK$11.55" in page
    vision = page[page.index('data-project="vision-group"') :]
    assert "7.4 h" in vision
    # the form posts through the same validation as the REST API
    xsrf = session.cookies.get("_xsrf")
    r = session.post(
        f"{hub.url}/hub/spawn",
        data={
            "project": "demo-lab",
            "slice_type": "h100.1g.10gb",
            "duration_hours": "0.5",
            "_xsrf": xsrf,
        },
    )
    hub.wait_for_server("alice")
    assert server_env(hub, "alice")["SLICEHUB_SLICE_TYPE"] == "h100.1g.10gb"
    hub.stop_server("alice")
    hub.stop_server("bob")


def test_reconcile_frees_a_reservation_no_server_holds(hub_factory, tmp_path):
    """A crash between reserving and recording the server leaves an orphan; reconcile frees it."""
    data = tmp_path / "data"
    cfg = write_config(
        tmp_path,
        "c.LocalSliceSpawner.reconcile_interval = 1\nc.LocalSliceSpawner.reconcile_grace = 1\n",
    )
    hub = hub_factory(cfg, env={"SLICEHUB_DATA_DIR": str(data)})
    join_demo_lab(data, "carol")
    hub.create_user("alice")
    assert hub.start_server("alice", THREE_G).status_code in (201, 202)
    hub.wait_for_server("alice")
    hub.stop(sig=9)  # kill -9 the hub; alice's server keeps running (cleanup_servers = False)
    # the orphan a crash leaves behind: reserved through the real code path, never recorded
    manager = SliceManager(
        load_site(REPO / "hub_config" / "demo-site.toml"), f"sqlite:///{data / 'slicehub.sqlite'}"
    )
    ghost = asyncio.run(
        manager.reserve(
            "ghost/", manager.site.slice_types["h100.3g.40gb"], clock.utcnow() - timedelta(hours=1)
        )
    )
    manager.close()
    assert set(reservations(data)) == {"alice/", "ghost/"}
    hub.start()
    hub.create_user("bob")
    # bob's spawn creates the slice manager (and its reconcile loop) in the restarted hub
    assert hub.start_server("bob", {"slice_type": "cpu"}).status_code in (201, 202)
    hub.wait_for_server("bob")
    deadline = time.monotonic() + 20
    while "ghost/" in reservations(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(reservations(data)) == {"alice/", "bob/"}
    assert hub.server_model("alice")["ready"]
    # the ghost's slice is free again: carol gets exactly it
    hub.create_user("carol")
    assert hub.start_server("carol", THREE_G).status_code in (201, 202)
    hub.wait_for_server("carol")
    assert server_env(hub, "carol")["CUDA_VISIBLE_DEVICES"] == ghost.devices[0]


def test_progress_says_what_is_happening_and_the_process_is_pinned(demo_hub):
    hub, _data = demo_hub
    hub.create_user("bob")
    result = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", hub.start_server("bob", {"slice_type": "cpu"}))
    )
    t.start()
    messages = []
    deadline = time.monotonic() + 30
    while not messages and time.monotonic() < deadline:
        model = hub.server_model("bob")
        if model and model.get("pending") == "spawn":
            r = hub.api("GET", "/users/bob/server/progress", stream=True, timeout=60)
            for line in r.iter_lines():
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    messages.append(event.get("message", ""))
                    if event.get("ready") or event.get("failed"):
                        break
        time.sleep(0.05)
    t.join()
    assert result["r"].status_code in (201, 202)
    text = " | ".join(messages)
    assert "Reserving a cpu slice" in text
    assert "Reserved cpu on gpu-node-01" in text
    assert "Starting the notebook server on its slice" in text
    hub.wait_for_server("bob")
    env = server_env(hub, "bob")
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU slice sees no GPU
    assert env["SLICEHUB_GPU_MEMORY_BYTES"] == "0"
    pid = hub.api("GET", "/users/bob").json()["servers"][""]["state"]["pid"]
    allowed = psutil.Process(pid).cpu_affinity()
    assert 1 <= len(allowed) <= 2  # cpu slices have 2 CPUs; pinned onto this machine's CPUs
    cgroup = Path("/sys/fs/cgroup/memory/slicehub/bob-default")
    if cgroup.is_dir():  # where the machine lets the hub make a memory cgroup, the server is in it
        assert str(pid) in (cgroup / "cgroup.procs").read_text().split()
        assert int((cgroup / "memory.limit_in_bytes").read_text()) == 8 * 1024**3
    hub.stop_server("bob")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a Unix account needs root")
def test_servers_run_as_the_users_unix_account(hub_factory, tmp_path):
    """run_as = "unix-users": the server process belongs to the user's own account."""
    name = "slicehub-t1"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    site = tmp_path / "site.toml"
    site.write_text(
        (REPO / "hub_config" / "demo-site.toml")
        .read_text()
        .replace('run_as = "hub-user"', 'run_as = "unix-users"')
    )
    # a site that runs servers as Unix users is not the demo: its ledger is set up by staff
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()
    seed_if_empty(ledger, {t.name: t.price_cents for t in load_site(site).slice_types.values()})
    ledger.add_member("tests", "demo-lab", name, clock.utcnow())
    ledger.dispose()
    cfg = write_config(tmp_path, f"c.Authenticator.allowed_users = {{{name!r}}}\n")
    hub = hub_factory(
        cfg, env={"SLICEHUB_DATA_DIR": str(tmp_path / "data"), "SLICEHUB_SITE": str(site)}
    )
    hub.create_user(name)
    r = hub.start_server(name, {"slice_type": "h100.1g.10gb", "duration_hours": 0.5})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(name)
    pid = hub.api("GET", f"/users/{name}").json()["servers"][""]["state"]["pid"]
    proc = psutil.Process(pid)
    assert proc.uids().real == pwd.getpwnam(name).pw_uid
    assert proc.environ()["HOME"] == pwd.getpwnam(name).pw_dir
    assert proc.environ()["CUDA_VISIBLE_DEVICES"].startswith("MIG-")
    hub.stop_server(name)


def test_a_start_that_fails_after_reserving_releases_the_slice(hub_factory, tmp_path):
    """The server command cannot run: the spawn fails with a message and the slice is free."""
    data = tmp_path / "data"
    cfg = write_config(tmp_path, "c.Spawner.cmd = ['/nonexistent/jupyterhub-singleuser']\n")
    hub = hub_factory(cfg, env={"SLICEHUB_DATA_DIR": str(data)})
    hub.create_user("alice")
    r = hub.start_server("alice", {"project": "demo-lab", "slice_type": "h100x1"})
    assert r.status_code >= 400 or hub.server_model("alice") is None
    deadline = time.monotonic() + 20
    while hub.server_model("alice") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hub.server_model("alice") is None
    assert reservations(data) == {}
    assert "Reserved h100x1 for alice/" in hub.log_text()
    assert "Released the slice of alice/" in hub.log_text()


@pytest.mark.parametrize(
    "edit, words",
    [
        (('mig = ["4g.40gb", "3g.40gb"]', 'mig = ["4g.40gb", "4g.40gb"]'), "cannot hold"),
        (('price_per_hour = "16.50"', 'price_per_hour = "-16.50"'), "negative"),
        (('mig = ["4g.40gb", "3g.40gb"]', 'mig = ["4g.40gb", "3g.45gb"]'), "not a MIG profile"),
        (('price_per_hour = "0.80"\n', "\n"), "price_per_hour: is missing"),
    ],
)
def test_a_bad_site_file_stops_the_hub_with_file_key_and_fix(tmp_path, edit, words):
    site = tmp_path / "broken-site.toml"
    text = (REPO / "hub_config" / "demo-site.toml").read_text()
    assert edit[0] in text
    site.write_text(text.replace(edit[0], edit[1], 1))
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    proc = subprocess.run(
        [str(jupyterhub), "-f", str(REPO / "hub_config" / "jupyterhub_config.py")],
        cwd=tmp_path,
        env={**os.environ, "SLICEHUB_SITE": str(site), "SLICEHUB_DATA_DIR": str(tmp_path / "d")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"Slicehub cannot start: {site}:" in proc.stderr
    assert words in proc.stderr and "Fix:" in proc.stderr
