"""The activity reading and the park handshake of slicehub.extensions.server inside a real Jupyter
server process (jupyter-server with the venv's extensions, no hub: the reading is the server's
own), with real kernels: a silent busy kernel is busy, a finished one is idle since its last
message, the browser's "Keep working" resets idleness, a Dask task running in the GPU kernel's
LocalCluster (CPU slice here) is busy through the kernel's heartbeat file, and the culler's park
request waits for the front end's save."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.test_kernel_hub import run_cell
from tests.jupyterserver import JupyterServer

pytestmark = pytest.mark.integration


class ActivityServer(JupyterServer):
    """A Slicehub server of a CPU slice, ledger session 12, with the terminals on."""

    def __init__(self, root: Path):
        super().__init__(
            root,
            {
                "SLICEHUB_SLICE_TYPE": "cpu",  # the GPU kernel starts a small CPU LocalCluster
                "SLICEHUB_CPUS": "2",
                "SLICEHUB_MEMORY_BYTES": str(2 * 1024**3),
                "SLICEHUB_LEDGER_SESSION": "12",
            },
            keep=("jupyter_server_terminals",),
        )

    def activity(self) -> dict:
        r = self.api("GET", "slicehub/api/activity")
        assert r.status_code == 200, r.text
        return r.json()

    def start_kernel(self, name: str, path: str) -> str:
        body = {"path": path, "type": "notebook", "kernel": {"name": name}}
        r = self.api("POST", "api/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()["kernel"]["id"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ActivityServer]:
    s = ActivityServer(tmp_path_factory.mktemp("jupyter"))
    yield s
    s.close()


def wait_for(what: Callable[[], dict], until: Callable[[dict], bool], timeout: float) -> dict:
    """Poll `what()` until `until` holds for its answer; the last answer either way."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if until(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_a_park_request_waits_for_the_front_end_to_save(server):
    """First in this module: tab-a is the only front end that polled the status."""
    assert server.api("GET", "slicehub/api/status", params={"client": "tab-a"}).ok
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        park = pool.submit(server.api, "POST", "slicehub/api/park", json={"wait_seconds": 30})
        status = wait_for(
            lambda: server.api("GET", "slicehub/api/status", params={"client": "tab-a"}).json(),
            lambda s: s["parking"],
            10,
        )
        idle = status["parking"].pop("idle_seconds")
        assert status["parking"] == {
            "warned_at": None,
            "park_at": None,
            "project": None,
            "requested": True,
        }
        assert isinstance(idle, int) and idle >= 0  # this server's own reading
        r = server.api(
            "POST",
            "slicehub/api/park/saved",
            json={"saved": 2, "failed": 0},
            params={"client": "tab-a"},
        )
        assert r.status_code == 200 and r.json() == {}
        answer = park.result(30)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started < 15  # it did not wait for the whole 30 s
    body = answer.json()
    assert body["front_ends"] >= 1 and body["saved"] == 1
    assert body["documents"] == {"saved": 2, "failed": 0}
    # saved once: this front end is not asked again by the same request
    status = server.api("GET", "slicehub/api/status", params={"client": "tab-a"}).json()
    assert status["parking"] is None


def test_reading_this_server_is_not_activity(server):
    """The status bar's poll and the culler's reading leave jupyter_server's own last activity
    (what the hub's activity tracking reports) where it was."""
    before = server.api("GET", "api/status").json()["last_activity"]
    time.sleep(1.1)
    server.activity()
    assert server.api("GET", "slicehub/api/status", params={"client": "idle-tab"}).ok
    assert server.api("GET", "api/status").json()["last_activity"] == before


def test_a_silent_busy_kernel_is_busy_until_it_finishes(server):
    kernel = server.start_kernel("python3", "Untitled.ipynb")
    run_cell(server.ws(kernel), server.token, "1")  # started and answering
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        cell = pool.submit(run_cell, server.ws(kernel), server.token, "import time; time.sleep(30)")
        busy = wait_for(server.activity, lambda a: a["busy"], 20)
        assert busy["busy"] == ["kernel Untitled.ipynb (python3) is busy"]
        assert busy["idle_seconds"] == 0 and busy["session"] == 12
        time.sleep(2)
        assert server.activity()["idle_seconds"] == 0  # silent for seconds, still busy
        # the cell finishes (interrupted rather than waited for)
        r = server.api("POST", f"api/kernels/{kernel}/interrupt")
        assert r.status_code == 204, r.text
        with pytest.raises(AssertionError, match="KeyboardInterrupt"):
            cell.result(30)
    idle = wait_for(server.activity, lambda a: not a["busy"], 10)
    assert idle["busy"] == []
    assert idle["last_active"] == idle["sources"]["kernels"] is not None
    # idle since the kernel's last message, by the server's clock
    since = datetime.fromisoformat(idle["at"]) - datetime.fromisoformat(idle["last_active"])
    assert abs(since.total_seconds() - idle["idle_seconds"]) <= 1
    time.sleep(2.2)
    later = server.activity()
    assert later["idle_seconds"] >= 2 and later["last_active"] == idle["last_active"]
    assert later["gpu"]["signal"] == "none" and later["gpu"]["detail"]

    # "Keep working" in the browser: activity now, idle again from now
    r = server.api("POST", "slicehub/api/activity", json={"keep": True}, params={"client": "t1"})
    assert r.status_code == 200, r.text
    kept = r.json()
    assert kept["idle_seconds"] == 0
    assert kept["last_active"] == kept["sources"]["browser"] > idle["last_active"]
    assert server.api("DELETE", f"api/kernels/{kernel}").status_code == 204


def test_a_dask_task_in_the_kernels_cluster_is_busy(server):
    kernel = server.start_kernel("slicehub-gpu", "dask.ipynb")
    ws = server.ws(kernel)
    run_cell(ws, server.token, "import time\nfuture = client.submit(time.sleep, 30, pure=False)")
    beats = list(server.runtime_dir.glob("slicehub-kernel-*.json"))
    assert len(beats) == 1, beats
    # the kernel is idle: only its heartbeat (every 5 s) says that its cluster works
    busy = wait_for(server.activity, lambda a: a["busy"], 15)
    assert busy["busy"] == ["Dask: 1 task running"], busy
    assert busy["idle_seconds"] == 0 and busy["sources"]["dask"] is not None

    run_cell(ws, server.token, "future.cancel()")
    idle = wait_for(server.activity, lambda a: not a["busy"], 15)
    assert idle["busy"] == [] and idle["sources"]["dask"] is not None
    # the kernel's shutdown removes its heartbeat
    assert server.api("DELETE", f"api/kernels/{kernel}").status_code == 204
    assert not list(server.runtime_dir.glob("slicehub-kernel-*.json"))


@pytest.mark.parametrize(
    ("path", "body", "sentence"),
    [
        (
            "slicehub/api/park",
            {"wait_seconds": 0},
            "'wait_seconds' must be a whole number from 1 to 60",
        ),
        ("slicehub/api/park", {"wait_seconds": 61}, "from 1 to 60; got 61"),
        ("slicehub/api/park", {"wait": 5}, "Unknown field 'wait'"),
        ("slicehub/api/activity", {"keep": "yes"}, "'keep' must be true or false"),
        ("slicehub/api/park/saved", {"saved": -1}, "'saved' must be a whole number"),
        ("slicehub/api/park/saved", [1], "must be a JSON object"),
    ],
)
def test_bodies_are_refused_with_a_sentence(server, path, body, sentence):
    r = server.api("POST", path, json=body)
    assert r.status_code == 400
    assert sentence in r.json()["message"]
