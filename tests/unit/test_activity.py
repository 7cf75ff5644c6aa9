"""The server extension's activity reading (slicehub.extensions.activity), the kernels' heartbeat
files (slicehub.extensions.heartbeat) and the checks of the request bodies
(slicehub.extensions.server), without a Jupyter server: plain inputs, fakes named as fakes, the
clock moved by hand. The same parts inside a real server:
tests/integration/test_activity_server.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from slicehub.common import clock
from slicehub.extensions import activity, heartbeat
from slicehub.extensions.activity import Activity, KernelState, build_reading
from slicehub.extensions.server import (
    BodyError,
    parking_shape,
    parse_activity,
    parse_park,
    parse_saved,
)

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
S = timedelta(seconds=1)
IDLE_GPU = {"signal": "idle", "percent": 0, "detail": "GPU-1: 0%"}


def reading(**given) -> dict:
    args = dict(
        now=T0 + 600 * S,
        started=T0,
        session=12,
        kernels=[],
        terminals=[],
        browser=None,
        gpu=IDLE_GPU,
        gpu_active_at=None,
        dask_tasks=0,
        dask_active_at=None,
        front_ends=0,
    )
    return build_reading(**(args | given))


# ---- the reading (pure) ----------------------------------------------------------------------


def test_a_server_where_nothing_happened_is_idle_since_it_started():
    r = reading()
    assert r["idle_seconds"] == 600 and r["busy"] == []
    assert r["last_active"] == "2026-11-22T14:00:00+00:00"
    assert r["at"] == "2026-11-22T14:10:00+00:00" and r["session"] == 12
    assert r["sources"] == dict.fromkeys(("kernels", "terminals", "browser", "gpu", "dask"))


def test_idle_counts_from_the_latest_source():
    r = reading(
        kernels=[
            KernelState("a.ipynb (python3)", "idle", T0 + 100 * S),
            KernelState("b.ipynb (python3)", "idle", T0 + 200 * S),
        ],
        terminals=[T0 + 150 * S],
        browser=T0 + 50 * S,
        gpu_active_at=T0 + 400 * S,
        dask_active_at=T0 + 300 * S,
        front_ends=2,
    )
    assert r["busy"] == [] and r["idle_seconds"] == 200 and r["front_ends"] == 2
    assert r["last_active"] == r["sources"]["gpu"] == "2026-11-22T14:06:40+00:00"
    assert r["sources"]["kernels"] == "2026-11-22T14:03:20+00:00"
    assert r["sources"]["terminals"] == "2026-11-22T14:02:30+00:00"
    assert r["sources"]["browser"] == "2026-11-22T14:00:50+00:00"
    assert r["sources"]["dask"] == "2026-11-22T14:05:00+00:00"


def test_whatever_works_now_is_busy_and_not_idle_however_silent():
    r = reading(
        kernels=[
            KernelState("train.ipynb (python3)", "busy", T0),  # silent since it started
            KernelState("new.ipynb (slicehub-gpu)", "starting", T0),
            KernelState("done.ipynb (python3)", "idle", T0),
        ],
        dask_tasks=3,
        gpu={"signal": "active", "percent": 87, "detail": "GPU-1: 87%"},
    )
    assert r["busy"] == [
        "kernel train.ipynb (python3) is busy",
        "kernel new.ipynb (slicehub-gpu) is starting",
        "Dask: 3 tasks running",
        "GPU: 87% busy",
    ]
    assert r["idle_seconds"] == 0 and r["gpu"]["percent"] == 87
    assert reading(dask_tasks=1)["busy"] == ["Dask: 1 task running"]


def test_a_gpu_without_a_signal_is_not_work():
    r = reading(gpu={"signal": "none", "percent": None, "detail": "no GPU signal: declared"})
    assert r["busy"] == [] and r["idle_seconds"] == 600
    assert r["gpu"]["detail"] == "no GPU signal: declared"


# ---- heartbeat files -------------------------------------------------------------------------


def test_a_heartbeat_is_written_atomically_and_read_back(tmp_path):
    path = heartbeat.path_for(tmp_path, 4242)
    assert path.name == "slicehub-kernel-4242.json"
    heartbeat.write(path, heartbeat.Heartbeat(4242, T0, 3))
    assert json.loads(path.read_text()) == {
        "pid": 4242,
        "at": "2026-11-22T14:00:00+00:00",
        "dask_processing": 3,
    }
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert heartbeat.read_all(tmp_path, T0 + 30 * S, alive=lambda pid: True) == [
        heartbeat.Heartbeat(4242, T0, 3)
    ]


def test_stale_dead_and_broken_heartbeats_are_skipped(tmp_path):
    heartbeat.write(heartbeat.path_for(tmp_path, 1), heartbeat.Heartbeat(1, T0, 2))
    heartbeat.write(heartbeat.path_for(tmp_path, 2), heartbeat.Heartbeat(2, T0 - 31 * S, 5))
    heartbeat.write(heartbeat.path_for(tmp_path, 3), heartbeat.Heartbeat(3, T0, 7))
    heartbeat.path_for(tmp_path, 4).write_text("{not json")
    heartbeat.path_for(tmp_path, 5).write_text('{"pid": 5, "at": "2026-11-22T14:00:00"}')
    beats = heartbeat.read_all(tmp_path, T0, alive=lambda pid: pid != 3)
    assert [b.pid for b in beats] == [1]
    assert heartbeat.read_all(tmp_path / "missing", T0) == []
    assert (
        heartbeat.parse('{"pid": 1, "at": "2026-11-22T14:00:00+00:00", "dask_processing": -1}')
        is None
    )
    assert (
        heartbeat.parse('{"pid": "1", "at": "2026-11-22T14:00:00+00:00", "dask_processing": 1}')
        is None
    )


def test_the_heartbeat_thread_writes_until_stopped_then_removes_its_file(tmp_path):
    counts = iter([2, 5])
    path = heartbeat.path_for(tmp_path, os.getpid())
    thread = heartbeat.HeartbeatThread(path, lambda: next(counts, 0), interval=0.05)
    thread.start()
    deadline = time.monotonic() + 5
    seen = set()
    while time.monotonic() < deadline and 0 not in seen:
        if path.exists():
            beat = heartbeat.parse(path.read_text())
            assert beat is not None and beat.pid == os.getpid()
            seen.add(beat.dask_processing)
        time.sleep(0.01)
    assert 0 in seen and seen <= {2, 5, 0}
    thread.stop()
    assert not thread.is_alive() and not path.exists()
    thread.stop()  # twice, as atexit does after the kernel's shutdown


def test_a_count_that_fails_keeps_the_last_count(tmp_path, caplog):
    calls = []

    def count():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the scheduler did not answer")
        return 4

    path = heartbeat.path_for(tmp_path, os.getpid())
    thread = heartbeat.HeartbeatThread(path, count, interval=0.02)
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(calls) < 3:
        time.sleep(0.01)
    assert heartbeat.parse(path.read_text()).dask_processing == 4
    thread.stop()
    assert "could not count the Dask tasks" in caplog.text


# ---- the server's state: heartbeats, GPU sampler, front ends ----------------------------------


class FakeGpuSampler:
    """gpu_signal.GpuSampler's face, returning the readings it was given."""

    def __init__(self, *readings):
        self.readings = list(readings)
        self.last_reading = None
        self.last_active = None

    def sample(self):
        self.last_reading = self.readings.pop(0) if self.readings else self.last_reading
        if self.last_reading.signal == "active":
            self.last_active = clock.utcnow()
        return self.last_reading


