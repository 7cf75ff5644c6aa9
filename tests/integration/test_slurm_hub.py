"""SlurmSliceSpawner for real: JupyterHub + configurable-http-proxy + the quota service + the test
Slurm (scripts/slurm.sh, with accounting: nodes n1 and n2), driven through the hub's REST API.

What a centre relies on: a start is held in the ledger and submitted with the right GRES,
account, partition and a time limit the hold pays for; with the slices taken a start waits with
Slurm's reason and its place in the queue and starts when one is freed, or is cancelled cleanly;
stop cancels the job and releases the slice and the hold; a hub restart reconnects to running
jobs; a job killed behind the hub's back is found, charged until it died and freed, and a failing
squeue drops nothing; a job that dies before the notebook starts says why; hostile options never
shape the job or reach its script; and Slurm's accounting agrees with the ledger.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests
import slurmcluster
from slurmcluster import SlurmCluster

from slicehub.common import clock
from slicehub.quota.demo import seed_if_empty
from slicehub.quota.ledger import Ledger
from slicehub.quota.reader import LedgerReader
from slicehub.spawners.site import load_site
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc
from tests.demo_ledger import join_demo_lab

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "hub_config" / "slurm-site.toml"
ACCOUNTS = ("demo-lab", "vision-group")
UNIX_USER = "slicehub-t2"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    cluster = slurmcluster.ensure_slurm(accounting=True)
    for account in ACCOUNTS:
        cluster.ensure_account(account, "root")
    return cluster


@pytest.fixture(autouse=True)
def no_jobs_left(slurm):
    """Every test starts and ends with no Slicehub or filler job on the cluster."""
    cancel_test_jobs(slurm)
    yield
    cancel_test_jobs(slurm)


def cancel_test_jobs(slurm: SlurmCluster) -> None:
    def ours() -> list[sa.QueuedJob]:
        done = slurm.run(sc.squeue_argv(executable=slurm.squeue))
        assert done.returncode == 0, done.stderr
        return [
            j
            for j in sa.parse_squeue(done.stdout)
            if j.name.startswith(("slicehub", "filler")) and not j.finished
        ]

    for job in ours():
        slurm.run(sc.scancel_argv(job.job_id, executable=slurm.scancel))
    poll("test jobs end", lambda: not ours())


def poll(what: str, probe, timeout: float = WAIT_S, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s", pytrace=False)
        time.sleep(interval)


def write_site(tmp_path: Path, *edits: tuple[str, str], append: str = "") -> Path:
    text = SITE.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    site = tmp_path / "slurm-site.toml"
    site.write_text(text + append)
    return site


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "slurm_test_config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.JupyterHub.cleanup_servers = False\n"
        "c.SlurmSliceSpawner.poll_interval = 1\n"
        "c.SlurmSliceSpawner.start_timeout = 120\n"
        "c.Authenticator.allowed_users = {'alice', 'bob', 'carol', 'dave', 'staff'}\n" + extra
    )
    return cfg


def start_hub(hub_factory, tmp_path, slurm, *, site: Path = SITE, extra: str = "", meter="1"):
    data = tmp_path / "data"
    env = {
        "SLICEHUB_SITE": str(site),
        "SLICEHUB_DATA_DIR": str(data),
        "SLURM_CONF": slurm.slurm_conf,
        "SLICEHUB_METER_INTERVAL": meter,
    }
    hub = hub_factory(write_config(tmp_path, extra), env=env)
    join_demo_lab(data, "carol", "dave")  # into the project the quota service seeded
    return hub, data


@pytest.fixture
def slurm_hub(hub_factory, tmp_path, slurm):
    hub, data = start_hub(hub_factory, tmp_path, slurm)
    for u in ("alice", "bob", "carol", "dave"):
        hub.create_user(u)
    return hub, data


# -- what the test reads ---------------------------------------------------------------------


def ledger_sessions(data: Path, user: str) -> list[dict]:
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        return LedgerReader(ledger).sessions(user, None)
    finally:
        ledger.dispose()


def state(hub, user: str) -> dict:
    return hub.api("GET", f"/users/{user}").json()["servers"][""]["state"]


def job(slurm: SlurmCluster, job_id: str) -> sa.QueuedJob:
    done = slurm.run(sc.squeue_argv([job_id], executable=slurm.squeue))
    assert done.returncode == 0, done.stderr
    (found,) = sa.parse_squeue(done.stdout)
    return found


def show_job(slurm: SlurmCluster, job_id: str) -> dict[str, str]:
    done = slurm.run([slurm.scontrol, "show", "job", "--oneliner", job_id])
    assert done.returncode == 0, done.stderr
    return dict(w.split("=", 1) for w in done.stdout.split() if "=" in w)


def batch_script(slurm: SlurmCluster, job_id: str) -> str:
    done = slurm.run(sc.scontrol_batch_script_argv(job_id, executable=slurm.scontrol))
    assert done.returncode == 0, done.stderr
    return done.stdout


def free(slurm: SlurmCluster, gres_type: str) -> int:
    done = slurm.run(sc.sinfo_gres_argv(executable=slurm.sinfo))
    return sa.parse_sinfo_gres(done.stdout)[gres_type].free


def server_process(job_id: str) -> psutil.Process:
    def find():
        for p in psutil.process_iter():
            try:
                if p.environ().get("SLURM_JOB_ID") == job_id and "jupyterhub-singleuser" in (
                    " ".join(p.cmdline())
                ):
                    return p
            except psutil.Error:
                continue
        return None

    return poll(f"the server process of job {job_id}", find, timeout=10)


def filler(
    slurm: SlurmCluster, tmp_path: Path, gres_type: str, n: int = 1, node: str | None = None
) -> list[str]:
    """Plain jobs that take slices, as other users' jobs would (on `node` when given)."""
    ids = []
    for i in range(n):
        argv = sc.sbatch_argv(
            job_name=f"filler-{i}",
            partition="gpu",
            account="demo-lab",
            gres=[(gres_type, 1)],
            cpus=1,
            mem_mb=500,
            time_minutes=10,
            output="/dev/null",
            chdir=str(tmp_path),
            executable=slurm.sbatch,
        ) + ([f"--nodelist={node}"] if node else [])
        done = slurm.run(argv, stdin="#!/bin/sh\nsleep 600\n")
        assert done.returncode == 0, done.stderr
        ids.append(sa.parse_sbatch(done.stdout))
    poll("filler jobs run", lambda: all(job(slurm, i).state == "RUNNING" for i in ids))
    return ids


