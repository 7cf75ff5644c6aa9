"""How long a student waits for the Slicehub GPU kernel, against the stock Python kernel.

Starts the real "slicehub-gpu" kernel (images/kernelspec/slicehub-gpu: ipykernel with
`--ext=slicehub.extensions.kernel`) through jupyter_client's KernelManager, as a Jupyter server
does, with the `SLICEHUB_*` environment a spawner writes for the demo site's `h100.1g.10gb` slice
(hub_config/demo-site.toml; its MIG instance is a declared one, so the kernel takes its CPU path:
a Dask `LocalCluster` and NumPy). From the moment the kernel is asked to start it measures:

- **kernel_info reply**: the kernel answers (a notebook's "kernel ready");
- **`print(1)`**: the first cell's result, a cell that does not use Dask;
- **Dask cell**: `client.submit(sum, [1, 2]).result()`, sent right after `print(1)`.

The kernel starts its cluster in the background (slicehub.extensions.background). The same kernel
is also started with its cluster waited for before it answers
(`--IPKernelApp.exec_lines=client.scheduler_info()`), which is how the extension started before
the background start: what the change saves, in the same run.

Baseline, same run, alternating with it: the stock `python3` ipykernel with the same environment;
its Dask cell starts the cluster the Slicehub kernel would plan (same workers, threads, memory
limit and TLS) by hand, as a student without Slicehub would, then submits the same task.

Where the Slicehub kernel's start goes is measured apart, in a throwaway instrumented run:
this script re-runs itself (`--split-child`) in a subprocess with the same environment, imports
what the kernel imports one by one and calls the kernel module's own `start()` with its steps
(reading the slice, planning, the CUDA probe, the cluster's start, the client) wrapped in
`time.perf_counter` timers. The kernel module is not edited; the numbers are the same code's.

A warm kernel (slicehub.extensions.warm_kernel) is measured through a real Jupyter server (the
venv's `jupyter-server`, the GPU kernel its default), the way JupyterLab opens a notebook:
`POST api/sessions`, then the kernel's websocket, `print(1)`, the Dask cell; seconds from the
session request. A pre-warmed server (SLICEHUB_PREWARM=1, a fresh one per run) is asked once its
warm kernel has answered and had `WARM_SETTLE_S` to start its cluster, as a class server started
ahead is; the same server without pre-warming starts the kernel on the request.

    .venv/bin/python bench/kernel_start.py [--runs 10 | --quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import check, cpu_model, memory, publish, usable_cores  # noqa: E402

# the venv's other server extensions, off in the measured servers: only Slicehub's are needed
from tests.jupyterserver import OTHER_EXTENSIONS, run_on  # noqa: E402

# Nothing heavier than the standard library is imported at the top: the --split-child run times
# the kernel's imports from a bare interpreter.

SITE = REPO / "hub_config" / "demo-site.toml"
RESULTS = REPO / "bench" / "results" / "kernel_start.md"
SLICEHUB_KERNEL, STOCK_KERNEL = "slicehub-gpu", "python3"
# the same kernel, its cluster waited for before it answers: the start before the background one
AT_START = f"{SLICEHUB_KERNEL}, cluster at start"
WAIT_AT_START = ["--IPKernelApp.exec_lines=client.scheduler_info()"]
WARM_SETTLE_S = 5.0  # a warm kernel is asked for this long after it answered (its cluster is up)
WARM_READY = "Slicehub: the warm kernel is ready"  # slicehub.extensions.warm_kernel's log line
SLICE_TYPE = "h100.1g.10gb"
# the quota client's import of jupyterhub.utils (aiohttp, sqlalchemy), timed apart from the rest
# of the extension's import: only `%slicehub`'s money needs it
QUOTA_IMPORT = "import jupyterhub.utils (the quota client's)"
FIRST_TASK = "first task (submit, result)"
DASK_CELL = "client.submit(sum, [1, 2]).result()"
# The stock kernel's Dask cell: the cluster the Slicehub kernel plans, started by hand.
STOCK_DASK_CELL = """\
import logging
from distributed import Client, LocalCluster
cluster = LocalCluster(n_workers={n_workers}, threads_per_worker={threads}, \
memory_limit={memory_limit}, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", \
security=True, silence_logs=logging.ERROR)
client = Client(cluster, security=cluster.security)
client.submit(sum, [1, 2]).result()"""
STOCK_CLOSE_CELL = "client.close(); cluster.close()"

# The measures of one kernel start, as table rows: (attribute, what it is).
MEASURES = (
    ("ready", "kernel_info reply"),
    ("first_cell", "`print(1)` result (no Dask)"),
    ("dask_cell", "Dask cell result"),
    ("dask_cell_alone", "Dask cell alone (sent to result)"),
)
# The steps of the instrumented start, in order, and how each could leave the path of a cell
# that does not use Dask: BACKGROUND (done on a thread while the first cells run), LAZY (imported
# only when a feature that needs it is used) or "" (stays).
BACKGROUND, LAZY = "background start", "lazy import"
STEP_REMEDY = {
    "import ipykernel (every kernel)": "",
    "import numpy": BACKGROUND,
    "import dask": BACKGROUND,
    "import distributed": BACKGROUND,
    QUOTA_IMPORT: LAZY,
    "import slicehub.extensions.kernel (the rest)": "",
    "slice checks: read the slice": "",
    "slice checks: plan the cluster": "",
    "slice checks: CUDA probe": "",
    "cluster start (LocalCluster)": BACKGROUND,
    "cluster start (LocalCUDACluster)": BACKGROUND,
    "client connect": BACKGROUND,
    "rest of start()": "",
    FIRST_TASK: BACKGROUND,
}
CUPY_ASIDE = "import cupy (not on this slice's path)"
# The measures of one notebook opened through a server, as table rows: (attribute, what it is).
SESSION_MEASURES = (
    ("session", "session reply (the kernel's id)"),
    ("first_cell", "`print(1)` result (no Dask)"),
    ("dask_cell", "Dask cell result"),
)


@dataclass(frozen=True)
class KernelRun:
    """One kernel start: seconds from asking for the kernel to each answer."""

    kernel: str
    ready: float
    first_cell: float
    dask_cell: float
    dask_cell_alone: float


@dataclass(frozen=True)
class SessionRun:
    """One notebook opened through a Jupyter server: seconds from the session request."""

    server: str  # "warm" (pre-warmed, the warm kernel handed over) or "cold"
    session: float
    first_cell: float
    dask_cell: float


# -- pure: statistics and the report ------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100): with 10 values p95 is the largest."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def spread(values: list[float]) -> tuple[float, float, float]:
    """(p50, p95, max); p50 is the median."""
    return statistics.median(values), percentile(values, 95), max(values)


def comparison_table(
    start: str, measures, a_name: str, a_runs: list, b_name: str, b_runs: list
) -> list[str]:
    """A Markdown table, seconds, p50/p95/max over the runs of A and of B, and A - B at p50;
    one row per (attribute, label) of `measures`."""
    lines = [
        f"| {start} | {a_name} p50 | p95 | max | {b_name} p50 | p95 | max | difference p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for attr, label in measures:
        a = spread([getattr(r, attr) for r in a_runs])
        b = spread([getattr(r, attr) for r in b_runs])
        cells = " | ".join(f"{x:.2f}" for x in (*a, *b))
        lines.append(f"| {label} | {cells} | {a[0] - b[0]:+.2f} |")
    return lines


def latency_table(ours: list[KernelRun], stock: list[KernelRun]) -> list[str]:
    """The Markdown table of the kernels' answers, seconds, p50/p95/max over the runs."""
    return comparison_table(
        "from asking for the kernel to…",
        MEASURES,
        SLICEHUB_KERNEL,
        ours,
        f"{STOCK_KERNEL} (stock)",
        stock,
    )


def change_table(ours: list[KernelRun], at_start: list[KernelRun]) -> list[str]:
    """The background start against the same kernel with its cluster waited for at start."""
    return comparison_table(
        "from asking for the kernel to…",
        MEASURES,
        "background start",
        ours,
        "cluster at start",
        at_start,
    )


def session_table(warm: list[SessionRun], cold: list[SessionRun]) -> list[str]:
    """A pre-warmed server's hand-over against the same server starting the kernel."""
    return comparison_table(
        "from the session request to…",
        SESSION_MEASURES,
        "warm kernel",
        warm,
        "kernel started on request",
        cold,
    )


def step_spreads(splits: list[list[tuple[str, float]]]) -> dict[str, tuple[float, float, float]]:
    """Each step's (p50, p95, max) over the instrumented runs, in the order the steps ran."""
    seconds: dict[str, list[float]] = {}
    for run in splits:
        for name, s in run:
            seconds.setdefault(name, []).append(s)
    return {name: spread(values) for name, values in seconds.items()}


def split_table(splits: list[list[tuple[str, float]]]) -> list[str]:
    """The Markdown table of the instrumented start's steps, seconds."""
    steps = step_spreads(splits)
    lines = [
        "| step of the start (in this order) | p50 | p95 | max | off a non-Dask cell's path by |",
        "|---|---:|---:|---:|---|",
    ]
    total = 0.0
    for name, (p50, p95, top) in steps.items():
        if name == CUPY_ASIDE:
            continue
        total += p50
        remedy = STEP_REMEDY.get(name) or "(stays)"
        lines.append(f"| {name} | {p50:.3f} | {p95:.3f} | {top:.3f} | {remedy} |")
    lines.append(f"| **sum of the p50s** | **{total:.3f}** | | | |")
    if CUPY_ASIDE in steps:
        p50, p95, top = steps[CUPY_ASIDE]
        lines.append(
            f"| {CUPY_ASIDE} | {p50:.3f} | {p95:.3f} | {top:.3f} | (on a GPU slice: inside "
            "the CUDA probe) |"
        )
    return lines


def shortening(
    ours: list[KernelRun],
    stock: list[KernelRun],
    splits: list[list[tuple[str, float]]],
    at_start: list[KernelRun] | None = None,
) -> list[str]:
    """Where the start's work went, with the gains estimated from the measured p50s; with
    `at_start` (the kernel waiting for its cluster at start), a Dask cell's own time."""
    steps = {name: s[0] for name, s in step_spreads(splits).items() if name != CUPY_ASIDE}

    def median(attr: str, runs: list[KernelRun]) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    ready, ready_stock = median("ready", ours), median("ready", stock)
    first, first_stock = median("first_cell", ours), median("first_cell", stock)
    dask_alone, stock_dask = median("dask_cell_alone", ours), median("dask_cell_alone", stock)
    # what the extension adds to a kernel's start: every step but ipykernel's and the first task
    added = {
        n: s for n, s in steps.items() if n not in ("import ipykernel (every kernel)", FIRST_TASK)
    }
    background = sum(s for n, s in added.items() if STEP_REMEDY.get(n) == BACKGROUND)
    lazy = sum(s for n, s in added.items() if STEP_REMEDY.get(n) == LAZY)
    staying = sum(added.values()) - background - lazy
    imports = sum(steps.get(f"import {m}", 0.0) for m in ("numpy", "dask", "distributed"))
    cluster = sum(s for n, s in added.items() if n.startswith(("cluster start", "client connect")))
    checks = sum(s for n, s in added.items() if n.startswith("slice checks"))
    quota = steps.get(QUOTA_IMPORT, 0.0)
    estimate = first_stock + staying
    cupy = step_spreads(splits).get(CUPY_ASIDE)
    own_time = ""
    if at_start:  # the cluster was up when its Dask cell came
        own_time = (
            f"; one sent once the cluster is up answers in the Dask cell's own time, "
            f"{median('dask_cell_alone', at_start):.2f} s"
        )
    out = [
        "## Where the start's work went",
        "",
        f"The Slicehub kernel answers its first cell {first - first_stock:.2f} s after the stock "
        f"kernel (p50 {first:.2f} s against {first_stock:.2f} s; kernel_info {ready:.2f} s "
        f"against {ready_stock:.2f} s). The instrumented start puts the extension's work at "
        f"{sum(added.values()) - lazy:.2f} s (the steps after ipykernel's import, the first "
        f"task left out; timed in a plain interpreter, one step after another): {imports:.2f} s "
        f"importing NumPy, Dask and distributed, {cluster:.2f} s starting the cluster and "
        f"connecting its client, {_short(checks)} reading and checking the slice, "
        f"{_short(staying - checks)} for the rest; and {quota:.2f} s importing jupyterhub.utils "
        "for the quota client, which the start no longer does (below).",
        "",
        f"- **The cluster starts in the background.** The extension reads the slice, puts "
        f"stand-ins for `client` and `slicehub` in the namespace (they wait for the cluster on "
        f"first use; so does Dask's scheduler until the `Client` exists) and does the imports "
        f"and the cluster's start on a thread: by the split, up to {background:.2f} s would "
        f"leave the path of a cell that does not use Dask (an upper bound: on this machine's "
        f"{usable_cores()} cores the thread competes with the first cells for CPU and for the "
        f"GIL). A Dask cell sent at once waits for the rest of the cluster's start: "
        f"{dask_alone:.2f} s from sending it to its result here{own_time}. (Starting the same "
        f"cluster by hand in a stock kernel's cell takes {stock_dask:.2f} s from sending that "
        "cell: the Slicehub kernel's cluster starts while the student reads the page.)",
        f"- **The quota client is imported when `%slicehub` first asks for the money** (commit "
        f"1d4966d): `slicehub.common.quota_client` imports `jupyterhub.utils` (aiohttp, "
        f"sqlalchemy), {quota:.2f} s that only `%slicehub`'s money line needs; it is no longer "
        "in the start.",
        f"- At best, by the split: a non-Dask first cell at the stock kernel's time plus what "
        f"stays on the kernel's own path ({_short(staying)}), about {estimate:.2f} s instead of "
        f"{first:.2f} s measured; the rest is the thread's work taking CPU and the GIL from the "
        "kernel's first answers. NumPy, Dask and distributed imported lazily instead of on the "
        f"thread would only move their {imports:.2f} s to the first cell that uses `xp` or "
        "`client`.",
    ]
    if cupy is not None:
        out.append(
            f"- **On a GPU slice** the CUDA probe imports CuPy ({cupy[0]:.2f} s here, imported "
            "but not used) and initialises CUDA before the cluster can be planned, and "
            "Dask-CUDA's cluster adds its RMM pools: all on the thread too, so a non-Dask cell "
            "does not wait for them; `xp` is CuPy only once Dask-CUDA started (NumPy when it "
            "could not), so a cell that uses `xp` waits for the cluster there. Not measured on "
            "a GPU here."
        )
    return out


def change_notes(ours: list[KernelRun], at_start: list[KernelRun]) -> list[str]:
    """What the background start saved, from the same run."""

    def median(attr: str, runs: list[KernelRun]) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    first, first_before = median("first_cell", ours), median("first_cell", at_start)
    dask, dask_before = median("dask_cell", ours), median("dask_cell", at_start)
    return [
        f"A first cell that does not use Dask answers {first:.2f} s after the kernel is asked "
        f"for, against {first_before:.2f} s when the kernel waits for its cluster before it "
        f"answers (p50; {first_before - first:.2f} s less). A Dask cell sent right after it "
        f"answers {dask:.2f} s after the start against {dask_before:.2f} s: the cluster takes "
        "as long to start either way, and that cell waits for it (on the cluster: `client` and "
        "Dask's scheduler wait, nothing runs on Dask's local scheduler)."
    ]


def warm_notes(warm: list[SessionRun], cold: list[SessionRun]) -> list[str]:
    """What a warm kernel saves a student who opens a notebook, from the same run."""

    def median(attr: str, runs: list[SessionRun]) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    first, first_cold = median("first_cell", warm), median("first_cell", cold)
    dask, dask_cold = median("dask_cell", warm), median("dask_cell", cold)
    return [
        f"With the warm kernel handed over, a student's first cell answers {first:.2f} s after "
        f"the notebook asks for its kernel, against {first_cold:.2f} s when the server starts "
        f"the kernel then (p50), and a first Dask cell {dask:.2f} s against {dask_cold:.2f} s: "
        "the warm kernel's cluster was up before the student came. The hand-over's silent cell "
        "(the kernel moved to the notebook's folder) is in the session reply. One warm kernel "
        "per server, not replaced: the next notebook starts its kernel as the cold column does."
    ]


def _short(seconds: float) -> str:
    """A small duration in words: '0.012 s', or 'under 1 ms'."""
    return "under 1 ms" if seconds < 0.001 else f"{seconds:.3f} s"


# -- measuring: the real kernels ----------------------------------------------------------------


def slice_env(tmp: Path) -> dict[str, str]:
    """What a spawner gives a server (and its kernels) on the demo site's 1g.10gb slice."""
    from slicehub.common import clock
    from slicehub.common.environment import SliceEnvironment
    from slicehub.spawners.local.manager import resolve_inventory
    from slicehub.spawners.site import load_site

    site = load_site(SITE)
    st = site.slice_types[SLICE_TYPE]
    gpus = resolve_inventory(site).gpus
    mig = next(i for g in gpus for i in g.instances if i.placement.profile == st.shape.profile)
    slice_vars = SliceEnvironment(
        slice_type=st.name,
        gpu_memory_bytes=st.gpu_memory_bytes,
        cpus=st.cpus,
        memory_bytes=st.memory_bytes,
        session_end=clock.utcnow() + timedelta(hours=2),
        devices=(mig.uuid,),
        node=gpus[0].node,
        declared=True,
        project="demo-lab",
    ).to_env()
    # the runner's own SLICEHUB_* must not reach the kernel; TMPDIR takes the spill directory
    # and the runtime files out of the machine's /tmp
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLICEHUB_")}
    env.update(slice_vars, TMPDIR=str(tmp), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    return env


def stock_dask_cell(env: dict[str, str]) -> str:
    """The stock kernel's Dask cell, with the cluster the Slicehub kernel plans for `env`."""
    from slicehub.extensions.cluster_plan import plan
    from slicehub.extensions.slice_env import read

    s = read(env)
    check(not s.wants_gpu, "the declared 1g.10gb slice should not ask for a GPU")
    p = plan(s, None)
    return STOCK_DASK_CELL.format(
        n_workers=p.n_workers, threads=p.threads_per_worker, memory_limit=p.memory_limit
    )


def run_cell(kc, code: str, timeout: float) -> str:
    """Run `code`; its stream and result text. A cell that fails stops the benchmark."""
    text: list[str] = []

    def hook(msg) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind == "execute_result":
            text.append(content["data"].get("text/plain", "") + "\n")
        elif kind == "error":
            text.append(f"{content['ename']}: {content['evalue']}")

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout, store_history=False)
    check(reply["content"]["status"] == "ok", f"{code!r} failed: {''.join(text)}")
    return "".join(text)


def wait_for_kernel_info(km, kc, t0: float, timeout: float) -> float:
    """Seconds from t0 to the first kernel_info reply. (The client's wait_for_ready adds a fixed
    0.2 s flush of IOPub, which would blur the difference measured here.)"""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        kc.kernel_info()
        try:
            msg = kc.get_shell_msg(timeout=0.25)
        except Empty:
            pass
        else:
            if msg["msg_type"] == "kernel_info_reply":
                return time.perf_counter() - t0
        check(km.is_alive(), "the kernel died before answering kernel_info")
        check(time.monotonic() < deadline, f"no kernel_info reply in {timeout:.0f} s")


def iopub_connected(kc, timeout: float) -> None:
    """Untimed: make sure the first cell's output cannot be lost to a late IOPub subscription."""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        try:
            kc.get_iopub_msg(timeout=0.5)
            break
        except Empty:
            check(time.monotonic() < deadline, "IOPub never connected")
            kc.kernel_info()
    while True:  # the queued kernel_info replies and their status messages
        try:
            kc.get_shell_msg(timeout=0.05)
        except Empty:
            break


def time_kernel(
    kernel: str, env: dict[str, str], dask_cell: str, timeout: float, at_start: bool = False
) -> KernelRun:
    """Start `kernel` as a server would, run the two cells, shut it down; the timings.
    `at_start`: the Slicehub kernel waits for its cluster before it answers (run as AT_START)."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel)
    log = Path(env["TMPDIR"]) / f"{kernel}.log"  # the kernel's own messages, shown if it fails
    with log.open("a") as stderr:
        t0 = time.perf_counter()
        km.start_kernel(
            env=env,
            cwd=env["TMPDIR"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            extra_arguments=WAIT_AT_START if at_start else [],
        )
    kc = km.client()
    kc.start_channels()
    try:
        ready = wait_for_kernel_info(km, kc, t0, timeout)
        iopub_connected(kc, timeout)
        out = run_cell(kc, "print(1)", timeout)
        first = time.perf_counter() - t0
        check("1" in out.splitlines(), f"print(1) printed {out!r}")
        if kernel == SLICEHUB_KERNEL and not at_start:  # at start: announced to nobody
            check("Dask" in out, f"the kernel announced no cluster: {out!r}")
        sent = time.perf_counter()
        out = run_cell(kc, dask_cell, timeout)
        done = time.perf_counter()
        # the kernel's line may come too: its cluster came up during this cell
        check("3" in out.splitlines(), f"the Dask cell answered {out!r}")
        if kernel == STOCK_KERNEL:
            run_cell(kc, STOCK_CLOSE_CELL, timeout)
    except BaseException:
        print(f"{kernel}'s log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return KernelRun(AT_START if at_start else kernel, ready, first, done - t0, done - sent)


# -- measuring: a notebook opened through a real Jupyter server ---------------------------------


class Server:
    """The venv's `jupyter-server` in `root`, the GPU kernel its default, as a single-user
    server on the slice; pre-warmed (SLICEHUB_PREWARM=1) or not."""

    def __init__(self, root: Path, env: dict[str, str], prewarm: bool, timeout: float):
        self.root = root
        self.token = secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (root / "notebooks").mkdir(parents=True)
        (root / "config").mkdir()
        (root / "config" / "jupyter_server_config.json").write_text(
            json.dumps(
                {"ServerApp": {"jpserver_extensions": dict.fromkeys(OTHER_EXTENSIONS, False)}}
            )
        )
        server_env = {k: v for k, v in env.items() if not k.startswith("JUPYTER")}
        server_env.update(
            PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            JUPYTER_CONFIG_DIR=str(root / "config"),
            JUPYTER_RUNTIME_DIR=str(root / "runtime"),
            SLICEHUB_PREWARM="1" if prewarm else "0",
        )
        self.log_path = root / "server.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "jupyter-server"),
                    "--no-browser",
                    "--ip=127.0.0.1",
                    f"--port={self.port}",
                    "--port-retries=0",
                    *(["--allow-root"] if os.geteuid() == 0 else []),
                    f"--IdentityProvider.token={self.token}",
                    f"--ServerApp.root_dir={root / 'notebooks'}",
                    f"--MappingKernelManager.default_kernel_name={SLICEHUB_KERNEL}",
                ],
                env=server_env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(lambda: self.answers(), timeout, "the server did not answer")

    def answers(self) -> bool:
        from urllib.error import URLError
        from urllib.request import Request, urlopen

        request = Request(f"http://127.0.0.1:{self.port}/api/status")
        request.add_header("Authorization", f"token {self.token}")
        try:
            with urlopen(request, timeout=2) as r:
                return r.status == 200
        except (URLError, OSError):
            return False

    def logged(self, text: str) -> bool:
        return text in self.log_path.read_text(errors="replace")

    def wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                self.close()
                check(False, f"{what}; the server's log:\n{tail}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its kernels
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


async def open_notebook(server: Server, path: str, timeout: float) -> tuple[SessionRun, str]:
    """What JupyterLab does to open `path`: the session, the kernel's websocket, then the two
    cells; the timings from the session request, and the first cell's output."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    auth = {"Authorization": f"token {server.token}"}
    base = f"127.0.0.1:{server.port}"
    name = path.rsplit("/", 1)[-1]
    body = {"path": path, "name": name, "type": "notebook", "kernel": {"name": SLICEHUB_KERNEL}}
    http = AsyncHTTPClient()
    t0 = time.perf_counter()
    reply = await http.fetch(
        f"http://{base}/api/sessions",
        method="POST",
        body=json.dumps(body),
        headers=auth,
        request_timeout=timeout,
    )
    session = time.perf_counter() - t0
    kernel_id = json.loads(reply.body)["kernel"]["id"]
    ws = await websocket_connect(
        HTTPRequest(f"ws://{base}/api/kernels/{kernel_id}/channels", headers=auth)
    )

    async def cell(code: str) -> str:
        done = await run_on(ws, code, timeout)
        check(done.error is None, f"{code!r} failed: {done.error_line}")
        return done.out

    try:
        out = await cell("print(1)")
        first = time.perf_counter() - t0
        check("1" in out.splitlines() and "Dask" in out, f"print(1) printed {out!r}")
        answer = await cell(f"print({DASK_CELL})")
        dask = time.perf_counter() - t0
        check("3" in answer.splitlines(), f"the Dask cell answered {answer!r}")
    finally:
        ws.close()
    sessions = await http.fetch(f"http://{base}/api/sessions", headers=auth)
    for s in json.loads(sessions.body):  # the kernel shut down before the next run
        if s["kernel"]["id"] == kernel_id:
            await http.fetch(
                f"http://{base}/api/sessions/{s['id']}",
                method="DELETE",
                headers=auth,
                request_timeout=timeout,
            )
    return SessionRun("", session, first, dask), out


def time_warm(root: Path, env: dict[str, str], timeout: float) -> tuple[SessionRun, str]:
    """A fresh pre-warmed server; once its warm kernel answered and had WARM_SETTLE_S, a
    notebook is opened; the server is stopped after."""
    server = Server(root, env, prewarm=True, timeout=timeout)
    try:
        server.wait_for(lambda: server.logged(WARM_READY), timeout, "no warm kernel was ready")
        time.sleep(WARM_SETTLE_S)
        run, out = asyncio.run(open_notebook(server, "class.ipynb", timeout))
        check(server.logged("(the warm kernel, handed over)"), "the warm kernel was not used")
    finally:
        server.close()
    return SessionRun("warm", run.session, run.first_cell, run.dask_cell), out


def time_cold(server: Server, path: str, timeout: float) -> SessionRun:
    run, _ = asyncio.run(open_notebook(server, path, timeout))
    return SessionRun("cold", run.session, run.first_cell, run.dask_cell)


def instrumented_split(env: dict[str, str], timeout: float) -> tuple[list[tuple[str, float]], str]:
    """One instrumented start in a fresh interpreter: its steps and the kernel's line."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--split-child"],
        env=env,
        cwd=env["TMPDIR"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    check(done.returncode == 0, f"the instrumented start failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return [(name, float(s)) for name, s in result["steps"]], result["line"]


def split_child() -> None:
    """The kernel's start, step by step, in this fresh interpreter; prints one JSON line.

    Imports come first, one at a time, in the order the kernel needs them (each one's time is
    what it adds to those before); then the kernel module's own `start()` runs with its steps
    wrapped in timers, then one task, then the cluster is closed (untimed)."""
    steps: list[tuple[str, float]] = []

    def timed_import(name: str, module: str) -> None:
        t = time.perf_counter()
        __import__(module)
        steps.append((name, time.perf_counter() - t))

    timed_import("import ipykernel (every kernel)", "ipykernel.kernelapp")
    for m in ("numpy", "dask", "distributed"):
        timed_import(f"import {m}", m)
    timed_import(QUOTA_IMPORT, "jupyterhub.utils")
    timed_import("import slicehub.extensions.kernel (the rest)", "slicehub.extensions.kernel")
    import distributed

    from slicehub.extensions import kernel

    wrapped: dict[str, float] = {}

    def timer(name: str, fn):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                wrapped[name] = wrapped.get(name, 0.0) + time.perf_counter() - t

        return run

    kernel.read = timer("slice checks: read the slice", kernel.read)
    kernel.plan = timer("slice checks: plan the cluster", kernel.plan)
    kernel.probe = timer("slice checks: CUDA probe", kernel.probe)
    kernel._start_cpu = timer("cluster start (LocalCluster)", kernel._start_cpu)
    kernel._start_cuda = timer("cluster start (LocalCUDACluster)", kernel._start_cuda)
    distributed.Client = timer("client connect", distributed.Client)
    t = time.perf_counter()
    session = kernel.start(os.environ)
    total = time.perf_counter() - t
    steps += list(wrapped.items())
    steps.append(("rest of start()", total - sum(wrapped.values())))
    t = time.perf_counter()
    check(session.client.submit(sum, [1, 2]).result() == 3, "the first task did not answer 3")
    steps.append((FIRST_TASK, time.perf_counter() - t))
    session.close()
    if "cupy" not in sys.modules:
        timed_import(CUPY_ASIDE, "cupy")
    print(json.dumps({"steps": steps, "line": session.line}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="kernel starts per kernel (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 runs, for a quick look")
    ap.add_argument("--timeout", type=float, default=120, help="seconds for any one answer")
    ap.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    ap.add_argument("--split-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.split_child:
        split_child()
        return 0
    runs = 3 if args.quick else args.runs
    if runs < 1:
        ap.error("--runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="slicehub-kernel-start-") as tmp:
        env = slice_env(Path(tmp))
        stock_cell = stock_dask_cell(env)
        # untimed warm-up of each: the first start after a build reads cold files
        time_kernel(SLICEHUB_KERNEL, env, DASK_CELL, args.timeout)
        time_kernel(STOCK_KERNEL, env, stock_cell, args.timeout)
        cold_server = Server(Path(tmp) / "cold", env, prewarm=False, timeout=args.timeout)
        ours: list[KernelRun] = []
        at_start: list[KernelRun] = []
        stock: list[KernelRun] = []
        splits: list[list[tuple[str, float]]] = []
        warm: list[SessionRun] = []
        cold: list[SessionRun] = []
        line = warm_line = ""
        try:
            time_cold(cold_server, "warm-up.ipynb", args.timeout)
            for i in range(runs):  # alternating, so the machine's other work falls on all alike
                ours.append(time_kernel(SLICEHUB_KERNEL, env, DASK_CELL, args.timeout))
                at_start.append(time_kernel(SLICEHUB_KERNEL, env, DASK_CELL, args.timeout, True))
                stock.append(time_kernel(STOCK_KERNEL, env, stock_cell, args.timeout))
                split, line = instrumented_split(env, args.timeout)
                splits.append(split)
                run, warm_line = time_warm(Path(tmp) / f"warm-{i}", env, args.timeout)
                warm.append(run)
                cold.append(time_cold(cold_server, f"cold-{i}.ipynb", args.timeout))
                a, b, c, w, k = ours[-1], at_start[-1], stock[-1], warm[-1], cold[-1]
                print(
                    f"run {i + 1}/{runs}: print(1) {a.first_cell:.2f} s (cluster at start "
                    f"{b.first_cell:.2f} s, {STOCK_KERNEL} {c.first_cell:.2f} s); Dask "
                    f"{a.dask_cell:.2f} s ({b.dask_cell:.2f} s, {c.dask_cell:.2f} s); from the "
                    f"session request, print(1): warm {w.first_cell:.2f} s, cold "
                    f"{k.first_cell:.2f} s",
                    flush=True,
                )
        finally:
            cold_server.close()

    command = " ".join(["bench/kernel_start.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# GPU kernel start: what a student waits for, against the stock Python kernel",
        "",
        f"`.venv/bin/python {command}`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {cpu_model()}, "
        f"{usable_cores()} usable cores, {memory()} memory, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"- Slice: the demo site's `{SLICE_TYPE}` (hub_config/demo-site.toml), its MIG instance "
        "declared (no GPU on this machine), in the SLICEHUB_* environment a spawner writes.",
        f"- What the kernel says when its cluster is up (its own line): "
        f"{line.replace(chr(10), ' / ')}",
        f"- {runs} starts of each kernel, alternating, after one untimed warm-up start of each; "
        "seconds from `KernelManager.start_kernel` (jupyter_client, as a Jupyter server starts "
        "a kernel); p95 is the nearest rank (with fewer than 20 runs, the largest). "
        f"The Dask cell is sent as soon as `print(1)` has answered. The stock kernel's Dask "
        "cell starts the same cluster by hand (same workers, threads, memory limit, TLS).",
        "",
        *latency_table(ours, stock),
        "",
        "## What the background start changed",
        "",
        "The same kernel, same run, with its cluster waited for before it answers "
        f"(`{WAIT_AT_START[0]}`: the extension's start before the cluster moved to a thread).",
        "",
        *change_table(ours, at_start),
        "",
        *change_notes(ours, at_start),
        "",
        "## A warm kernel: a pre-warmed class server",
        "",
        f"Through the venv's `jupyter-server` ({SLICEHUB_KERNEL} its default kernel), the way "
        "JupyterLab opens a notebook: `POST api/sessions`, the kernel's websocket, `print(1)`, "
        "then the Dask cell; seconds from the session request. Warm: a fresh server per run "
        f"with SLICEHUB_PREWARM=1, asked {WARM_SETTLE_S:g} s after its warm kernel answered "
        "(a class server is started ahead). Cold: the same kind of server without pre-warming, "
        f"starting the kernel on the request. {runs} of each, alternating with the runs above. "
        "The warm kernel's first cell printed: "
        + next((x for x in warm_line.splitlines() if "Dask" in x), warm_line.strip()),
        "",
        *session_table(warm, cold),
        "",
        *warm_notes(warm, cold),
        "",
        f"Where the Slicehub kernel's start goes: {runs} instrumented starts in a fresh "
        "interpreter with the same environment, the kernel module's own `start()` (what the "
        "thread runs) with its steps timed (`time.perf_counter`), imports timed one by one "
        "before it (each one's time is what it adds to those above it).",
        "",
        *split_table(splits),
        "",
        *shortening(ours, stock, splits, at_start),
        "",
    ]
    publish("\n".join(lines), RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
