"""The examples' workflow on a GPU slice against the same workflow on the CPU: speed and cost.

The centre's promise is "projects nine times faster at a quarter of the cost". This runs the
three notebooks in examples/ end to end in the Slicehub GPU kernel (nbclient), with the same
working-set size (`SLICEHUB_EXAMPLE_BYTES`) on both paths:

- **gpu**: a whole-GPU slice (`h100x1`: CUDA_VISIBLE_DEVICES=0, the kernel's Dask-CUDA cluster
  and CuPy), run only where CUDA answers;
- **cpu** (the baseline, same run): a CPU slice with every usable core of this machine
  (`SLICEHUB_SLICE_TYPE=cpu`, CUDA hidden: NumPy/pandas/Dask on a CPU LocalCluster).

Time per run is the sum of the notebooks' own timed parts (each prints `SLICEHUB_RESULT` with
its `seconds` and its checked answer; a wrong answer stops the benchmark). Cost per run is that
time at the site's list prices (hub_config/demo-site.toml): the GPU at the `h100x1` price per
hour; the CPU at the `cpu` slice's price per CPU-hour times the cores used. A 1g.10gb estimate
assumes a seventh of the H100's throughput (one of seven compute slices) at the 1g price.

It also measures, on a GPU, one CuPy reduction's achieved memory bandwidth (bytes read by
`x.sum()` per second) as a fraction of the device's measured copy bandwidth (a device-to-device
`memcpy`, bytes read plus written per second); goal at least 80%.

    .venv/bin/python bench/kernel_workflow.py [--bytes N] [--repeats R] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import check, cpu_model, memory, publish, usable_cores  # noqa: E402

from slicehub.spawners.site import load_site  # noqa: E402

EXAMPLES = sorted((REPO / "examples").glob("[0-9][0-9]-*.ipynb"))
SITE = REPO / "hub_config" / "demo-site.toml"
RESULTS = REPO / "bench" / "results" / "kernel_workflow.md"
KERNEL = "slicehub-gpu"
GOAL_SPEEDUP, GOAL_SAVING, GOAL_BANDWIDTH = 9.0, 0.75, 0.80
MIG_1G_SHARE = 7  # a 1g instance has one of the H100's seven compute slices


@dataclass
class Run:
    example: str
    path: str  # "gpu" or "cpu"
    repeat: int
    seconds: float
    result: dict


def run_notebook(path: Path, env: dict[str, str], timeout: int) -> dict:
    """Execute one example in the GPU kernel with `env`; its SLICEHUB_RESULT, checked."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=timeout).execute(env=env)
    for cell in reversed(nb.cells):
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("SLICEHUB_RESULT "):
                    result = json.loads(line.split(" ", 1)[1])
                    check(
                        result.get("ok") is True, f"{path.name} computed a wrong answer: {result}"
                    )
                    return result
    raise RuntimeError(f"{path.name} printed no SLICEHUB_RESULT line")


