"""The spawners' start, poll, stop and saved state, in-process (tests/mocking.py): a real server
process and the spawner's real code, with the quota service and Slurm's commands faked at their
seams. A normal stop, a crash and a failed start must be told apart in the log and in the reason
the ledger is given; a restarted hub must find its servers again from the saved state."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from jupyterhub import orm
from mocking import fake_quota, fake_slurm, hub_db, new_spawner, utc_now
from tornado import web
from traitlets.config import Config

from slicehub.spawners.local.spawner import LocalSliceSpawner
from slicehub.spawners.slurm.batch_api import close_batchspawner_api
from slicehub.spawners.slurm.spawner import SlurmJobFailed, SlurmSliceSpawner

REPO = Path(__file__).resolve().parents[2]
DEMO_SITE = REPO / "hub_config" / "demo-site.toml"
SLURM_SITE = REPO / "hub_config" / "slurm-site.toml"
OPTIONS = {"project": "ai-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
CRASH_WORDS = "without being stopped"


@pytest.fixture
def db():
    return hub_db()


@pytest.fixture
def quota():
    return fake_quota()


@pytest.fixture
def local(db, quota, tmp_path):
    """make(**traits): ann's LocalSliceSpawner on the demo site, its reservations in tmp_path."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("site_file", str(DEMO_SITE))
        kwargs.setdefault("database_url", f"sqlite:///{tmp_path / 'slices.sqlite'}")
        kwargs.setdefault("home_root", str(tmp_path / "homes"))
        kwargs.setdefault("reconcile_interval", 0)
        spawner = new_spawner(LocalSliceSpawner, db, quota_client_class=quota, **kwargs)
        spawner.user_options = dict(OPTIONS)
        made.append(spawner)
        return spawner

    yield make
    for spawner in made:  # no server process outlives its test, and each is reaped
        proc = getattr(spawner, "proc", None)
        if proc is not None:
            proc.kill()
            proc.wait()
        elif spawner.pid:
            try:
                os.kill(spawner.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def crash_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if CRASH_WORDS in r.getMessage()]


async def test_a_stop_is_a_stop_not_a_crash(local, quota, caplog):
    caplog.set_level(logging.INFO)
    spawner = local()
    await spawner.start()
    assert await spawner.poll() is None
    assert spawner.slice_source.holds(spawner.holder)
    env = spawner.get_env()
    assert env["SLICEHUB_SLICE_TYPE"] == "h100.1g.10gb" and env["CUDA_VISIBLE_DEVICES"]
    assert env["SLICEHUB_LEDGER_SESSION"] == "1" and env["SLICEHUB_PROJECT"] == "ai-lab"

    await spawner.stop()

    assert quota.book.reasons() == ["stopped"]
    assert not spawner.slice_source.holds(spawner.holder)
    assert crash_lines(caplog) == []  # LocalProcessSpawner.stop polls: that is no crash
    assert await spawner.poll() is not None
    assert quota.book.reasons() == ["stopped"]  # nothing released twice


async def test_a_crash_is_released_as_crashed_and_logged(local, quota, caplog):
    caplog.set_level(logging.INFO)
    spawner = local()
    await spawner.start()
    os.kill(spawner.pid, signal.SIGKILL)
    spawner.proc.wait()

    assert await spawner.poll() is not None

    assert quota.book.reasons() == ["crashed"]
    assert not spawner.slice_source.holds(spawner.holder)
    assert len(crash_lines(caplog)) == 1 and "ann/" in crash_lines(caplog)[0]


async def test_a_failed_start_releases_as_start_failed(local, quota, caplog):
    caplog.set_level(logging.INFO)
    spawner = local(cmd=["/nonexistent/jupyterhub-singleuser"])
    with pytest.raises(FileNotFoundError):
        await spawner.start()
    assert quota.book.reasons() == ["start-failed"]
    assert not spawner.slice_source.holds(spawner.holder)
    assert crash_lines(caplog) == []
    assert any("did not complete" in r.getMessage() for r in caplog.records)