def unix_user(slurm: SlurmCluster, name: str) -> pwd.struct_passwd:
    """A Unix account (made with useradd when missing) with a Slurm association in demo-lab."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    slurm.ensure_account("demo-lab", name)
    return pwd.getpwnam(name)


def start_unix_users_hub(hub_factory, tmp_path, slurm, users: Collection[str]):
    """A hub whose servers run as the users' own Unix accounts (run_as = "unix-users"), with
    `users` (accounts made by unix_user) members of demo-lab: (hub, its data dir)."""
    site = write_site(tmp_path, ('run_as = "hub-user"', 'run_as = "unix-users"'))
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()
    seed_if_empty(ledger, {t.name: t.price_cents for t in load_site(site).slice_types.values()})
    for user in users:
        ledger.add_member("tests", "demo-lab", user, clock.utcnow())
    ledger.dispose()
    extra = f"c.Authenticator.allowed_users = {set(users)!r}\n"
    hub, data = start_hub(hub_factory, tmp_path, slurm, site=site, extra=extra)
    for user in users:
        hub.create_user(user)
    return hub, data


def reconcile(
    slurm: SlurmCluster, data: Path, since: datetime, jobs: Collection[str], tolerance: int
) -> dict[str, list[str]]:
    """`slicehub slurm-reconcile` of this hub's ledger against sacct, once sacct knows every one
    of `jobs`; checks that each of their rows agrees and returns the rows' cells by job id."""

    def run():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "slicehub.cli",
                "slurm-reconcile",
                "--ledger",
                f"sqlite:///{data / 'ledger.sqlite'}",
                "--site",
                str(SITE),
                "--since",
                since.astimezone().replace(tzinfo=None).isoformat(timespec="seconds"),
                "--tolerance",
                str(tolerance),
            ],
            capture_output=True,
            text=True,
            env=dict(slurm.env),
            cwd=REPO,
            timeout=60,
        )
        # slurmdbd hears of starts and ends a moment after slurmctld: wait until it has all
        return done if all(j in done.stdout for j in jobs) else None

    done = poll(f"sacct knows the jobs {sorted(jobs)}", run, timeout=30, interval=1)
    print(done.stdout)
    rows = {
        cells[2]: cells
        for line in done.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("|")])[2:3] and cells[2] in jobs
    }
    assert set(rows) == set(jobs)
    for cells in rows.values():
        assert cells[-2] == "ok", done.stdout  # within the tolerance (+1 s: sacct's whole seconds)
    if done.returncode != 0:  # another hub's jobs (an earlier test's ledger) differ, not ours
        assert "no ledger session" in done.stdout, done.stdout + done.stderr
    return rows


