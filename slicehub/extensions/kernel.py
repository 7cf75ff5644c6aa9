"""Slicehub's IPython kernel extension: a Dask cluster and an array module bound to the slice.

The kernelspec "Python 3 (GPU: CuPy + Dask-CUDA)" (images/kernelspec/slicehub-gpu) starts ipykernel
with `--ext=slicehub.extensions.kernel`. On load it reads the slice
(`slicehub.extensions.slice_env`), asks CUDA what it sees (`slicehub.extensions.gpu`), plans the
cluster (`slicehub.extensions.cluster_plan`) and starts it, then gives the notebook:

- `client`: a Dask client on a Dask-CUDA `LocalCUDACluster` (one worker per visible GPU or MIG
  instance, an RMM pool sized to the slice, device-to-host spilling on), or, without a usable
  GPU, on a CPU `LocalCluster`;
- `xp`: CuPy on the GPU, NumPy without (CuPy's pool limited to the kernel's share);
- `slicehub`: the session's memory, time and money (`slicehub.extensions.session`); `%slicehub`
  prints it;
- one printed line that says what the user got, with the dashboard's link through the Jupyter
  server (jupyter-server-proxy), or why there is no GPU.

The cluster listens on 127.0.0.1 only, with TLS and a temporary certificate (other users on the
node cannot submit work to it); its dashboard is read through the user's own server.

While the cluster runs, a heartbeat thread (`slicehub.extensions.heartbeat`) tells the Jupyter
server how many Dask tasks are processing or queued, so work submitted from a cell that has
returned still counts as work for idle parking. The count is taken on the scheduler's own event
loop (the scheduler of a `LocalCluster` runs in this process, on the cluster's loop thread), never
by reading its dictionaries from another thread while they change.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import tempfile
from pathlib import Path

from .cluster_plan import ClusterPlan, cpu_plan, plan, summary
from .gpu import probe, short_error
from .heartbeat import HeartbeatThread, path_for
from .session import SliceSession
from .slice_env import read

log = logging.getLogger("slicehub.kernel")

DASHBOARD_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
COUNT_TIMEOUT_S = 2.0  # a scheduler loop that does not answer in this time keeps the last count

_session: SliceSession | None = None
_heartbeat: HeartbeatThread | None = None


def load_ipython_extension(ip) -> None:
    global _session, _heartbeat
    if _session is not None:  # %load_ext twice: keep the cluster there is
        print(_session.line)
        return
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        import dask

        # the client's own repr (the link a notebook shows) follows the same route
        dask.config.set({"distributed.dashboard.link": DASHBOARD_LINK})
    _session = start(os.environ)
    # IPython does not unload extensions when the kernel shuts down, and an atexit handler
    # comes too late (the interpreter first waits for the client's threads, and the kernel
    # manager kills it meanwhile): close the cluster and remove its spill directory when the
    # shutdown request arrives (ipykernel sets shell.exit_now), and at exit otherwise
    ip.observe(lambda change: change["new"] and unload_ipython_extension(ip), names="exit_now")
    atexit.register(unload_ipython_extension, ip)
    from jupyter_core.paths import jupyter_runtime_dir

    cluster = _session.cluster
    _heartbeat = HeartbeatThread(
        path_for(Path(jupyter_runtime_dir()), os.getpid()), lambda: dask_processing(cluster)
    )
    _heartbeat.start()
    ip.push({"client": _session.client, "xp": _session.xp, "slicehub": _session})
    from .magics import SlicehubMagics

    ip.register_magics(SlicehubMagics(ip, _session))
    log.info("%s", _session.line)
    # the extension loads before the notebook is connected: its own print would reach only
    # the server's log, so the line is shown above the first cell's output instead
    ip.events.register("pre_run_cell", _announce_once(ip, _session.line))


def _announce_once(ip, line: str):
    def announce(info=None):
        ip.events.unregister("pre_run_cell", announce)
        print(line, flush=True)

    return announce


def unload_ipython_extension(ip) -> None:
    global _session, _heartbeat
    if _heartbeat is not None:  # first: it counts on the cluster that closes next
        _heartbeat.stop()
        _heartbeat = None
    if _session is not None:
        _session.close()
        _session = None


def start(env) -> SliceSession:
    """Read the slice in `env`, start its cluster, return the session (blocking, seconds)."""
    import dask

    s = read(env)
    p = plan(s, probe() if s.wants_gpu else None)
    spill_dir = tempfile.mkdtemp(prefix="slicehub-dask-", dir=env.get("TMPDIR") or None)
    dask.config.set({"temporary-directory": spill_dir})  # the scheduler's scratch space too
    xp = None
    if p.backend == "cuda":
        try:
            cluster, xp = _start_cuda(p, spill_dir)
        except Exception as e:  # NVML missing, a driver error, dask-cuda absent: say so, go on
            log.warning("Dask-CUDA did not start: %s", e)
            p = cpu_plan(s, f"Dask-CUDA could not start ({short_error(e)}).")
    if p.backend == "cpu":
        cluster = _start_cpu(p, spill_dir)
        import numpy as xp
    from distributed import Client

    client = Client(cluster, security=cluster.security)
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
    return dict(
        n_workers=p.n_workers,
        threads_per_worker=p.threads_per_worker,
        memory_limit=p.memory_limit,
        local_directory=spill_dir,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        security=True,  # a temporary TLS certificate, made for this cluster
        silence_logs=logging.ERROR,
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