async def test_a_refused_hold_takes_no_slice(local, quota):
    quota.book.refusal = (402, "Project ai-lab has HK$0.40 of subsidy left; ...")
    spawner = local()
    with pytest.raises(web.HTTPError) as refused:
        await spawner.start()
    assert refused.value.status_code == 402 and "HK$0.40" in refused.value.log_message
    assert not spawner.slice_source.holds(spawner.holder)
    assert quota.book.holds == {}


async def test_the_users_hub_groups_go_with_the_project_list_and_the_hold(local, quota, db):
    """ann's hub groups (her directory groups, put there at sign-in) go to the quota service
    with the form's project list, with the lookup of the project to charge when the options
    name none, and with the hold: a project's member group may be what makes her a member."""
    ann = db.query(orm.User).filter_by(name="ann").one()
    ann.groups = [orm.Group(name="proj-vision"), orm.Group(name="a-team")]
    db.commit()
    spawner = local()
    spawner.user_options = {k: v for k, v in OPTIONS.items() if k != "project"}
    assert "ai-lab" in await spawner._render_options_form()
    await spawner.start()
    assert spawner.ledger_session["project"] == "ai-lab"  # her only project
    groups = ["a-team", "proj-vision"]
    assert quota.book.groups == [("projects", groups), ("projects", groups), ("hold", groups)]
    await spawner.stop()


async def test_a_user_in_no_group_sends_none(local, quota):
    spawner = local()
    await spawner.start()
    assert quota.book.groups == [("hold", [])]
    await spawner.stop()


class Requester:
    """What JupyterHub puts on a spawner during a start (`spawner.handler`): who asked."""

    def __init__(self, kind: str, name: str):
        self.current_user = type("Who", (), {"kind": kind, "name": name})()


async def test_only_the_classroom_service_may_start_a_pre_warmed_server(local, quota):
    """A start with `prewarm_window` is the classroom service's: the course pays until the
    student claims it. The student asking for one themselves (or another service) is refused
    with a sentence before anything is held; the classroom service's start is held as a
    pre-warm and its server is told it was pre-warmed (SLICEHUB_PREWARM=1)."""
    for who in (Requester("user", "ann"), Requester("service", "culler"), None):
        spawner = local()
        spawner.user_options = {**OPTIONS, "prewarm_window": 7}
        spawner.handler = who
        with pytest.raises(web.HTTPError) as refused:
            await spawner.start()
        assert refused.value.status_code == 403 and "pre-warmed for a class" in str(refused.value)
    assert quota.book.holds == {}
    spawner = local()
    spawner.user_options = {**OPTIONS, "prewarm_window": 7}
    spawner.handler = Requester("service", "classroom")
    await spawner.start()
    assert quota.book.prewarmed == [7]
    assert spawner.get_env()["SLICEHUB_PREWARM"] == "1"
    await spawner.stop()
    plain = local()
    await plain.start()
    assert plain.get_env()["SLICEHUB_PREWARM"] == "0" and quota.book.prewarmed == [7, None]
    await plain.stop()


async def test_no_slice_free_is_409_and_releases_the_hold(local, quota):
    spawner = local()
    spawner.user_options = {**OPTIONS, "slice_type": "h100x1"}  # the demo has one whole H100
    whole = spawner.check_options(spawner.user_options).slice_type
    await spawner.slice_source.take("bob/", whole, utc_now() + timedelta(hours=1))
    with pytest.raises(web.HTTPError) as refused:
        await spawner.start()
    assert refused.value.status_code == 409 and "No h100x1 slice is free" in str(refused.value)
    assert quota.book.reasons() == ["start-failed"]
    assert quota.book.active() == []


async def test_a_restarted_hub_finds_the_server_from_its_state(local, quota, caplog):
    caplog.set_level(logging.INFO)
    first = local()
    await first.start()
    state = first.get_state()
    assert state["slicehub"]["version"] == 2
    assert state["slicehub"]["taken"]["devices"] == first.get_env()["CUDA_VISIBLE_DEVICES"].split(
        ","
    )

    again = local()  # the hub restarted: a new spawner object, the same reservations
    again.load_state(state)
    assert await again.poll() is None
    assert again.taken == first.taken
    assert again.ledger_session["id"] == first.ledger_session["id"]
    await again.stop()
    assert quota.book.reasons() == ["stopped"]
    assert not again.slice_source.holds(again.holder)