@dataclass
class FakeKernel:
    kernel_name: str
    execution_state: str
    last_activity: datetime


class FakeKernelManager:
    def __init__(self, kernels: dict):
        self.kernels = kernels

    def list_kernel_ids(self):
        return [*self.kernels, "gone-kernel"]  # shut down between the listing and the look

    def get_kernel(self, kid):
        return self.kernels[kid]


class FakeSessionManager:
    async def list_sessions(self):
        return [{"path": "work/train.ipynb", "kernel": {"id": "k1"}}]


@pytest.fixture
def now(monkeypatch):
    moment = [T0]
    monkeypatch.setattr(clock, "utcnow", lambda: moment[0])
    return moment


async def test_the_reading_from_the_servers_managers(tmp_path, now):
    gpu = FakeGpuSampler(
        SimpleNamespace(signal="active", percent=40, detail="GPU-1: 40%"),
        SimpleNamespace(signal="idle", percent=1, detail="GPU-1: 1%"),
    )
    a = Activity(T0 - 3600 * S, tmp_path, ("GPU-1",), session=7, gpu_sampler=gpu)
    kernels = FakeKernelManager(
        {
            "k1": FakeKernel("python3", "idle", T0 - 100 * S),
            "0123456789ab": FakeKernel("slicehub-gpu", "idle", T0 - 50 * S),
        }
    )
    terminals = SimpleNamespace(terminals={"1": SimpleNamespace(last_activity=T0 - 20 * S)})
    first = await a.read(kernels, FakeSessionManager(), terminals)  # samples once: active
    assert first["busy"] == ["GPU: 40% busy"] and first["session"] == 7
    await a.sample()  # the GPU goes idle
    heartbeat.write(
        heartbeat.path_for(tmp_path, os.getpid()), heartbeat.Heartbeat(os.getpid(), T0, 2)
    )
    now[0] = T0 + 10 * S
    r = await a.read(kernels, FakeSessionManager(), None)
    assert r["busy"] == ["Dask: 2 tasks running"]
    assert r["sources"]["gpu"] == r["sources"]["dask"] == "2026-11-22T14:00:00+00:00"
    assert (
        r["sources"]["kernels"] == "2026-11-22T13:59:10+00:00" and r["sources"]["terminals"] is None
    )
    heartbeat.write(
        heartbeat.path_for(tmp_path, os.getpid()), heartbeat.Heartbeat(os.getpid(), T0 + 5 * S, 0)
    )
    now[0] = T0 + 20 * S
    r = await a.read(kernels, FakeSessionManager(), None)
    # the Dask work is remembered where the last heartbeat that saw it left it
    assert r["busy"] == [] and r["idle_seconds"] == 20 and r["gpu"]["signal"] == "idle"
    labels = [k.label for k in await activity.kernel_states(kernels, FakeSessionManager())]
    assert labels == ["work/train.ipynb (python3)", "01234567 (slicehub-gpu)"]