class Progress:
    """The spawn progress stream of one server, read in a thread; messages as they come."""

    def __init__(self, hub, user: str):
        self.messages: list[str] = []
        self.done = threading.Event()
        self._response = hub.api("GET", f"/users/{user}/server/progress", stream=True, timeout=120)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self._response.iter_lines():
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    self.messages.append(event.get("message", ""))
                    if event.get("ready") or event.get("failed"):
                        break
        except requests.RequestException:
            pass
        finally:
            self.done.set()

    def wait_for(self, pattern: str, timeout: float = WAIT_S) -> str:
        return poll(
            f"a progress message matching {pattern!r} (got {self.messages})",
            lambda: next((m for m in self.messages if re.search(pattern, m)), None),
            timeout,
        )

    def close(self):
        self._response.close()


# -- the tests -------------------------------------------------------------------------------


def test_start_submits_the_right_job_and_stop_releases_everything(slurm_hub, slurm):
    hub, data = slurm_hub
    free_before = free(slurm, "3g.40gb")
    r = hub.start_server(
        "alice", {"project": "vision-group", "slice_type": "h100.3g.40gb", "duration_hours": 2}
    )
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("alice", timeout=WAIT_S)
    job_id = state(hub, "alice")["job_id"]
    (session,) = ledger_sessions(data, "alice")
    assert session["status"] == "active" and session["project"] == "vision-group"

    queued = job(slurm, job_id)
    assert queued.state == "RUNNING"
    assert queued.gres == {"3g.40gb": 1}
    assert (queued.account, queued.partition) == ("vision-group", "gpu")
    assert queued.name == f"slicehub-{session['id']}-alice"
    shown = show_job(slurm, job_id)
    h, m, _s = (int(x) for x in shown["TimeLimit"].split(":"))
    to_end = (datetime.fromisoformat(session["end_at"]) - clock.utcnow()).total_seconds() / 60
    assert to_end - 2 <= h * 60 + m <= to_end  # capped at what the hold pays for, rounded down
    assert (shown["NumCPUs"], shown["MinMemoryNode"]) == ("2", "12G")
    assert free(slurm, "3g.40gb") == free_before - 1

    env = server_process(job_id).environ()
    assert env["SLICEHUB_SLICE_TYPE"] == "h100.3g.40gb"
    assert env["SLICEHUB_LEDGER_SESSION"] == str(session["id"])
    assert env["SLICEHUB_DEVICES_DECLARED"] == "1"
    assert env["SLICEHUB_NODE"] == queued.nodes and queued.nodes in slurm.nodes
    assert env["CUDA_VISIBLE_DEVICES"] != ""  # Slurm gave the job its slice
    if slurm.cgroup:
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert hub.get("/user/alice/api/status").status_code == 200

    hub.stop_server("alice")
    assert job(slurm, job_id).finished
    poll("the slice is free", lambda: free(slurm, "3g.40gb") == free_before)
    (session,) = ledger_sessions(data, "alice")
    assert session["status"] == "stopped"
    assert session["charged_list_cents"] < session["hold_list_cents"]
    assert "Submitting the job of alice/: sbatch --parsable --job-name=slicehub-" in hub.log_text()