async def test_a_version_1_state_is_read_and_the_log_says_so(local, quota, caplog):
    caplog.set_level(logging.INFO)
    first = local()
    await first.start()
    v2 = first.get_state()["slicehub"]
    reservation = first.slice_source.manager.adopt(first.holder)
    v1 = {
        "pid": first.pid,
        "slicehub": {
            "version": 1,
            "assignment": reservation.to_dict(),
            "options": v2["options"],
            "session_end": v2["session_end"],
            "ledger_session": v2["ledger_session"],
        },
    }
    again = local()
    again.load_state(v1)
    assert again.taken == first.taken
    assert any("version 1 (this hub writes 2)" in r.getMessage() for r in caplog.records)
    await again.stop()
    assert quota.book.reasons() == ["stopped"]


# -- Slurm ----------------------------------------------------------------------------------------


@pytest.fixture
def slurm(db, quota, tmp_path):
    """(make(**traits), cluster): ann's SlurmSliceSpawner against a fake cluster."""
    close_batchspawner_api()
    client_class = fake_slurm()

    def make(**kwargs):
        kwargs.setdefault("site_file", str(SLURM_SITE))
        kwargs.setdefault("home_root", str(tmp_path / "homes"))
        kwargs.setdefault("startup_poll_interval", 0.05)
        kwargs.setdefault("slurm_retry_timeout", 1)
        kwargs.setdefault("cmd", ["jupyterhub-singleuser"])  # the fake cluster runs nothing
        spawner = new_spawner(
            SlurmSliceSpawner,
            db,
            quota_client_class=quota,
            slurm_client_class=client_class,
            **kwargs,
        )
        spawner.user_options = {**OPTIONS, "project": "demo-lab"}
        return spawner

    return make, client_class.cluster


async def submitted(cluster, task) -> str:
    """The id of the job a starting spawner submitted (its start's error, if it failed first)."""
    while not cluster.jobs:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    return next(iter(cluster.jobs))


async def start_slurm_job(spawner, cluster, port=8765):
    """Start, and play Slurm and the server: the job runs, then the server reports its port
    (as its server does through the hub's API once it listens, after metering has begun)."""
    task = asyncio.ensure_future(spawner.start())
    job_id = await submitted(cluster, task)
    cluster.run_job(job_id)
    while not task.done():
        if (spawner.ledger_session or {}).get("begun") and not spawner.port:
            spawner.report_port(port)
        await asyncio.sleep(0.01)
    return await task, job_id


async def test_slurm_start_stop_and_the_reasons(slurm, quota, caplog):
    caplog.set_level(logging.INFO)
    make, cluster = slurm
    spawner = make()
    (ip, port), job_id = await start_slurm_job(spawner, cluster)
    assert (ip, port) == ("127.0.0.1", 8765)  # the node's NodeAddr, the port it reported
    [sbatch] = cluster.commands("sbatch")
    assert "--gres=gpu:1g.10gb:1" in sbatch and "--account=demo-lab" in sbatch
    env = cluster.envs[0]
    assert env["SLICEHUB_SLICE_TYPE"] == "h100.1g.10gb" and "CUDA_VISIBLE_DEVICES" not in env
    assert env["SLICEHUB_DEVICES_DECLARED"] == "1"  # the test cluster's GRES are stand-ins
    assert env["SLICEHUB_REPORT_PORT"] == "1"  # the server binds a free port and reports it
    assert quota.book.begins == [1]  # metered from the job's start, not the queue

    assert await spawner.poll() is None
    await spawner.stop(now=True)
    assert cluster.commands("scancel")[-1][-1] == job_id
    assert quota.book.reasons() == ["stopped"]
    assert crash_lines(caplog) == []


def test_batchspawner_settings_it_does_not_use_are_named_once(slurm, monkeypatch, caplog):
    """A config carried over from batchspawner (its wrapper, its templates) is said to be ignored:
    the job runs Spawner.cmd itself and the server reports its own port."""
    caplog.set_level(logging.WARNING)
    make, _cluster = slurm
    monkeypatch.setattr(SlurmSliceSpawner, "_warned_config", False)
    config = Config(
        {
            "SlurmSliceSpawner": {
                "batchspawner_singleuser_cmd": "/opt/bin/batchspawner-singleuser",
                "req_gres": "gpu:7g.80gb:8",
            }
        }
    )
    for _ in range(2):
        make(config=config)._warn_ignored_config()
    [line] = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert "ignores batchspawner_singleuser_cmd, req_gres:" in line
    assert "reports its own port" in line