async def test_without_the_gpu_signal_module_the_signal_is_none_with_a_sentence(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(__import__("sys").modules, "slicehub.extensions.gpu_signal", None)
    a = Activity(T0, tmp_path)
    r = await a.read(FakeKernelManager({}), None, None)
    assert r["gpu"]["signal"] == "none" and r["gpu"]["percent"] is None
    assert r["gpu"]["detail"].startswith("This server cannot read the GPU signal")


def test_front_ends_that_polled_in_the_last_30_seconds_are_connected(tmp_path):
    a = Activity(T0, tmp_path)
    a.front_end_seen("tab-a", T0)
    a.front_end_seen("tab-b", T0 + 20 * S)
    assert a.connected(T0 + 30 * S) == {"tab-a", "tab-b"}
    assert a.connected(T0 + 31 * S) == {"tab-b"}


# ---- the park handshake ----------------------------------------------------------------------


async def test_a_park_request_returns_once_every_front_end_saved(tmp_path, now):
    a = Activity(T0, tmp_path)
    a.front_end_seen("tab-a", T0)
    a.front_end_seen("tab-b", T0)
    request = asyncio.create_task(a.request_park(30))
    await asyncio.sleep(0)
    assert a.park_requested("tab-a", T0) and a.park_requested("tab-b", T0)
    await a.saved("tab-a", 3, 0)
    assert not a.park_requested("tab-a", T0) and a.park_requested("tab-b", T0)
    assert not request.done()
    await a.saved("tab-b", 1, 1)
    answer = await asyncio.wait_for(request, 1)
    assert answer == {"front_ends": 2, "saved": 2, "documents": {"saved": 4, "failed": 1}}


async def test_a_park_request_gives_up_after_its_wait(tmp_path, now):
    a = Activity(T0, tmp_path)
    a.front_end_seen("tab-a", T0)
    started = time.monotonic()
    answer = await a.request_park(0.1)
    assert 0.1 <= time.monotonic() - started < 1
    assert answer == {"front_ends": 1, "saved": 0, "documents": {"saved": 0, "failed": 0}}
    # the request stands a while for latecomers, then lapses
    assert a.park_requested("tab-late", T0 + 60 * S)
    assert not a.park_requested("tab-late", T0 + 61 * S)


async def test_with_no_front_end_a_park_request_returns_at_once(tmp_path, now):
    a = Activity(T0, tmp_path)
    a.front_end_seen("tab-gone", T0 - 31 * S)
    answer = await asyncio.wait_for(a.request_park(30), 0.5)
    assert answer["front_ends"] == 0 and answer["saved"] == 0


async def test_an_acknowledgement_without_a_request_is_ignored(tmp_path, now):
    a = Activity(T0, tmp_path)
    await a.saved("tab-a", 1, 0)
    assert not a.park_requested("tab-a", T0)
    a.front_end_seen("tab-a", T0)
    request = asyncio.create_task(a.request_park(0.2))
    await asyncio.sleep(0)
    assert a.park_requested("tab-a", T0)  # the earlier "saved" did not count for this request
    assert (await request)["saved"] == 0


# ---- bodies and the status bar's parking ------------------------------------------------------


def test_bodies_are_checked_with_sentences():
    assert parse_activity(b"") is False and parse_activity(b'{"keep": true}') is True
    assert parse_park(b"{}") == 20 and parse_park(b'{"wait_seconds": 60}') == 60
    assert parse_saved(b'{"saved": 3, "failed": 1}') == (3, 1) and parse_saved(b"{}") == (0, 0)
    refusals = {
        b'{"wait_seconds": 0}': "'wait_seconds' must be a whole number from 1 to 60; got 0.",
        b'{"wait_seconds": 1.5}': "'wait_seconds' must be a whole number from 1 to 60; got 1.5.",
        b'{"wait_seconds": true}': "'wait_seconds' must be a whole number from 1 to 60; got True.",
        b'{"wait_seconds": 5, "why": 1}': "Unknown field 'why': this request takes 'wait_seconds'.",
        b"[5]": "The request body must be a JSON object.",
        b"{": "The request body is not JSON.",
    }
    for raw, sentence in refusals.items():
        with pytest.raises(BodyError) as e:
            parse_park(raw)
        assert str(e.value) == sentence
    with pytest.raises(BodyError, match=r"'keep' must be true or false; got 1\.$"):
        parse_activity(b'{"keep": 1}')
    with pytest.raises(
        BodyError, match=r"Unknown fields 'a', 'b': this request takes 'saved', 'failed'\.$"
    ):
        parse_saved(b'{"a": 1, "b": 2}')


def test_the_status_bars_parking():
    view = {
        "project": "demo-lab",
        "parking": {
            "warned_at": "2026-11-22T14:25:00+00:00",
            "park_at": "2026-11-22T14:30:00+00:00",
        },
    }
    assert parking_shape(view, requested=False) == {
        "warned_at": "2026-11-22T14:25:00+00:00",
        "park_at": "2026-11-22T14:30:00+00:00",
        "idle_seconds": None,  # the server's own reading's, filled in by the handler
        "project": "demo-lab",
        "requested": False,
    }
    assert parking_shape({"project": "demo-lab", "parking": None}, requested=False) is None
    assert parking_shape({"project": "demo-lab"}, requested=False) is None  # an older service
    assert parking_shape(None, requested=True) == {
        "warned_at": None,
        "park_at": None,
        "idle_seconds": None,
        "project": None,
        "requested": True,
    }


def test_the_kernels_count_of_dask_tasks_is_taken_on_the_schedulers_loop():
    from distributed import Client, Event, LocalCluster

    from slicehub.extensions.kernel import dask_processing

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert dask_processing(cluster) == 0
        release = Event()
        futures = [client.submit(release.wait, 30, pure=False) for _ in range(3)]
        deadline = time.monotonic() + 10
        while dask_processing(cluster) != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dask_processing(cluster) == 3  # one running, two waiting for the one thread
        release.set()
        client.gather(futures)
        assert dask_processing(cluster) == 0
