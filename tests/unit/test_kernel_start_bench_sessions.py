"""The kernel start benchmark's newer parts (bench/kernel_start.py) on made-up timings: the
background start against the kernel that waits for its cluster at start, and a pre-warmed
server's warm kernel against a kernel started on the session request."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import kernel_start as bench  # noqa: E402

OURS = [bench.KernelRun("slicehub-gpu", 0.3, 0.4 + i / 100, 1.8, 1.4) for i in range(9)]
AT_START = [bench.KernelRun(bench.AT_START, 1.5, 1.6, 1.7, 0.05 + i / 100) for i in range(9)]
STOCK = [bench.KernelRun("python3", 0.25, 0.33, 1.7, 1.4) for _ in range(9)]
WARM = [bench.SessionRun("warm", 0.01, 0.07 + i / 100, 0.12) for i in range(9)]
COLD = [bench.SessionRun("cold", 0.02, 0.95, 1.65 + i / 100) for i in range(9)]
SPLIT = [
    ("import ipykernel (every kernel)", 0.1),
    ("import numpy", 0.05),
    ("import dask", 0.1),
    ("import distributed", 0.2),
    (bench.QUOTA_IMPORT, 0.3),
    ("cluster start (LocalCluster)", 1.0),
    ("client connect", 0.02),
    (bench.FIRST_TASK, 0.05),
]


def row(lines: list[str], label: str) -> list[str]:
    (found,) = [line for line in lines if line.startswith(f"| {label} ")]
    return [c.strip() for c in found.strip("|").split("|")]


def test_the_change_table_sets_the_background_start_against_the_start_that_waits():
    lines = bench.change_table(OURS, AT_START)
    assert lines[0].startswith("| from asking for the kernel to… | background start p50 |")
    assert "| cluster at start p50 |" in lines[0]
    assert row(lines, "`print(1)` result (no Dask)") == [
        "`print(1)` result (no Dask)", "0.44", "0.48", "0.48", "1.60", "1.60", "1.60", "-1.16",
    ]  # fmt: skip
    assert len(lines) == 2 + len(bench.MEASURES)


def test_the_session_table_sets_the_warm_kernel_against_a_kernel_started_on_request():
    lines = bench.session_table(WARM, COLD)
    assert lines[0].startswith("| from the session request to… | warm kernel p50 |")
    assert row(lines, "Dask cell result") == [
        "Dask cell result", "0.12", "0.12", "0.12", "1.69", "1.73", "1.73", "-1.57",
    ]  # fmt: skip
    assert [r.split(" | ")[0] for r in lines[2:]] == [
        f"| {label}" for _, label in bench.SESSION_MEASURES
    ]


def test_the_notes_say_what_each_saves():
    change = " ".join(bench.change_notes(OURS, AT_START))
    assert "answers 0.44 s after the kernel is asked for, against 1.60 s" in change
    assert "(p50; 1.16 s less)" in change
    warm = " ".join(bench.warm_notes(WARM, COLD))
    assert "first cell answers 0.11 s after the notebook asks for its kernel" in warm
    assert "against 0.95 s when the server starts the kernel then" in warm
    assert "a first Dask cell 0.12 s against 1.69 s" in warm


def test_a_dask_cells_own_time_comes_from_the_kernel_whose_cluster_was_up():
    text = "\n".join(bench.shortening(OURS, STOCK, [SPLIT], AT_START))
    assert "1.40 s from sending it to its result here; one sent once the cluster is up" in text
    assert "answers in the Dask cell's own time, 0.09 s" in text
    assert "own time" not in "\n".join(bench.shortening(OURS, STOCK, [SPLIT]))
