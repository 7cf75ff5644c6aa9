"""The kernel start benchmark's report (bench/kernel_start.py) on made-up timings: percentiles,
the two tables and the estimated gains, without starting a kernel."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import kernel_start as bench  # noqa: E402

OURS = [
    bench.KernelRun("slicehub-gpu", 2.0 + i / 10, 2.1 + i / 10, 2.2 + i / 10, 0.1)
    for i in range(10)
]
STOCK = [bench.KernelRun("python3", 0.5, 0.6, 2.6, 2.0 + i / 10) for i in range(10)]
SPLIT = [
    ("import ipykernel (every kernel)", 0.1),
    ("import numpy", 0.05),
    ("import dask", 0.1),
    ("import distributed", 0.2),
    (bench.QUOTA_IMPORT, 0.3),
    ("import slicehub.extensions.kernel (the rest)", 0.01),
    ("slice checks: read the slice", 0.0002),
    ("slice checks: plan the cluster", 0.0001),
    ("cluster start (LocalCluster)", 1.0),
    ("client connect", 0.02),
    ("rest of start()", 0.0007),
    (bench.FIRST_TASK, 0.05),
    (bench.CUPY_ASIDE, 0.09),
]


def row(lines: list[str], label: str) -> list[str]:
    (found,) = [line for line in lines if line.startswith(f"| {label} ")]
    return [c.strip() for c in found.strip("|").split("|")]


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert bench.percentile(values, 95) == 19.0
    assert bench.percentile(values[:10], 95) == 10.0  # fewer than 20 runs: the largest
    assert bench.percentile([3.0], 95) == 3.0
    assert bench.spread([4.0, 1.0, 3.0, 2.0]) == (2.5, 4.0, 4.0)
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_latency_table_gives_p50_p95_max_of_both_kernels_and_the_difference():
    lines = bench.latency_table(OURS, STOCK)
    assert row(lines, "kernel_info reply") == [
        "kernel_info reply", "2.45", "2.90", "2.90", "0.50", "0.50", "0.50", "+1.95",
    ]  # fmt: skip
    assert row(lines, "Dask cell alone (sent to result)")[1:] == [
        "0.10", "0.10", "0.10", "2.45", "2.90", "2.90", "-2.35",
    ]  # fmt: skip
    assert len(lines) == 2 + len(bench.MEASURES)


def test_split_table_takes_each_step_over_the_runs_and_sets_cupy_apart():
    slower = [(name, s * 3) for name, s in SPLIT]
    lines = bench.split_table([SPLIT, SPLIT, slower])
    assert row(lines, "cluster start (LocalCluster)") == [
        "cluster start (LocalCluster)", "1.000", "3.000", "3.000", "background start",
    ]  # fmt: skip
    assert row(lines, bench.QUOTA_IMPORT)[-1] == "lazy import"
    assert row(lines, "slice checks: read the slice")[-1] == "(stays)"
    total = sum(s for name, s in SPLIT if name != bench.CUPY_ASIDE)
    assert row(lines, "**sum of the p50s**")[1] == f"**{total:.3f}**"
    assert lines[-1].startswith(f"| {bench.CUPY_ASIDE} | 0.090 ")  # after the sum, not in it


def test_shortening_estimates_the_gains_from_the_split():
    text = "\n".join(bench.shortening(OURS, STOCK, [SPLIT]))
    # first cell 2.55 s against 0.6 s; background: imports 0.35 + cluster 1.0 + client 0.02
    assert "its first cell 1.95 s after the stock kernel" in text
    assert "up to 1.37 s would leave the path" in text
    assert "0.30 s that only `%slicehub`'s money line needs" in text
    # what stays: the extension's own rest 0.01 + checks 0.0003 + rest of start 0.0007
    assert "(0.011 s), about 0.61 s instead of 2.55 s" in text
    assert "under 1 ms reading and checking the slice" in text
    assert "CuPy (0.09 s here" in text