async def test_slurm_job_that_dies_before_the_server_is_start_failed(slurm, quota):
    make, cluster = slurm
    spawner = make()
    task = asyncio.ensure_future(spawner.start())
    cluster.end_job(await submitted(cluster, task), "FAILED")
    with pytest.raises(SlurmJobFailed, match=r"ended \(FAILED\) before the notebook server"):
        await task
    assert quota.book.reasons() == ["start-failed"]
    assert spawner.job_id == ""


async def test_slurm_job_that_ends_behind_the_hubs_back_is_crashed(slurm, quota, caplog):
    caplog.set_level(logging.INFO)
    make, cluster = slurm
    spawner = make()
    _, job_id = await start_slurm_job(spawner, cluster)
    cluster.end_job(job_id, "NODE_FAIL", forget=True)  # gone from squeue; sacct has its end
    await asyncio.sleep(1.05)  # a poll reuses an squeue up to 1 s old (one squeue for all)

    assert await spawner.poll() is not None

    [(_, reason, stopped_at)] = quota.book.releases
    assert reason == "crashed"
    assert stopped_at is not None  # charged to Slurm's end, not to when the hub noticed
    assert len(crash_lines(caplog)) == 1


async def test_slurm_restart_reconnects_from_v2_and_v1_state(slurm, quota, caplog):
    caplog.set_level(logging.INFO)
    make, cluster = slurm
    first = make()
    _, job_id = await start_slurm_job(first, cluster)
    state = first.get_state()
    assert state["slicehub"]["slurm"]["job_id"] == job_id

    again = make()
    again.load_state(state)
    assert again.job_id == job_id and await again.poll() is None
    assert any(f"reconnected to Slurm job {job_id}" in r.getMessage() for r in caplog.records)

    part = state["slicehub"]
    v1 = {
        "job_id": job_id,
        "job_status": "RUNNING",
        "slicehub_slurm": {
            "version": 1,
            "job_id": job_id,
            "options": part["options"],
            "session_end": part["session_end"],
            "ledger_session": part["ledger_session"],
            "node": part["slurm"]["node"],
            "job": part["slurm"]["job"],
        },
    }
    old = make()
    old.load_state(v1)
    assert old.job_id == job_id and old.ledger_session == first.ledger_session
    assert any("version 1 (this hub writes 2)" in r.getMessage() for r in caplog.records)
    await old.stop(now=True)
    assert quota.book.reasons() == ["stopped"]


async def test_after_parking_the_form_says_why_and_keeps_the_choices(local, quota, db):
    """The user's next visit after their session was parked: the form says when, after how
    long idle, what it cost and what went back (hostile text escaped), with their last
    choices selected; a session stopped otherwise says nothing."""
    spawner = local()
    spawner.orm_spawner.user_options = dict(OPTIONS)  # her last start's choices
    quota.book.holds[7] = {
        "id": 7,
        "user": "ann",
        "server_name": "",
        "project": "<b>ai-lab</b>",
        "slice_type": "h100.1g.10gb",
        "status": "stopped",
        "stop_reason": "parked",
        "stopped_at": "2026-12-03T12:35:00+00:00",
        "idle_seconds": 1800,
        "hold_list_cents": 1100,
        "charged_list_cents": 275,
    }
    form = await spawner._render_options_form()
    assert 'id="slicehub-notice"' in form and "after 30 min without activity" in form
    assert "charged HK$2.75" in form and "the HK$8.25 it still held" in form
    assert "&lt;b&gt;ai-lab&lt;/b&gt;" in form and "<b>ai-lab" not in form
    checked = re.findall(r'<input type="radio"[^>]*value="([^"]+)"[^>]*\bchecked\b', form)
    assert checked == ["h100.1g.10gb"]  # her last choice, ready to start again

    quota.book.holds[7]["stop_reason"] = "stopped"
    assert 'id="slicehub-notice"' not in await spawner._render_options_form()