HOSTILE = [
    ({"slice_type": "cpu", "gres": "gpu:h100:2"}, "Unknown option 'gres'"),
    ({"slice_type": "cpu", "req_gres": "gpu:h100:2"}, "Unknown option 'req_gres'"),
    ({"slice_type": "cpu", "prologue": "touch /tmp/slicehub-pwned"}, "Unknown option"),
    ({"slice_type": "cpu", "req_prologue": "touch /tmp/slicehub-pwned"}, "Unknown option"),
    ({"slice_type": "cpu", "partition": "gpu"}, "Unknown option 'partition'"),
    ({"slice_type": "cpu", "account": "root"}, "Unknown option 'account'"),
    ({"slice_type": "cpu", "req_options": "--exclusive"}, "Unknown option"),
    ({"slice_type": "cpu", "cmd": "/bin/sh"}, "Unknown option 'cmd'"),
    ({"slice_type": "cpu\n#SBATCH --gres=gpu:h100:2"}, "is not a slice type name"),
    ({"slice_type": "cpu; touch /tmp/slicehub-pwned"}, "is not a slice type name"),
    ({"slice_type": "$(touch /tmp/slicehub-pwned)"}, "is not a slice type name"),
    ({"slice_type": "cpu", "project": "demo-lab\n#SBATCH --account=root"}, "is not a project id"),
    ({"slice_type": "cpu", "project": "demo-lab`touch /tmp/slicehub-pwned`"}, "not a project id"),
    ({"slice_type": "cpu", "duration_hours": "1; touch /tmp/slicehub-pwned"}, "must be a number"),
    ({"slice_type": "cpu", "duration_hours": 1e9}, "is outside that"),
]


def test_hostile_options_are_refused_and_never_reach_the_job(slurm_hub, slurm):
    hub, data = slurm_hub
    for options, words in HOSTILE:
        for wrap in (False, True):
            r = hub.start_server("bob", options, wrap=wrap)
            assert r.status_code == 400, (options, r.text)
            assert words in r.json()["message"], (options, r.json())
    assert hub.server_model("bob") is None
    assert ledger_sessions(data, "bob") == []  # nothing was held

    r = hub.start_server("bob", {"slice_type": "cpu", "duration_hours": 0.5})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob", timeout=WAIT_S)
    job_id = state(hub, "bob")["job_id"]
    queued = job(slurm, job_id)
    assert (queued.partition, queued.gres, queued.account) == ("cpu", {}, "demo-lab")
    script = batch_script(slurm, job_id)
    for fragment in ("#SBATCH", "pwned", "--exclusive", "gpu:h100", "account=root", "/bin/sh\n"):
        assert fragment not in script, fragment
    venv = Path(sys.executable).parent
    assert script.startswith("#!/bin/bash\n")
    assert f"exec {venv}/jupyterhub-singleuser" in script, script  # it reports its own port
    assert "export CUDA_VISIBLE_DEVICES=\n" in script  # a CPU slice sees no GPU
    assert "token" not in script.lower()  # the server's secrets travel in its environment
    assert not Path("/tmp/slicehub-pwned").exists()

    # batchspawner's API would let the server's token set any spawner attribute: not here
    token = server_process(job_id).environ()["JUPYTERHUB_API_TOKEN"]
    s = requests.Session()
    s.trust_env = False
    url = f"{hub.api_url}/batchspawner"
    as_server = {"Authorization": f"token {token}"}
    for body in ({"job_id": "1"}, {"port": 1234, "req_gres": "gpu:h100:2"}, {"cmd": ["/bin/sh"]}):
        assert s.post(url, json=body, headers=as_server, timeout=10).status_code == 400
    assert s.post(url, json={"port": 1234}, headers=as_server, timeout=10).status_code == 409
    assert s.post(url, json={"port": 1}, headers={"Authorization": "token x"}).status_code == 403
    assert state(hub, "bob")["job_id"] == job_id
    assert hub.get("/user/bob/api/status").status_code == 200
    hub.stop_server("bob")


