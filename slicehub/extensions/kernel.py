"""Slicehub's IPython kernel extension: a Dask cluster and an array module bound to the slice.

The kernelspec "Python 3 (GPU: CuPy + Dask-CUDA)" (images/kernelspec/slicehub-gpu) starts ipykernel
with `--ext=slicehub.extensions.kernel`. On load it reads the slice
(`slicehub.extensions.slice_env`) and starts, on a thread, what takes seconds: Dask's import,
the CUDA probe (`slicehub.extensions.gpu`), the cluster's plan (`slicehub.extensions.cluster_plan`)
and the cluster itself. The notebook gets at once:

- `client`: a Dask client on a Dask-CUDA `LocalCUDACluster` (one worker per visible GPU or MIG
  instance, an RMM pool sized to the slice, device-to-host spilling on), or, without a usable
  GPU, on a CPU `LocalCluster`;
- `xp`: CuPy on the GPU, NumPy without (CuPy's pool limited to the kernel's share);
- `slicehub`: the session's memory, time and money (`slicehub.extensions.session`); `%slicehub`
  prints it;
- one printed line that says what the user got, with the dashboard's link through the Jupyter
  server (jupyter-server-proxy), or why there is no GPU.

The cluster starts in the background (`slicehub.extensions.background`): a cell that does not use
Dask runs at once: 0.39 s at p50 from the kernel's start, against 1.59 s when it waited for the
cluster first (bench/results/kernel_start.md). Until the cluster is up, `client` and `slicehub`
(and `xp` on a GPU slice, which is CuPy only once Dask-CUDA started) are stand-ins that wait for
it on first use. Dask's own entry points (`.compute()`, `dask.compute`, `dask.persist`) go to
the default client, which exists only once the `Client` is made: until then Dask's configured
scheduler is `background.NOTEBOOK_SCHEDULER`, which waits for the client and hands it the graph.
So any Dask use, in the very first cell too, runs on the slice's cluster, never on Dask's local
threaded scheduler. Why not a `pre_run_cell` hook that waits before a cell that uses Dask: it
would have to guess from the cell's text (a helper module or xarray uses Dask without saying so),
and a wrong guess either blocks a cell or runs Dask locally. The hook does one thing that needs
no guess: before the first cells it waits until Dask's scheduler is set (the thread's first step,
Dask's import, 0.1 s), so that a cell that imports Dask finds it set. When the start fails, the
stand-ins and the scheduler raise `ClusterNotStarted` with the reason; after `CLUSTER_WAIT_S` of
waiting they say the cluster is late.

The whole line (with the dashboard's link, or why the cluster did not start) is printed once:
above the first cell's output when the cluster is up by then, as before; in a cell that waited for
the cluster, when the wait ends, before the output that needed it; else at the end of the cell
during which the cluster came up, or above the next cell's output. A first cell that ends before
the cluster is up, and never waited for it, ends with a line saying that the cluster is starting.
Once the line is printed, the names are the real `Client`, module and session (where the user has
not rebound them).

The cluster listens on 127.0.0.1 only, with TLS and a temporary certificate (other users on the
node cannot submit work to it); its dashboard is read through the user's own server. Its
workers ignore SIGINT (`slicehub.extensions.worker_preload`): interrupting a cell signals the
kernel's whole process group, and workers started while a cell runs (as a background start's
may be) would otherwise die of it.

While the kernel runs, a heartbeat thread (`slicehub.extensions.heartbeat`) tells the Jupyter
server how many Dask tasks are processing or queued (0 while the cluster starts), so work
submitted from a cell that has returned still counts as work for idle parking. The count is taken
on the scheduler's own event loop (the scheduler of a `LocalCluster` runs in this process, on the
cluster's loop thread), never by reading its dictionaries from another thread while they change.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .background import NOTEBOOK_SCHEDULER, BackgroundStart, ClusterNotStarted, Deferred
from .cluster_plan import ClusterPlan, cpu_plan, plan, summary
from .gpu import probe, short_error
from .heartbeat import HeartbeatThread, path_for
from .session import SliceSession
from .slice_env import SliceEnv, read

log = logging.getLogger("slicehub.kernel")

DASHBOARD_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
COUNT_TIMEOUT_S = 2.0  # a scheduler loop that does not answer in this time keeps the last count
# An idle cluster of Dask's defaults kept 6.4% of a core busy (its scheduler in the kernel,
# its worker), measured on a pre-warmed class server waiting for its student: forty such servers
# on a 2-core machine were the load every student's Start waited behind. These slower clocks
# bring an idle cluster to ~2% (bench/results/classroom_burst.md): the event loop's watchdog tick
# (20 ms: it only warns of a blocked loop), the dashboard's profiler (10 ms), its system monitor
# (500 ms) and work stealing (100 ms). Defaults only: a user's own Dask config still wins; the
# memory monitor, which spills and pauses workers, keeps Dask's own interval.
QUIET_DASK = {
    "distributed": {
        "admin": {"tick": {"interval": "1s"}, "system-monitor": {"interval": "2s"}},
        "worker": {"profile": {"interval": "100ms"}},
        "scheduler": {"work-stealing-interval": "500ms"},
    }
}
CLUSTER_WAIT_S = 300.0  # a cell waits this long for the cluster, then is told it is late
CONFIGURE_WAIT_S = 30.0  # the first cells wait this long at most for Dask's scheduler to be set
CLOSE_WAIT_S = 3.0  # a shutdown waits this long for a start under way (jupyter_client kills at 5)
NAMES = ("client", "xp", "slicehub")
WORKER_PRELOAD = "slicehub.extensions.worker_preload"

_notebook: Notebook | None = None
_heartbeat: HeartbeatThread | None = None


def load_ipython_extension(ip) -> None:
    global _notebook, _heartbeat
    if _notebook is not None:  # %load_ext twice: keep the cluster there is
        print(_notebook.line_now())
        return
    env = os.environ
    begun = BackgroundStart(lambda: start(env), configure=lambda: configure_dask(env))
    notebook = _notebook = Notebook(ip, begun, read(env))
    NOTEBOOK_SCHEDULER.attach(lambda: notebook.session().client)
    begun.begin()
    # IPython does not unload extensions when the kernel shuts down, and an atexit handler
    # comes too late (the interpreter first waits for the client's threads, and the kernel
    # manager kills it meanwhile): close the cluster and remove its spill directory when the
    # shutdown request arrives (ipykernel sets shell.exit_now), and at exit otherwise
    ip.observe(lambda change: change["new"] and unload_ipython_extension(ip), names="exit_now")
    atexit.register(unload_ipython_extension, ip)
    from jupyter_core.paths import jupyter_runtime_dir

    _heartbeat = HeartbeatThread(
        path_for(Path(jupyter_runtime_dir()), os.getpid()), lambda: dask_processing_of(begun)
    )
    _heartbeat.start()
    ip.push(dict(zip(NAMES, _notebook.stand_ins, strict=True)))
    from .magics import SlicehubMagics

    ip.register_magics(SlicehubMagics(ip, _notebook.stand_ins[2]))
    _notebook.register()


def unload_ipython_extension(ip) -> None:
    global _notebook, _heartbeat
    if _heartbeat is not None:  # first: it counts on the cluster that closes next
        _heartbeat.stop()
        _heartbeat = None
    if _notebook is not None:
        _notebook.close()
        _notebook = None


class Notebook:
    """What the notebook sees of the cluster's start: the stand-ins, the line, the hooks."""

    def __init__(self, ip, begun: BackgroundStart, slice_env: SliceEnv):
        self.ip = ip
        self.begun = begun
        self.slice = slice_env
        self.stand_ins = (
            Deferred(lambda: self.session().client, "the Dask client"),
            Deferred(self.array_module, "the array module"),
            Deferred(self.session, "the Slicehub session"),
        )
        self._announced = False  # that the cluster is starting, said at the end of a first cell
        self._told = False  # the outcome: the whole line, or why there is no cluster
        self._finished = False  # the names are the real objects, the hooks gone
        self._in_cell = False  # between pre_run_cell and post_run_cell

    def session(self) -> SliceSession:
        """The session once the cluster is up (waits for it). In a cell, the line is printed
        when the wait ends, before the output that needed the cluster."""
        try:
            session = self.begun.result(CLUSTER_WAIT_S)
        except ClusterNotStarted:
            if self.begun.failed and self._in_a_cell():  # the cell's error says why
                self._told = True
            raise
        if self._in_a_cell():
            self._tell()
        return session

    def array_module(self):
        if not self.slice.wants_gpu:  # NumPy whatever the cluster does: no need to wait
            import numpy

            return numpy
        return self.session().xp  # CuPy, or NumPy where Dask-CUDA could not start

    def starting_line(self) -> str:
        waits = "Dask, `client` or `xp`" if self.slice.wants_gpu else "Dask or `client`"
        return (
            f"Dask cluster starting in the background ({self.slice.description}): cells that "
            f"use {waits} wait for it; the others run now."
        )

    def outcome_line(self) -> str:
        if self.begun.failed:
            gpu = self.slice.wants_gpu  # `xp` is CuPy only once the cluster started
            names = "`client`, `slicehub` and `xp`" if gpu else "`client` and `slicehub`"
            return (
                f"{self.begun.failure()}\nDask, {names} raise this error in this kernel; "
                "restart the kernel to try again."
            )
        return self.begun.ready().line

    def line_now(self) -> str:
        return self.outcome_line() if self.begun.done else self.starting_line()

    # ---- IPython's hooks ---------------------------------------------------------------------
    def register(self) -> None:
        self.ip.events.register("pre_run_cell", self.before_cell)
        self.ip.events.register("post_run_cell", self.after_cell)

    def unregister(self) -> None:
        for event, hook in (("pre_run_cell", self.before_cell), ("post_run_cell", self.after_cell)):
            if hook in self.ip.events.callbacks[event]:
                self.ip.events.unregister(event, hook)

    def before_cell(self, info=None) -> None:
        # the thread's first step sets Dask's scheduler: a cell that imports Dask must find it
        self.begun.configured.wait(CONFIGURE_WAIT_S)
        self._in_cell = True
        # the extension loads before the notebook is connected: its own print would reach only
        # the server's log, so the line is shown in the cells: above this one's output when the
        # cluster is up by now
        if self.begun.done:
            self._tell()

    def after_cell(self, result=None) -> None:
        self._in_cell = False
        if self._told:
            return
        if self.begun.done:  # it came up (or failed) while this cell ran
            if isinstance(getattr(result, "error_in_exec", None), ClusterNotStarted):
                self._told = True  # the cell's own error said why
            self._tell()
        elif not self._announced:  # a first cell that did not wait for it
            self._announced = True
            print(self.starting_line(), flush=True)

    def _in_a_cell(self) -> bool:
        """Whether a print here reaches the cell that runs: in one, on the kernel's thread."""
        return self._in_cell and threading.current_thread() is threading.main_thread()

    def _tell(self) -> None:
        """Say once how the start ended; then the names are the real objects."""
        if self._finished:
            return
        if not self._told:
            self._told = True
            line = self.outcome_line()
            log.info("%s", line)
            print(line, flush=True)
        self._finished = True
        session = self.begun.ready()
        if session is not None:  # from now on the names are the real objects
            for name, stand_in, real in zip(
                NAMES, self.stand_ins, (session.client, session.xp, session), strict=True
            ):
                if self.ip.user_ns.get(name) is stand_in:
                    self.ip.user_ns[name] = real
        self.unregister()

    def close(self) -> None:
        self.unregister()
        self.begun.close(CLOSE_WAIT_S)
        NOTEBOOK_SCHEDULER.detach()
        configured = self.begun.configuration
        if configured is not None and self.begun.done:  # Dask's scheduler as it was before
            configured.__exit__(None, None, None)


