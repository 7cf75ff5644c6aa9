"""A pre-warmed class server for real: a `jupyter-server` process of the venv with
SLICEHUB_PREWARM=1 and the GPU kernel as its default (CPU slice here: a small LocalCluster), as
the spawner starts one before a class. Its warm kernel is not one of the server's kernels and not
activity; the first notebook opened gets it (same kernel id, same process), running in the
notebook's folder, with nothing of the hand-over in its cells or history; the next notebook gets a
kernel of its own. One server for the module: the tests run in order."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.jupyterserver import START_TIMEOUT_S, JupyterServer, run_on

pytestmark = pytest.mark.integration

KERNEL = "slicehub-gpu"
# an awkward folder: quotes, a backslash, a colon, a space, an accent
FOLDER = 'week 1: it\'s "a" dir\\ é'
NOTEBOOK = f"{FOLDER}/class.ipynb"
WHOLE_LINE = re.compile(r"^CPU only · 2 CPUs, 2 GiB · Dask: 1 worker x 2 threads · NumPy · Dask "
                        r"dashboard: http://127\.0\.0\.1:\d+/status$")  # fmt: skip
STARTING_LINE = "Dask cluster starting in the background (CPU only)"


class PrewarmedServer(JupyterServer):
    """One `jupyter-server` started as the spawner starts a pre-warmed class server."""

    def __init__(self, root: Path):
        (root / "notebooks" / FOLDER).mkdir(parents=True)
        (root / "notebooks" / FOLDER / "helper.py").write_text("VALUE = 42\n")
        super().__init__(
            root,
            {
                "SLICEHUB_PREWARM": "1",
                "SLICEHUB_SLICE_TYPE": "cpu",
                "SLICEHUB_CPUS": "2",
                "SLICEHUB_MEMORY_BYTES": str(2 * 1024**3),
            },
            # a GPU class image makes the GPU kernel the default: the warm kernel's kind
            [f"--MappingKernelManager.default_kernel_name={KERNEL}"],
        )

    def open_notebook(self, path: str) -> str:
        """What JupyterLab does when it opens a notebook: a session; its kernel's id."""
        name = path.rsplit("/", 1)[-1]
        body = {"path": path, "type": "notebook", "name": name, "kernel": {"name": KERNEL}}
        r = self.api("POST", "api/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()["kernel"]["id"]

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.runtime_dir.glob(pattern))


def execute(server: PrewarmedServer, kernel_id: str, code: str, timeout: float = 120) -> dict:
    """Run `code` as a notebook cell over the server's websocket: {"out": stdout,
    "count": its execution count, "error": the traceback or None}."""

    async def go() -> dict:
        url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(
            HTTPRequest(url, headers={"Authorization": f"token {server.token}"})
        )
        cell = await run_on(ws, code, timeout)
        ws.close()
        while await asyncio.wait_for(ws.read_message(), 10) is not None:
            pass
        return {"out": cell.out, "count": cell.count, "error": cell.error}

    return asyncio.run(go())


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[PrewarmedServer]:
    s = PrewarmedServer(tmp_path_factory.mktemp("prewarmed"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def warm(server) -> dict:
    """The warm kernel as the server's runtime directory shows it: its id (connection file)
    and its process (the heartbeat its extension writes once loaded)."""
    wait_until(
        lambda: server.files("slicehub-kernel-*.json"), START_TIMEOUT_S, "no warm kernel started"
    )
    [connection] = server.files("kernel-*.json")
    [beat] = server.files("slicehub-kernel-*.json")
    return {
        "id": connection.stem.removeprefix("kernel-"),
        "pid": int(beat.stem.removeprefix("slicehub-kernel-")),
    }


def test_the_warm_kernel_is_not_the_servers_nor_activity(server, warm):
    assert server.api("GET", "api/kernels").json() == []
    assert server.api("GET", "api/status").json()["kernels"] == 0
    reading = server.api("GET", "slicehub/api/activity").json()
    assert reading["busy"] == []
    assert reading["sources"]["kernels"] is None and reading["sources"]["dask"] is None


def test_the_first_notebook_gets_the_warm_kernel_in_its_folder(server, warm):
    kernel_id = server.open_notebook(NOTEBOOK)
    assert kernel_id == warm["id"]
    [kernel] = server.api("GET", "api/kernels").json()
    assert kernel["id"] == warm["id"] and kernel["name"] == KERNEL

    first = execute(
        server,
        kernel_id,
        "import os, helper\n"
        "print(os.getpid(), helper.VALUE)\n"
        "print(os.getcwd())\n"
        "print(__session__)\n"
        "print(len(In), len(list(get_ipython().history_manager.get_range())))",
    )
    assert first["error"] is None, first["error"]
    assert first["count"] == 1  # the hand-over's cell counted nothing
    lines = first["out"].splitlines()
    # the kernel's one line: whole (above) if its cluster was up by then, else that it starts
    said = [x for x in lines if WHOLE_LINE.match(x) or x.startswith(STARTING_LINE)]
    assert len(said) == 1, lines
    assert [x for x in lines if x not in said] == [
        f"{warm['pid']} 42",
        str(server.notebooks / FOLDER),
        str(server.notebooks / NOTEBOOK),
        "2 1",  # In = ['', this cell]; the history holds this cell only
    ]

    # a first Dask cell runs on the kernel's cluster, which the line then names once
    second = execute(
        server,
        kernel_id,
        "import dask\n"
        "print(dask.delayed(sum)([1, 2], dask_key_name='warm_first_task').compute())\n"
        "print(client.run_on_scheduler(\n"
        "    lambda dask_scheduler: 'warm_first_task' in dask_scheduler.task_prefixes))",
    )
    assert second["error"] is None, second["error"]
    assert second["count"] == 2
    printed = first["out"].splitlines() + second["out"].splitlines()
    assert [line for line in printed if WHOLE_LINE.match(line)] != []
    assert len([line for line in printed if "Dask dashboard:" in line]) == 1
    assert "3\nTrue" in second["out"]

    # from now on it is the server's kernel: its messages are activity
    reading = server.api("GET", "slicehub/api/activity").json()
    assert reading["sources"]["kernels"] is not None


def test_the_next_notebook_gets_a_kernel_of_its_own(server, warm):
    kernel_id = server.open_notebook("second.ipynb")
    assert kernel_id != warm["id"]
    assert {k["id"] for k in server.api("GET", "api/kernels").json()} == {warm["id"], kernel_id}
    out = execute(server, kernel_id, "import os; print('kernel', os.getpid(), os.getcwd())")
    assert out["error"] is None, out["error"]
    [line] = [x for x in out["out"].splitlines() if x.startswith("kernel ")]
    _, pid, cwd = line.split(" ", 2)
    assert int(pid) != warm["pid"] and cwd == str(server.notebooks)
    # not replenished: two kernels, no third one started ahead
    assert len(server.files("kernel-*.json")) == 2