def test_a_full_cluster_queues_the_start_until_a_slice_is_freed(hub_factory, slurm, tmp_path):
    # a queued start answers 202 after 2 s instead of JupyterHub's 10
    extra = 'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 2}\n'
    hub, data = start_hub(hub_factory, tmp_path, slurm, extra=extra)
    for u in ("alice", "bob", "carol"):
        hub.create_user(u)
    fillers = filler(slurm, tmp_path, "h100", free(slurm, "h100"))
    assert free(slurm, "h100") == 0

    # the form: the type is shown as full, and can still be chosen (the start waits)
    browser = hub.login("alice", "slicehub-demo")
    page = browser.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "HK$38.50" in page and "HK$5.50" in page
    assert "none free</strong>: a start waits in" in page
    assert re.search(r"40 of 40", page), page
    assert "declared" in page

    options = {"slice_type": "h100x1", "duration_hours": 1}
    assert hub.start_server("bob", options).status_code == 202
    bob = Progress(hub, "bob")
    bob_job = bob.wait_for(r"^Slurm job \d+ pending: Resources \(position 1 in the queue\)$")
    assert hub.start_server("carol", options).status_code == 202
    carol = Progress(hub, "carol")
    carol.wait_for(r"^Slurm job \d+ pending: Resources \(position 2 in the queue\)$")
    assert hub.server_model("carol")["pending"] == "spawn"

    # carol gives up while queued: her job is cancelled and her hold released
    carol_job = re.search(r"job (\d+)", carol.messages[-1]).group(1)
    hub.stop_server("carol")
    assert job(slurm, carol_job).state == "CANCELLED"
    (session,) = ledger_sessions(data, "carol")
    assert session["status"] == "stopped"
    assert session["charged_list_cents"] == 0  # her time in the queue cost nothing
    carol.close()

    # a slice is freed: bob's job starts and his server comes up
    freed_at = datetime.now(UTC)
    slurm.run(sc.scancel_argv(fillers[0], executable=slurm.scancel))
    hub.wait_for_server("bob", timeout=WAIT_S)
    bob.wait_for(r"running on")
    assert state(hub, "bob")["job_id"] == re.search(r"job (\d+)", bob_job).group(1)
    assert hub.get("/user/bob/api/status").status_code == 200
    (held,) = ledger_sessions(data, "bob")
    # metered from his job's start, not from the hold: the queue is not charged, and the
    # session keeps the full hour it held
    assert held["begun"] and datetime.fromisoformat(held["started_at"]) >= freed_at
    length = datetime.fromisoformat(held["end_at"]) - datetime.fromisoformat(held["started_at"])
    assert length == timedelta(hours=1)
    bob.close()
    hub.stop_server("bob")
    assert ledger_sessions(data, "bob")[0]["status"] == "stopped"


def test_a_hub_restart_reconnects_to_running_jobs(slurm_hub, slurm):
    hub, _data = slurm_hub
    for u in ("alice", "bob"):
        options = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
        assert hub.start_server(u, options).status_code in (201, 202)
    jobs = {}
    for u in ("alice", "bob"):
        hub.wait_for_server(u, timeout=WAIT_S)
        jobs[u] = state(hub, u)["job_id"]

    hub.restart()
    for u in ("alice", "bob"):
        model = hub.server_model(u)
        assert model is not None and model["ready"], model
        assert model["state"]["job_id"] == jobs[u]
        assert job(slurm, jobs[u]).state == "RUNNING"
        assert hub.get(f"/user/{u}/api/status").status_code == 200
    assert f"reconnected to Slurm job {jobs['alice']}" in hub.log_text()
    hub.stop_server("alice")
    hub.stop_server("bob")
    assert all(job(slurm, j).finished for j in jobs.values())