def configure_dask(env):
    """Dask's scheduler is the notebook's until the `Client` is made; the client's own display
    links the dashboard the way the line does. Returns the `dask.config.set` to undo."""
    import dask

    values = {"scheduler": NOTEBOOK_SCHEDULER.get}
    if env.get("JUPYTERHUB_SERVICE_PREFIX"):
        values["distributed.dashboard.link"] = DASHBOARD_LINK
    return dask.config.set(values)


def dask_processing_of(begun: BackgroundStart) -> int:
    """The heartbeat's count: 0 until the cluster is up (a cluster that is starting has no
    work), then `dask_processing` of its cluster."""
    session = begun.ready()
    return 0 if session is None else dask_processing(session.cluster)


def quiet_dask() -> None:
    """Make `QUIET_DASK` Dask's defaults, after distributed's own (so that ours replace only
    those): a value the user set in their Dask config or environment stays theirs. The worker
    processes get the same config (distributed copies it to every worker it spawns)."""
    import dask
    import distributed  # noqa: F401  (its defaults are registered on import)

    dask.config.update_defaults(QUIET_DASK)


def start(env) -> SliceSession:
    """Read the slice in `env`, start its cluster, return the session (blocking, seconds). What
    it made is closed, and its spill directory removed, when a later step fails."""
    import dask

    s = read(env)
    p = plan(s, probe() if s.wants_gpu else None)
    spill_dir = tempfile.mkdtemp(prefix="slicehub-dask-", dir=env.get("TMPDIR") or None)
    cluster = None
    try:
        quiet_dask()
        dask.config.set({"temporary-directory": spill_dir})  # the scheduler's scratch space too
        xp = None
        if p.backend == "cuda":
            try:
                cluster, xp = _start_cuda(p, spill_dir)
            except Exception as e:  # NVML missing, a driver error, dask-cuda absent: go on
                log.warning("Dask-CUDA did not start: %s", e)
                p = cpu_plan(s, f"Dask-CUDA could not start ({short_error(e)}).")
        if p.backend == "cpu":
            cluster = _start_cpu(p, spill_dir)
            import numpy as xp
        from distributed import Client

        client = Client(cluster, security=cluster.security)
    except BaseException:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(spill_dir, ignore_errors=True)
        raise
    link = dashboard_link(env, cluster)
    line = summary(s, p, link)
    notes = [n for n in s.problems if n not in p.why_cpu]
    if notes:
        line += "\nNote: " + " ".join(notes)
    return SliceSession(s, p, client, cluster, xp, line, link, env, spill_dir)