def slice_env(path: str, cores: int, mem_bytes: int, work_bytes: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLICEHUB_")}
    env["SLICEHUB_EXAMPLE_BYTES"] = str(work_bytes)
    env["SLICEHUB_CPUS"] = str(cores)
    env["SLICEHUB_MEMORY_BYTES"] = str(mem_bytes)
    if path == "gpu":
        env.update(SLICEHUB_SLICE_TYPE="h100x1", CUDA_VISIBLE_DEVICES="0")
    else:
        env.update(SLICEHUB_SLICE_TYPE="cpu", CUDA_VISIBLE_DEVICES="")
    return env


def gpu_present() -> str:
    """The first GPU's name, or "" where CUDA does not answer."""
    from slicehub.extensions.gpu import probe

    found = probe()
    return found.devices[0].name if found.devices else ""


def bandwidth(n_bytes: int, repeats: int) -> tuple[float, float]:
    """(reduction GB/s, device copy GB/s), best of `repeats`, on the current GPU."""
    import cupy

    n = n_bytes // 4
    x = cupy.ones(n, dtype=cupy.float32)
    y = cupy.empty_like(x)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()

    def best(fn) -> float:
        fn()  # warm-up: kernels compiled, pools filled
        times = []
        for _ in range(repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, stop) / 1000)
        return min(times)

    total = float(x.sum())
    check(total == n, f"the reduction summed {total}, expected {n}")
    t_sum = best(lambda: x.sum())
    t_copy = best(lambda: cupy.cuda.runtime.memcpy(y.data.ptr, x.data.ptr, x.nbytes, 3))
    return x.nbytes / t_sum / 1e9, 2 * x.nbytes / t_copy / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=256 * 1024**2, help="working set per example")
    ap.add_argument("--repeats", type=int, default=3, help="runs per path; the median counts")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per notebook")
    ap.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = ap.parse_args(argv)
    if args.bytes < 1 or args.repeats < 1:
        ap.error("--bytes and --repeats must be at least 1")
    check(len(EXAMPLES) == 3, f"expected three example notebooks, found {len(EXAMPLES)}")

    site = load_site(SITE)
    gpu_type, cpu_type, mig_type = (
        site.slice_types["h100x1"],
        site.slice_types["cpu"],
        site.slice_types["h100.1g.10gb"],
    )
    cores = usable_cores()
    mem_bytes = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    gpu_name = gpu_present()
    paths = (["gpu"] if gpu_name else []) + ["cpu"]
    runs: list[Run] = []
    for path in paths:
        env = slice_env(path, cores, mem_bytes, args.bytes)
        for r in range(args.repeats):
            for nb in EXAMPLES:
                result = run_notebook(nb, env, args.timeout)
                check(
                    result.get("backend") == ("cuda" if path == "gpu" else "cpu"),
                    f"{nb.name} ran on {result.get('backend')} in the {path} run",
                )
                runs.append(Run(nb.stem, path, r, float(result["seconds"]), result))
                print(f"{path} run {r + 1}: {nb.stem} {result['seconds']:.2f} s", flush=True)

    def median_seconds(path: str, example: str | None = None) -> float:
        """The median over repeats of one example's time (None: the whole workflow's)."""
        per_repeat = [
            sum(x.seconds for x in runs if x.path == path and x.repeat == r)
            if example is None
            else next(
                x.seconds for x in runs if x.path == path and x.repeat == r and x.example == example
            )
            for r in range(args.repeats)
        ]
        return statistics.median(per_repeat)

    cpu_price_per_core = cpu_type.price_cents / cpu_type.cpus  # cents per CPU-hour
    cpu_hourly = cpu_price_per_core * cores
    lines = [
        "# GPU kernel: the examples' workflow on a GPU slice vs the CPU",
        "",
        f"`.venv/bin/python bench/kernel_workflow.py {' '.join(argv or sys.argv[1:])}`".replace(
            " `", "`"
        ),
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {cpu_model()}, {cores} usable "
        f"cores, {memory()} memory, {platform.platform()}, Python {platform.python_version()}",
        "- GPU: "
        + (gpu_name or "none on this machine (CUDA does not answer): the gpu path was not run"),
        f"- Working set per example: {args.bytes / 1024**2:,.0f} MiB "
        f"(SLICEHUB_EXAMPLE_BYTES); {args.repeats} runs per path, median of the workflow's sum",
        f"- Prices (hub_config/demo-site.toml): h100x1 HK${gpu_type.price_cents / 100:.2f}/h; "
        f"cpu slice HK${cpu_type.price_cents / 100:.2f}/h for {cpu_type.cpus} CPUs, so "
        f"HK${cpu_hourly / 100:.2f}/h for the {cores} cores used here; h100.1g.10gb "
        f"HK${mig_type.price_cents / 100:.2f}/h",
        "",
        "| example | " + " | ".join(f"{p} s (median)" for p in paths) + " |",
        "|---|" + "---:|" * len(paths),
    ]
    for nb in EXAMPLES:
        cells = " | ".join(f"{median_seconds(p, nb.stem):.2f}" for p in paths)
        lines.append(f"| {nb.stem} | {cells} |")
    t_cpu = median_seconds("cpu")
    cost_cpu = t_cpu / 3600 * cpu_hourly
    lines += [
        "| **workflow** | " + " | ".join(f"**{median_seconds(p):.2f}**" for p in paths) + " |",
        "",
        "| path | seconds per run | cost per run (HK$) | speed-up vs CPU | saving vs CPU |",
        "|---|---:|---:|---:|---:|",
        f"| cpu, {cores} cores (baseline) | {t_cpu:.2f} | {cost_cpu / 100:.4f} | 1.0x | 0% |",
    ]
    verdicts = []
    if gpu_name:
        t_gpu = median_seconds("gpu")
        cost_gpu = t_gpu / 3600 * gpu_type.price_cents
        t_1g = t_gpu * MIG_1G_SHARE
        cost_1g = t_1g / 3600 * mig_type.price_cents
        speedup, saving = t_cpu / t_gpu, 1 - cost_gpu / cost_cpu
        lines += [
            f"| h100x1 | {t_gpu:.2f} | {cost_gpu / 100:.4f} | {speedup:.1f}x | {saving:.0%} |",
            f"| h100.1g.10gb (estimate: 7x the H100's time) | {t_1g:.2f} | {cost_1g / 100:.4f} | "
            f"{t_cpu / t_1g:.1f}x | {1 - cost_1g / cost_cpu:.0%} |",
        ]
        verdicts.append(
            f"Goal >= {GOAL_SPEEDUP:.0f}x faster and >= {GOAL_SAVING:.0%} cheaper on a whole "
            f"H100: {'met' if speedup >= GOAL_SPEEDUP and saving >= GOAL_SAVING else 'not met'} "
            f"({speedup:.1f}x, {saving:.0%} cheaper)."
        )
        reduce_bw, copy_bw = bandwidth(min(4 * 1024**3, args.bytes * 8), 10)
        ratio = reduce_bw / copy_bw
        lines += [
            "",
            "| measurement | GB/s |",
            "|---|---:|",
            f"| CuPy `x.sum()` over float32, bytes read per second | {reduce_bw:,.0f} |",
            f"| device-to-device memcpy, bytes read + written per second | {copy_bw:,.0f} |",
            f"| ratio | {ratio:.0%} |",
        ]
        verdicts.append(
            f"Goal reduction >= {GOAL_BANDWIDTH:.0%} of copy bandwidth: "
            f"{'met' if ratio >= GOAL_BANDWIDTH else 'not met'} ({ratio:.0%})."
        )
    else:
        verdicts.append(
            "GPU goals (>= 9x faster, >= 75% cheaper; reduction >= 80% of copy bandwidth): "
            "not measured on this machine, which has no GPU; run this script on the lent GPU "
            "machine (see docs/kernels.md)."
        )
    lines += ["", *[f"**{v}**" for v in verdicts], ""]
    text = "\n".join(lines)
    publish(text, RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