def test_squeue_failures_drop_nothing_and_a_killed_job_is_charged_until_it_died(
    hub_factory, tmp_path, slurm
):
    flag = tmp_path / "squeue-fails"
    flaky = tmp_path / "flaky-squeue"
    # a fake, named as one: squeue that fails (as when slurmctld restarts) while `flag` exists
    flaky.write_text(
        "#!/bin/sh\n"
        f"if [ -e {flag} ]; then\n"
        "  echo 'squeue: error: slurm_load_jobs error: Unable to contact slurm controller' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {slurm.squeue} "$@"\n'
    )
    flaky.chmod(0o755)
    site = write_site(tmp_path, append=f'\n[slurm.commands]\nsqueue = "{flaky}"\n')
    hub, data = start_hub(hub_factory, tmp_path, slurm, site=site)
    hub.create_user("bob")
    r = hub.start_server("bob", {"slice_type": "h100.1g.10gb", "duration_hours": 2})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob", timeout=WAIT_S)
    job_id = state(hub, "bob")["job_id"]

    flag.touch()  # squeue fails for several of the hub's 1 s polls
    time.sleep(5)
    assert hub.server_model("bob")["ready"]
    assert "squeue failed" in hub.log_text()
    flag.unlink()
    time.sleep(2)
    assert hub.server_model("bob")["ready"]
    assert hub.get("/user/bob/api/status").status_code == 200

    slurm.run(sc.scancel_argv(job_id, executable=slurm.scancel))  # behind the hub's back
    poll("the hub drops the server", lambda: hub.server_model("bob") is None, timeout=20)
    (session,) = poll(
        "the ledger session is released",
        lambda: [s for s in ledger_sessions(data, "bob") if s["status"] == "stopped"],
    )

    def accounted():
        done = slurm.run(sc.sacct_argv([job_id], executable=slurm.sacct))
        found = sa.parse_sacct(done.stdout)
        return found[0] if found and found[0].end is not None else None

    ended = poll("sacct has the job's end", accounted).end.astimezone(UTC)
    stopped = datetime.fromisoformat(session["stopped_at"])
    assert 0 <= (stopped - ended).total_seconds() <= 4  # charged until it died (+ detection)
    assert session["charged_list_cents"] < session["hold_list_cents"]
    assert re.search(
        r"Slurm job \d+ of bob/ has ended \(\w+\) without the hub stopping it", hub.log_text()
    )
    assert re.search(r"\[W .* squeue failed for jobs \d+: flaky-squeue exited 1", hub.log_text())
    poll("the slice is free", lambda: free(slurm, "1g.10gb") == slurm.gres["1g.10gb"])


def test_a_job_that_dies_before_the_notebook_starts_says_why_and_frees_everything(
    hub_factory, tmp_path, slurm
):
    extra = "c.Spawner.cmd = ['/nonexistent/jupyterhub-su']\n"
    hub, data = start_hub(hub_factory, tmp_path, slurm, extra=extra)
    hub.create_user("bob")
    free_before = free(slurm, "3g.40gb")
    r = hub.start_server("bob", {"slice_type": "h100.3g.40gb", "duration_hours": 1})
    if r.status_code == 202:
        progress = Progress(hub, "bob")
        progress.done.wait(WAIT_S)
        message = progress.messages[-1]
    else:
        message = hub.log_text()
    assert re.search(r"Slurm job \d+ ended \(FAILED\) before the notebook server started", message)
    assert "/nonexistent/jupyterhub-su" in message and "No such file" in message
    poll("the server is gone", lambda: hub.server_model("bob") is None)
    (session,) = ledger_sessions(data, "bob")
    assert session["status"] == "stopped"
    assert free(slurm, "3g.40gb") == free_before


def test_a_project_without_a_slurm_account_is_refused_before_any_hold(hub_factory, tmp_path, slurm):
    site = write_site(tmp_path, ('vision-group = "vision-group"\n', ""))
    hub, data = start_hub(hub_factory, tmp_path, slurm, site=site)
    hub.create_user("alice")
    r = hub.start_server("alice", {"project": "vision-group", "slice_type": "cpu"})
    assert r.status_code == 403, r.text
    assert "Project vision-group has no Slurm account on this cluster" in r.json()["message"]
    assert ledger_sessions(data, "alice") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a Unix account needs root")