def dashboard_link(env, cluster) -> str:
    """The dashboard through the user's server (jupyter-server-proxy) when under a hub;
    otherwise the scheduler's own address."""
    port = cluster.scheduler.http_server.port
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return DASHBOARD_LINK.format(JUPYTERHUB_SERVICE_PREFIX=prefix, port=port)
    return f"http://127.0.0.1:{port}/status"


def dask_processing(cluster, timeout: float = COUNT_TIMEOUT_S) -> int:
    """Tasks processing on a worker or queued in `cluster`'s scheduler, counted on its loop."""
    scheduler = cluster.scheduler
    answer: concurrent.futures.Future = concurrent.futures.Future()

    def count() -> None:
        try:
            answer.set_result(
                len(scheduler.queued)
                + len(scheduler.unrunnable)
                + sum(len(w.processing) for w in scheduler.workers.values())
            )
        except Exception as e:  # handed to the heartbeat thread, which logs it
            answer.set_exception(e)

    cluster.loop.add_callback(count)
    return answer.result(timeout)


def _common(p: ClusterPlan, spill_dir: str) -> dict:
    import dask

    return dict(
        n_workers=p.n_workers,
        threads_per_worker=p.threads_per_worker,
        memory_limit=p.memory_limit,
        local_directory=spill_dir,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        security=True,  # a temporary TLS certificate, made for this cluster
        silence_logs=logging.ERROR,
        # the workers do not inherit the notebook's waiting scheduler, as distributed's
        # WorkerProcess drops a default client's: a task's own `.compute()` runs as Dask's usual
        config={"scheduler": None},
        # first, each worker ignores the SIGINT meant for a cell (worker_preload's docstring)
        preload=[WORKER_PRELOAD, *dask.config.get("distributed.worker.preload", [])],
    )


def _start_cpu(p: ClusterPlan, spill_dir: str):
    from distributed import LocalCluster

    return LocalCluster(processes=True, **_common(p, spill_dir))


def _start_cuda(p: ClusterPlan, spill_dir: str):
    import cupy
    from dask_cuda import LocalCUDACluster

    cluster = LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=list(p.devices),
        rmm_pool_size=p.rmm_pool_size,
        rmm_maximum_pool_size=p.rmm_pool_size,  # a fixed pool: the slice's share, no more
        rmm_allocator_external_lib_list=["cupy"],  # the workers' CuPy arrays in that pool
        device_memory_limit=p.device_memory_limit,
        **_common(p, spill_dir),
    )
    cupy.get_default_memory_pool().set_limit(size=p.cupy_limit)
    return cluster, cupy
