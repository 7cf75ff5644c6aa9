"""How long a student waits for the Slicehub GPU kernel, against the stock Python kernel.

Starts the real "slicehub-gpu" kernel (images/kernelspec/slicehub-gpu: ipykernel with
`--ext=slicehub.extensions.kernel`) through jupyter_client's KernelManager, as a Jupyter server
does, with the `SLICEHUB_*` environment a spawner writes for the demo site's `h100.1g.10gb` slice
(hub_config/demo-site.toml; its MIG instance is a declared one, so the kernel takes its CPU path:
a Dask `LocalCluster` and NumPy). From the moment the kernel is asked to start it measures:

- **kernel_info reply**: the kernel answers (a notebook's "kernel ready");
- **`print(1)`**: the first cell's result, a cell that does not use Dask;
- **Dask cell**: `client.submit(sum, [1, 2]).result()`, sent right after `print(1)`.

Baseline, same run, alternating with it: the stock `python3` ipykernel with the same environment;
its Dask cell starts the cluster the Slicehub kernel would plan (same workers, threads, memory
limit and TLS) by hand, as a student without Slicehub would, then submits the same task.

Where the Slicehub kernel's extra start goes is measured apart, in a throwaway instrumented run:
this script re-runs itself (`--split-child`) in a subprocess with the same environment, imports
what the kernel imports one by one and calls the kernel module's own `start()` with its steps
(reading the slice, planning, the CUDA probe, the cluster's start, the client) wrapped in
`time.perf_counter` timers. The kernel module is not edited; the numbers are the same code's.

    .venv/bin/python bench/kernel_start.py [--runs 10 | --quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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

# Nothing heavier than the standard library is imported at the top: the --split-child run times
# the kernel's imports from a bare interpreter.

SITE = REPO / "hub_config" / "demo-site.toml"
RESULTS = REPO / "bench" / "results" / "kernel_start.md"
SLICEHUB_KERNEL, STOCK_KERNEL = "slicehub-gpu", "python3"
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


@dataclass(frozen=True)
class KernelRun:
    """One kernel start: seconds from asking for the kernel to each answer."""

    kernel: str
    ready: float
    first_cell: float
    dask_cell: float
    dask_cell_alone: float


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


def latency_table(ours: list[KernelRun], stock: list[KernelRun]) -> list[str]:
    """The Markdown table of the kernels' answers, seconds, p50/p95/max over the runs."""
    lines = [
        f"| from asking for the kernel to… | {SLICEHUB_KERNEL} p50 | p95 | max "
        f"| {STOCK_KERNEL} (stock) p50 | p95 | max | difference p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for attr, label in MEASURES:
        a = spread([getattr(r, attr) for r in ours])
        b = spread([getattr(r, attr) for r in stock])
        cells = " | ".join(f"{x:.2f}" for x in (*a, *b))
        lines.append(f"| {label} | {cells} | {a[0] - b[0]:+.2f} |")
    return lines


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
        "| step of the start (in this order) | p50 | p95 | max | could leave a non-Dask cell's "
        "path by |",
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
    ours: list[KernelRun], stock: list[KernelRun], splits: list[list[tuple[str, float]]]
) -> list[str]:
    """What could be shortened, with the gains estimated from the measured p50s."""
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
    out = [
        "## What could be shortened",
        "",
        f"The Slicehub kernel answers its first cell {first - first_stock:.2f} s after the stock "
        f"kernel (p50 {first:.2f} s against {first_stock:.2f} s; kernel_info {ready:.2f} s "
        f"against {ready_stock:.2f} s), because the extension does all its work before the kernel "
        f"answers. The instrumented start puts that work at {sum(added.values()):.2f} s (the "
        f"steps after ipykernel's import, the first task left out; timed in a plain interpreter, "
        f"so not exactly the difference): {imports:.2f} s importing "
        f"NumPy, Dask and distributed, {cluster:.2f} s starting the cluster and connecting its "
        f"client, {quota:.2f} s importing jupyterhub.utils for the quota client, "
        f"{_short(checks)} reading and checking the slice, {_short(staying - checks)} for the "
        "rest.",
        "",
        f"- **Start the cluster in the background.** If the extension read the slice, put the "
        f"`client` in the namespace as a placeholder that waits for the cluster, and did the "
        f"imports and the cluster's start on a thread, up to {background:.2f} s would leave the "
        f"path of a cell that does not use Dask (an upper bound: on this machine's "
        f"{usable_cores()} cores the cluster's start competes with the first cells for CPU). A "
        f"Dask cell sent at once would still wait for the cluster; one sent after the student "
        f"has read the page for a couple of seconds would answer in the Dask cell's own time, "
        f"{dask_alone:.2f} s here. (Starting the same cluster by hand in a stock kernel's cell "
        f"takes {stock_dask:.2f} s: the Slicehub kernel saves that on the first Dask cell, and a "
        "background start keeps the saving.)",
        f"- **A lazy import of the quota client.** `slicehub.extensions.session` imports "
        f"`slicehub.common.quota_client`, which imports `jupyterhub.utils` (aiohttp, "
        f"sqlalchemy): {quota:.2f} s that only `%slicehub`'s money line needs. Imported when "
        "`%slicehub` first asks the quota service, it leaves the start altogether.",
        f"- Together, at best: a non-Dask first cell at the stock kernel's time plus what stays "
        f"({_short(staying)}), about {estimate:.2f} s instead of {first:.2f} s. NumPy, Dask and "
        "distributed imported lazily instead of in the background would only move their "
        f"{imports:.2f} s to the first cell that uses `xp` or `client`.",
    ]
    if cupy is not None:
        out.append(
            f"- **On a GPU slice** the CUDA probe imports CuPy ({cupy[0]:.2f} s here, imported "
            "but not used) and initialises CUDA before the cluster can be planned, and "
            "Dask-CUDA's cluster adds its RMM pools; the probe must stay before the plan, but the "
            "background start would take the cluster off the first non-Dask cell's path. Not "
            "measured on a GPU here."
        )
    out += [
        "- **Pre-warming (issue 15)** starts servers, not kernels: the kernel starts when the "
        "student opens a notebook, so this start stays on the student's path unless a "
        "pre-warmed server also starts a kernel ahead.",
        "",
        "This is an analysis of the measured split, not a change: the kernel is as it was.",
    ]
    return out


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
            text.append(content["data"].get("text/plain", ""))
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