def test_jobs_run_as_the_users_unix_account(hub_factory, tmp_path, slurm):
    unix_user(slurm, UNIX_USER)
    hub, _data = start_unix_users_hub(hub_factory, tmp_path, slurm, [UNIX_USER])
    r = hub.start_server(UNIX_USER, {"slice_type": "h100.1g.10gb", "duration_hours": 0.5})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(UNIX_USER, timeout=WAIT_S)
    job_id = state(hub, UNIX_USER)["job_id"]
    assert job(slurm, job_id).user == UNIX_USER
    home = pwd.getpwnam(UNIX_USER).pw_dir
    proc = server_process(job_id)
    assert proc.uids().real == pwd.getpwnam(UNIX_USER).pw_uid
    assert proc.environ()["HOME"] == home
    assert Path(home, ".slicehub", f"slurm-{job_id}.log").exists()
    hub.stop_server(UNIX_USER)
    assert job(slurm, job_id).finished


def test_slurm_accounting_and_the_ledger_agree(hub_factory, tmp_path, slurm):
    hub, data = start_hub(hub_factory, tmp_path, slurm, meter="3")
    since = datetime.now(UTC)
    options = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
    for u in ("alice", "bob", "carol"):
        hub.create_user(u)
        assert hub.start_server(u, options).status_code in (201, 202)
    jobs = {}
    for u in ("alice", "bob", "carol"):
        hub.wait_for_server(u, timeout=WAIT_S)
        jobs[u] = state(hub, u)["job_id"]
    time.sleep(3)
    hub.stop_server("alice")  # stopped through the hub
    slurm.run(sc.scancel_argv(jobs["bob"], executable=slurm.scancel))  # killed behind its back
    poll("the hub drops bob's server", lambda: hub.server_model("bob") is None, timeout=20)
    time.sleep(2)  # carol's server still runs: the ledger meters her up to its last tick
    reconcile(slurm, data, since, jobs.values(), tolerance=3)  # the metering tick of this hub
    hub.stop_server("carol")


def test_an_extension_raises_the_jobs_time_limit(slurm_hub, slurm):
    """Extend (JupyterLab, the quota API) moves the session's end in the ledger; the spawner's
    poll carries it to Slurm, so the job is not ended at the first hold's end."""
    hub, data = slurm_hub
    r = hub.start_server(
        "bob", {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
    )
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob", timeout=WAIT_S)
    job_id = state(hub, "bob")["job_id"]
    (session,) = ledger_sessions(data, "bob")

    def limit_minutes() -> int:
        h, m, _s = (int(x) for x in show_job(slurm, job_id)["TimeLimit"].split(":"))
        return h * 60 + m

    before = limit_minutes()
    assert 58 <= before <= 60
    token = hub.api("POST", "/users/bob/tokens", json={"note": "test"}).json()["token"]
    with requests.Session() as s:
        s.trust_env = False
        r = s.post(
            f"{hub.url}/services/quota/api/sessions/{session['id']}/extend",
            json={"minutes": 90},
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    poll("the job's time limit follows the extension", lambda: limit_minutes() >= before + 89)
    assert limit_minutes() <= before + 91
    hub.stop_server("bob")


def test_an_idle_server_is_parked_its_job_ends_and_sacct_agrees(hub_factory, tmp_path, slurm):
    """Parking under Slurm (issue 13): an idle server's job is warned, then parked by the
    culler; the job ends, the session is charged to the parking moment, and the ledger
    matches sacct."""
    site = write_site(
        tmp_path, append='\n[parking]\nidle = "12 s"\nwarning = "6 s"\ncheck = "3 s"\n'
    )
    hub, data = start_hub(hub_factory, tmp_path, slurm, site=site)
    hub.create_user("alice")
    since = datetime.now(UTC)
    options = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
    assert hub.start_server("alice", options).status_code in (201, 202)
    hub.wait_for_server("alice", timeout=WAIT_S)
    job_id = state(hub, "alice")["job_id"]

    def parked():
        (s,) = ledger_sessions(data, "alice")
        return s if s["status"] == "stopped" else None

    session = poll("the idle server is parked", parked, timeout=60)
    assert session["stop_reason"] == "parked" and session["idle_seconds"] >= 12
    poll("the hub drops alice's server", lambda: hub.server_model("alice") is None, timeout=30)
    poll("the job has ended", lambda: job(slurm, job_id).finished, timeout=30)
    reconcile(slurm, data, since, [job_id], tolerance=3)
