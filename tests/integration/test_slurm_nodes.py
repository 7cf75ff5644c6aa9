"""The centre's shape on Slurm: the test cluster has two nodes (n1 and n2, two slurmd on this
machine, scripts/slurm.sh), each with half of the cluster's slices (20 1g.10gb, 2 3g.40gb and
one whole H100 each), and the hub runs its servers on all of them.

What a centre of many nodes relies on: servers started together run on different nodes, as
their users' own Unix accounts, and the hub reaches each through the proxy; the form's free counts
add up every node, and a start waits in the queue only when every node is full; a hub killed
with kill -9 while servers run on two nodes comes back with the same command and finds both:
their jobs watched again, their ledger sessions the same ones, metered once (the charges tile
each session, and Slurm's accounting agrees with the ledger).

The fixtures, the hub and what the tests read come from test_slurm_hub.py.
"""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from slicehub.common import clock
from slicehub.quota.ledger import Ledger
from slicehub.spawners.slurm import commands as sc
from tests.integration import test_slurm_hub as on_slurm
from tests.integration.test_slurm_hub import (
    WAIT_S,
    Progress,
    filler,
    job,
    ledger_sessions,
    poll,
    reconcile,
    server_process,
    start_hub,
    start_unix_users_hub,
    state,
    unix_user,
)
from tests.unit.test_ledger_properties import check_ledger

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

# its fixtures, here too: the cluster with the demo's accounts, and no job left around a test
slurm = on_slurm.slurm
no_jobs_left = on_slurm.no_jobs_left

WHOLE_GPU = {"project": "demo-lab", "slice_type": "h100x1", "duration_hours": 1}
UNIX_USERS = ("slicehub-t2", "slicehub-t3")


@pytest.fixture
def two_nodes(slurm) -> tuple[str, str]:
    """The cluster's two nodes (scripts/slurm.sh's default, SLICEHUB_SLURM_NODES=2)."""
    if len(slurm.nodes) != 2:
        pytest.fail(f"the test cluster has nodes {slurm.nodes}; these tests need two")
    return slurm.nodes[0], slurm.nodes[1]


def start_together(hub, users, options) -> None:
    """Every user's POST at once, as a class pressing Start together."""
    with ThreadPoolExecutor(len(users)) as pool:
        answers = list(pool.map(lambda u: hub.start_server(u, options), users))
    for r in answers:
        assert r.status_code in (201, 202), r.text
    for u in users:
        hub.wait_for_server(u, timeout=WAIT_S)


def free_now(page: str, slice_type: str) -> str:
    """The form's "Free now" cell of `slice_type` (in the first project offering it), as text."""
    found = re.search(rf'value="{re.escape(slice_type)}".*?-free">(.*?)</td>', page, re.S)
    assert found, page
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


@pytest.mark.skipif(os.geteuid() != 0, reason="creating Unix accounts needs root")
def test_servers_started_together_run_on_different_nodes_as_their_users(
    hub_factory, tmp_path, slurm, two_nodes
):
    accounts = {u: unix_user(slurm, u) for u in UNIX_USERS}
    hub, _data = start_unix_users_hub(hub_factory, tmp_path, slurm, UNIX_USERS)

    # each node has one whole H100: two started together can only run on two nodes
    start_together(hub, UNIX_USERS, WHOLE_GPU)
    nodes = {}
    for user, account in accounts.items():
        job_id = state(hub, user)["job_id"]
        queued = job(slurm, job_id)
        assert queued.state == "RUNNING" and queued.user == user
        nodes[user] = queued.nodes
        assert state(hub, user)["slicehub"]["slurm"]["node"] == queued.nodes  # kept in its state
        proc = server_process(job_id)
        assert proc.uids().real == account.pw_uid
        env = proc.environ()
        assert env["SLICEHUB_NODE"] == env["SLURMD_NODENAME"] == queued.nodes
        assert env["HOME"] == account.pw_dir
        assert hub.get(f"/user/{user}/api/status").status_code == 200  # through the proxy
    assert sorted(nodes.values()) == sorted(two_nodes), nodes

    for user in UNIX_USERS:
        job_id = state(hub, user)["job_id"]
        hub.stop_server(user)
        assert job(slurm, job_id).finished