def time_kernel(kernel: str, env: dict[str, str], dask_cell: str, timeout: float) -> KernelRun:
    """Start `kernel` as a server would, run the two cells, shut it down; the timings."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel)
    log = Path(env["TMPDIR"]) / f"{kernel}.log"  # the kernel's own messages, shown if it fails
    with log.open("a") as stderr:
        t0 = time.perf_counter()
        km.start_kernel(env=env, cwd=env["TMPDIR"], stdout=subprocess.DEVNULL, stderr=stderr)
    kc = km.client()
    kc.start_channels()
    try:
        ready = wait_for_kernel_info(km, kc, t0, timeout)
        iopub_connected(kc, timeout)
        out = run_cell(kc, "print(1)", timeout)
        first = time.perf_counter() - t0
        check(out.rstrip().endswith("1"), f"print(1) printed {out!r}")
        if kernel == SLICEHUB_KERNEL:
            check("Dask" in out, f"the kernel announced no cluster: {out!r}")
        sent = time.perf_counter()
        out = run_cell(kc, dask_cell, timeout)
        done = time.perf_counter()
        check(out.strip() == "3", f"the Dask cell answered {out!r}")
        if kernel == STOCK_KERNEL:
            run_cell(kc, STOCK_CLOSE_CELL, timeout)
    except BaseException:
        print(f"{kernel}'s log:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return KernelRun(kernel, ready, first, done - t0, done - sent)


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
        ours: list[KernelRun] = []
        stock: list[KernelRun] = []
        splits: list[list[tuple[str, float]]] = []
        line = ""
        for i in range(runs):  # alternating, so the machine's other work falls on both alike
            ours.append(time_kernel(SLICEHUB_KERNEL, env, DASK_CELL, args.timeout))
            stock.append(time_kernel(STOCK_KERNEL, env, stock_cell, args.timeout))
            split, line = instrumented_split(env, args.timeout)
            splits.append(split)
            a, b = ours[-1], stock[-1]
            print(
                f"run {i + 1}/{runs}: {SLICEHUB_KERNEL} ready {a.ready:.2f} s, print(1) "
                f"{a.first_cell:.2f} s, Dask {a.dask_cell:.2f} s; {STOCK_KERNEL} ready "
                f"{b.ready:.2f} s, print(1) {b.first_cell:.2f} s, Dask {b.dask_cell:.2f} s",
                flush=True,
            )

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
        f"- What the kernel did at start (its own line): {line.replace(chr(10), ' / ')}",
        f"- {runs} starts of each kernel, alternating, after one untimed warm-up start of each; "
        "seconds from `KernelManager.start_kernel` (jupyter_client, as a Jupyter server starts "
        "a kernel); p95 is the nearest rank (with fewer than 20 runs, the largest). "
        f"The Dask cell is sent as soon as `print(1)` has answered. The stock kernel's Dask "
        "cell starts the same cluster by hand (same workers, threads, memory limit, TLS).",
        "",
        *latency_table(ours, stock),
        "",
        f"Where the Slicehub kernel's start goes: {runs} instrumented starts in a fresh "
        "interpreter with the same environment, the kernel module's own `start()` with its steps "
        "timed (`time.perf_counter`), imports timed one by one before it (each one's time is "
        "what it adds to those above it).",
        "",
        *split_table(splits),
        "",
        *shortening(ours, stock, splits),
        "",
    ]
    publish("\n".join(lines), RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
