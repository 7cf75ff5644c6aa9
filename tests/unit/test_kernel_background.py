"""The GPU kernel starts its Dask cluster in the background (slicehub.extensions.kernel and
.background), for real: the slicehub-gpu kernel started as a Jupyter server starts it, on a CPU
slice. Each worker is made to take seconds to start by configuration (a Dask worker preload that
sleeps, `DASK_DISTRIBUTED__WORKER__PRELOAD`), so the first cells surely run while the cluster
starts: a cell that does not use Dask answers before the cluster could be up; a `.compute()` or
`dask.persist` in the very first cell waits and runs on the cluster, never on Dask's local
scheduler; a cluster that cannot start (its spill directory cannot be made) is a sentence in
every Dask use, and the rest of the kernel works; interrupting a cell stops the cell, not the
workers, even those started while a cell ran. First, the background start's parts on their own
(slicehub.extensions.background), with fakes named as such."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from slicehub.extensions.background import BackgroundStart, ClusterNotStarted, Deferred
from slicehub.extensions.cluster_plan import GIB

KERNEL = "slicehub-gpu"
TIMEOUT_S = 120
SLOW_START_S = 4.0  # each worker's preload sleeps this long: the cluster is up after it, no sooner
STARTING = "Dask cluster starting in the background (CPU only): cells that use Dask or `client`"
WHOLE = "CPU only · 2 CPUs, 2 GiB · Dask: 1 worker x 2 threads · NumPy · Dask dashboard: "
FAILED = "This kernel's Dask cluster did not start: NotADirectoryError: "


class FakeCluster:
    """What a start makes, as far as BackgroundStart cares: something to close."""

    def __init__(self):
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_start_still_under_way_when_closed_is_closed_when_it_is_done():
    release, made = threading.Event(), FakeCluster()

    def slow_start():
        release.wait(10)
        return made

    begun = BackgroundStart(slow_start).begin()
    begun.configured.wait(5)
    with pytest.raises(ClusterNotStarted, match="has not started in 0 s; it is still starting"):
        begun.result(0.01)
    begun.close(timeout=0.01)  # the kernel shuts down before its cluster is up
    assert made.closed == 0
    release.set()
    begun._thread.join(5)
    assert made.closed == 1  # closed by the start's own thread, once
    begun.close(timeout=1)
    assert made.closed == 1
    with pytest.raises(ClusterNotStarted, match="was closed"):
        begun.result(1)


def test_a_failed_start_is_a_sentence_and_its_configure_step_never_blocks_a_cell():
    def configure():
        raise ImportError("No module named 'dask'")

    begun = BackgroundStart(lambda: FakeCluster(), configure=configure).begin()
    assert begun.configured.wait(5)  # set although configure failed
    with pytest.raises(ClusterNotStarted) as e:
        begun.result(5)
    assert str(e.value) == (
        "This kernel's Dask cluster did not start: ImportError: No module named 'dask'"
    )
    assert begun.failed and begun.ready() is None


def test_a_stand_in_is_the_real_object_once_there_and_says_why_when_not():
    real = [3, 1, 2]
    stand_in = Deferred(lambda: real, "the list")
    assert isinstance(stand_in, list) and stand_in.count(1) == 1
    assert repr(stand_in) == "[3, 1, 2]" and "sort" in dir(stand_in)
    assert copy.copy(stand_in) is stand_in and copy.deepcopy(stand_in) is stand_in

    def missing():
        raise ClusterNotStarted("This kernel's Dask cluster did not start: OSError: disk full")

    absent = Deferred(missing, "the Dask client")
    assert repr(absent) == (
        "<the Dask client: This kernel's Dask cluster did not start: OSError: disk full>"
    )
    assert not isinstance(absent, list)
    with pytest.raises(ClusterNotStarted, match="disk full"):
        absent.submit(sum, [1, 2])


def slice_env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLICEHUB_", "DASK_"))}
    env.update(
        SLICEHUB_SLICE_TYPE="cpu",
        SLICEHUB_CPUS="2",
        SLICEHUB_MEMORY_BYTES=str(2 * GIB),
        TMPDIR=str(tmp_path),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
    )
    return {**env, **more}


def slow_workers(tmp_path: Path) -> dict[str, str]:
    """Dask configuration (environment) that makes each worker take SLOW_START_S to start."""
    preload = tmp_path / "slow_worker.py"
    preload.write_text(
        f"import time\n\n\ndef dask_setup(worker):\n    time.sleep({SLOW_START_S})\n"
    )
    return {"DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{preload}"]'}


class Kernel:
    """A started slicehub-gpu kernel and a client; `run(code)` gives (output, error name)."""

    def __init__(self, km: KernelManager, started: float):
        self.km = km
        self.started = started
        self.client = km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=TIMEOUT_S)

    def run(self, code: str) -> tuple[str, str | None]:
        out: list[str] = []
        error: list[str] = []

        def hook(msg) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"]["text/plain"] + "\n")
            elif kind == "error":
                error.append(f"{content['ename']}: {content['evalue']}")

        self.client.execute_interactive(code, output_hook=hook, timeout=TIMEOUT_S)
        return "".join(out), (error[0] if error else None)


@contextmanager
def kernel(env: dict[str, str], tmp_path: Path) -> Iterator[Kernel]:
    km = KernelManager(kernel_name=KERNEL)
    log = tmp_path / "kernel.log"
    with log.open("a") as stderr:
        started = time.monotonic()
        km.start_kernel(env=env, cwd=str(tmp_path), stderr=stderr)
    k = None
    try:
        k = Kernel(km, started)
        yield k
    except BaseException:
        print(f"the kernel's log:\n{log.read_text()[-3000:]}")
        raise
    finally:
        if k is not None:
            k.client.stop_channels()
        km.shutdown_kernel(now=False)


def test_a_cell_that_does_not_use_dask_does_not_wait_for_the_cluster(tmp_path):
    with kernel(slice_env(tmp_path, **slow_workers(tmp_path)), tmp_path) as k:
        out, error = k.run("print(1)")
        assert error is None
        # its output, then that the cluster is starting: said only when the cell ends before
        # the cluster is up, so the cell did not wait for it (its worker was still asleep)
        assert out.splitlines() == ["1", STARTING + " wait for it; the others run now."]
        # while the cluster starts the heartbeat is already there, with no tasks
        [beat] = (tmp_path / "runtime").glob("slicehub-kernel-*.json")
        assert '"dask_processing": 0' in beat.read_text()
        # `client` waits for the cluster; the whole line comes when the wait ends, once
        out, error = k.run("print(client.submit(sum, [1, 2]).result())")
        assert error is None
        assert time.monotonic() - k.started >= SLOW_START_S
        line, answer = out.splitlines()
        assert line.startswith(WHOLE) and answer == "3"
        out, error = k.run("print(type(client).__name__, type(xp).__name__, xp.__name__)")
        assert (out, error) == ("Client module numpy\n", None)  # the real objects now


def test_dask_in_the_very_first_cell_runs_on_the_cluster(tmp_path):
    with kernel(slice_env(tmp_path, **slow_workers(tmp_path)), tmp_path) as k:
        out, error = k.run(
            "import dask\n"
            "(kept,) = dask.persist(dask.delayed(sum)([3, 4], dask_key_name='first_persist'))\n"
            "print(dask.delayed(sum)([1, 2], dask_key_name='first_compute').compute())"
        )
        assert error is None
        line, answer = out.splitlines()  # it waited for the cluster, which the line names
        assert line.startswith(WHOLE) and answer == "3"
        # the scheduler ran the computed task and holds the persisted one on a worker
        out, error = k.run(
            "print(client.run_on_scheduler(\n"
            "    lambda dask_scheduler: 'first_compute' in dask_scheduler.task_prefixes))\n"
            "print(sorted(client.who_has()), kept.compute())"
        )
        assert error is None
        assert out.splitlines() == ["True", "['first_persist'] 7"]


def test_a_cluster_that_cannot_start_says_why_and_dask_never_runs_locally(tmp_path):
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_text("")
    env = slice_env(tmp_path, TMPDIR=str(not_a_directory))  # the spill directory fails
    with kernel(env, tmp_path) as k:
        first, error = k.run("print(1)")
        assert error is None and "1" in first.splitlines()
        second, error = k.run("client.submit(sum, [1, 2])")
        assert error is not None and error.startswith(f"ClusterNotStarted: {FAILED}")
        # the kernel's line said why once (in the first cell, or above the second's error)
        said = (first + second).count("restart the kernel to try again")
        assert said == 1 and FAILED in first + second
        _, error = k.run("import dask; dask.delayed(sum)([1, 2]).compute()")
        assert error is not None and error.startswith(f"ClusterNotStarted: {FAILED}")
        out, error = k.run("%slicehub")
        assert error is None and out.startswith(FAILED)
        # what needs no cluster works
        out, error = k.run("print(float(xp.ones(2).sum()))")
        assert (out, error) == ("2.0\n", None)


def test_an_interrupt_stops_the_cell_not_the_workers_started_while_a_cell_ran(tmp_path):
    with kernel(slice_env(tmp_path), tmp_path) as k:
        # the Nanny starts new workers while this cell runs (ipykernel handles SIGINT then)
        out, error = k.run(
            "client.restart()\n"
            "print('workers', sorted(client.run(lambda: __import__('os').getpid()).values()))"
        )
        assert error is None
        [pids] = [line for line in out.splitlines() if line.startswith("workers ")]
        # what KernelManager.interrupt_kernel does for this kernel (interrupt_mode "signal"):
        # SIGINT to the kernel's process group, Dask's workers included
        pgid = k.km.provisioner.pgid
        timer = threading.Timer(1.5, os.killpg, (pgid, signal.SIGINT))
        timer.start()
        try:
            _, error = k.run("import time; time.sleep(10)")
        finally:
            timer.cancel()
        assert error is not None and error.startswith("KeyboardInterrupt")
        time.sleep(1)  # a worker that took the SIGINT would be gone by now
        out, error = k.run(
            "print('workers', sorted(client.run(lambda: __import__('os').getpid()).values()))\n"
            "print(client.submit(sum, [1, 2]).result())"
        )
        assert error is None
        assert out.splitlines() == [pids, "3"]