def test_the_free_counts_add_up_every_node_and_a_start_queues_when_all_are_full(
    hub_factory, tmp_path, slurm, two_nodes
):
    extra = (
        # a queued start answers 202 after 2 s instead of JupyterHub's 10
        'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 2}\n'
        # the test changes the cluster between two looks at the form: no sinfo reused
        "c.SlurmSliceSpawner.sinfo_max_age = 0\n"
    )
    hub, _data = start_hub(hub_factory, tmp_path, slurm, extra=extra)
    for u in ("alice", "bob"):
        hub.create_user(u)
    browser = hub.login("carol", "slicehub-demo")  # she looks; alice and bob start

    def form() -> str:
        return browser.get(f"{hub.url}/hub/spawn", timeout=30).text

    n1, n2 = two_nodes
    per_node = slurm.gres_per_node["3g.40gb"]
    total = slurm.gres["3g.40gb"]
    assert free_now(form(), "h100.3g.40gb") == f"{total} of {total}"

    # n1 full and one taken on n2: what is free is n2's rest
    on_n1 = filler(slurm, tmp_path, "3g.40gb", per_node, node=n1)
    filler(slurm, tmp_path, "3g.40gb", per_node - 1, node=n2)
    assert free_now(form(), "h100.3g.40gb") == f"1 of {total}"

    options = {"project": "demo-lab", "slice_type": "h100.3g.40gb", "duration_hours": 1}
    assert hub.start_server("alice", options).status_code in (201, 202)
    hub.wait_for_server("alice", timeout=WAIT_S)
    assert job(slurm, state(hub, "alice")["job_id"]).nodes == n2
    assert hub.get("/user/alice/api/status").status_code == 200

    # every node full: the form says a start waits, and one does, with Slurm's reason
    assert free_now(form(), "h100.3g.40gb") == (
        f"none free: a start waits in the queue until one of the {total} is free"
    )
    assert hub.start_server("bob", options).status_code == 202
    bob = Progress(hub, "bob")
    bob.wait_for(r"^Slurm job \d+ pending: Resources \(position 1 in the queue\)$")

    # a slice is freed on n1: bob's job starts there
    slurm.run(sc.scancel_argv(on_n1[0], executable=slurm.scancel))
    hub.wait_for_server("bob", timeout=WAIT_S)
    bob.wait_for(rf"running on {n1}")
    assert job(slurm, state(hub, "bob")["job_id"]).nodes == n1
    assert hub.get("/user/bob/api/status").status_code == 200
    bob.close()
    hub.stop_server("alice")
    hub.stop_server("bob")


def test_a_hub_killed_with_kill_9_finds_its_servers_on_both_nodes(
    hub_factory, tmp_path, slurm, two_nodes
):
    # as after a real crash: the harness stops a killed hub's proxy unless told not to
    hub, data = start_hub(
        hub_factory, tmp_path, slurm, extra="c.JupyterHub.cleanup_proxy = False\n"
    )
    since = datetime.now(UTC)
    users = ("alice", "bob")
    for u in users:
        hub.create_user(u)
    start_together(hub, users, WHOLE_GPU)
    jobs = {u: state(hub, u)["job_id"] for u in users}
    nodes = {u: job(slurm, j).nodes for u, j in jobs.items()}
    assert sorted(nodes.values()) == sorted(two_nodes), nodes
    sessions = {u: ledger_sessions(data, u) for u in users}
    assert all(s[0]["status"] == "active" and s[0]["begun"] for s in sessions.values())

    hub.stop(sig=signal.SIGKILL)  # the servers are Slurm's: they run on
    assert all(job(slurm, j).state == "RUNNING" for j in jobs.values())
    hub.start()  # the same command
    restarted = hub.log_text().rsplit(f"===== harness: start #{hub.starts} =====", 1)[1]
    for u in users:
        model = hub.server_model(u)
        assert model is not None and model["ready"], model
        assert model["state"]["job_id"] == jobs[u]
        assert model["state"]["slicehub"]["slurm"]["node"] == nodes[u]
        assert f"reconnected to Slurm job {jobs[u]}" in restarted
        assert hub.get(f"/user/{u}/api/status").status_code == 200  # through the proxy
        (session,) = ledger_sessions(data, u)
        before = sessions[u][0]
        assert (session["id"], session["end_at"], session["status"]) == (
            before["id"],
            before["end_at"],
            "active",
        )

    # metering goes on, once: the charges tile each session, nothing charged twice
    charged = {u: ledger_sessions(data, u)[0]["charged_list_cents"] for u in users}
    poll(
        "metering goes on after the restart",
        lambda: all(ledger_sessions(data, u)[0]["charged_list_cents"] > charged[u] for u in users),
        timeout=30,  # the new quota service starts, then ticks every second
    )
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        check_ledger(ledger, clock.utcnow())

        # the jobs are watched again: one ended behind the hub's back is found and released
        slurm.run(sc.scancel_argv(jobs["bob"], executable=slurm.scancel))
        poll("the hub drops bob's server", lambda: hub.server_model("bob") is None, timeout=20)
        poll(
            "bob's session is released",
            lambda: ledger_sessions(data, "bob")[0]["status"] == "stopped",
        )
        assert hub.server_model("alice")["ready"]
        hub.stop_server("alice")
        assert job(slurm, jobs["alice"]).finished
        assert [s["status"] for u in users for s in ledger_sessions(data, u)] == ["stopped"] * 2
        check_ledger(ledger, clock.utcnow())
    finally:
        ledger.dispose()
    # and Slurm's accounting of the two jobs agrees with what the ledger charged
    reconcile(slurm, data, since, jobs.values(), tolerance=3)  # the tick, and bob's detection
