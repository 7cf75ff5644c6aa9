"""The notebooks in examples/, run end to end in the slicehub-gpu kernel, their answers checked.

Each notebook's last code cell prints one line, `SLICEHUB_RESULT {json}`; the tests parse it and
check the numbers against closed forms computed here, independently of the notebook's own check.
The kernel gets a CPU slice (2 CPUs, 1 GiB), the way a CPU-only server of Slicehub would, so
these run on any machine; `test_examples_on_a_gpu_slice` runs the same notebooks on a GPU slice
and is skipped without an NVIDIA driver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
KERNEL = "slicehub-gpu"
MIB = 1024**2
GIB = 1024**3
RESULT_PREFIX = "SLICEHUB_RESULT "

FFT = "01-cupy-fft.ipynb"
SPILL = "02-dask-spill.ipynb"
FRAME = "03-dataframe-groupby-join.ipynb"
NOTEBOOKS = (FFT, SPILL, FRAME)

CPU_SLICE = {
    "SLICEHUB_SLICE_TYPE": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
    "SLICEHUB_CPUS": "2",
    "SLICEHUB_MEMORY_BYTES": str(GIB),
}
# A whole GPU held to the GPU memory of a 1g.10gb MIG slice, so the sizes are a 1g slice's.
GPU_SLICE = {
    "SLICEHUB_SLICE_TYPE": "h100x1",
    "CUDA_VISIBLE_DEVICES": "0",
    "SLICEHUB_GPU_MEMORY_BYTES": str(10 * GIB),
    "SLICEHUB_CPUS": "4",
    "SLICEHUB_MEMORY_BYTES": str(16 * GIB),
}
# What the kernel plans for CPU_SLICE (slicehub.extensions.cluster_plan): one worker with 75% of 1
# GiB.
CPU_WORKER_LIMIT = int(0.75 * GIB)

# the notebooks' constants, restated
SAMPLES = 65_536
TONES = 3
FFT_ROW_BYTES = SAMPLES * 4 + (SAMPLES // 2 + 1) * 8
MODULUS = 1_000
KEYS = 10_000
REGIONS = 4
FRAME_ROW_BYTES = 16


def run_notebook(
    name: str, slice_env: Mapping[str, str], tmp_path: Path, timeout: int = 120
) -> dict:
    """Execute examples/`name` in a fresh slicehub-gpu kernel on `slice_env`; its result."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    assert nb.metadata.kernelspec.name == KERNEL
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs; clear them"
    )
    # the runner's own SLICEHUB_* (a session end, an example size) must not reach the kernel;
    # TMPDIR takes the cluster's spill directory out of the machine's /tmp
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLICEHUB_")}
    env.update(slice_env, TMPDIR=str(tmp_path))
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        resources={"metadata": {"path": str(REPO_ROOT)}},
    )
    client.execute(env=env)
    # the kernel shut down cleanly: its cluster closed and its spill directory went with it
    assert not list(tmp_path.glob("slicehub-dask-*")), "the kernel left its spill directory"
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    printed = "".join(
        o.text for o in last.outputs if o.output_type == "stream" and o.name == "stdout"
    ).splitlines()
    assert len(printed) == 1 and printed[0].startswith(RESULT_PREFIX), printed
    result = json.loads(printed[0].removeprefix(RESULT_PREFIX))
    assert result["example"] == name.removesuffix(".ipynb")
    assert result["ok"] is True, result
    assert result["bytes"] > 0 and result["seconds"] > 0
    return result


# ---- closed forms, restated from the notebooks' descriptions ---------------------------------


def planted_frequencies(signal: int) -> list[int]:
    bins = SAMPLES // 2 - 1
    return sorted(1 + (signal * 7919 + j * (bins // TONES)) % bins for j in range(TONES))


def residue_sums(n: int) -> tuple[int, int]:
    """Sum and sum of squares of i mod MODULUS for i in 0 .. n-1."""
    q, r = divmod(n, MODULUS)
    total = q * sum(range(MODULUS)) + sum(range(r))
    squares = q * sum(v * v for v in range(MODULUS)) + sum(v * v for v in range(r))
    return total, squares


def region_sums(n: int) -> dict[str, int]:
    """Per region, the sum of value * weight over the rows of its keys."""
    out = {f"r{r}": 0 for r in range(REGIONS)}
    for key in range(min(n, KEYS)):
        rows = (n - key + KEYS - 1) // KEYS
        out[f"r{key % REGIONS}"] += (1 + key % 5) * (rows * key + KEYS * rows * (rows - 1) // 2)
    return out


def check_fft(result: dict) -> None:
    signals = result["signals"]
    assert result["samples"] == SAMPLES
    assert result["bytes"] == signals * FFT_ROW_BYTES
    assert result["signals_wrong"] == 0
    expected = [planted_frequencies(s) for s in range(min(signals, 3))]
    assert result["expected_frequencies"] == expected
    assert result["found_frequencies"] == expected


def check_spill(result: dict) -> None:
    n = result["bytes"] // 8
    total, squares = residue_sums(n)
    assert (result["sum"], result["expected_sum"]) == (total, total)
    assert (result["sum_of_squares"], result["expected_sum_of_squares"]) == (squares, squares)
    limit = result["worker_limit_bytes"] * result["workers"]
    if result["bytes"] > limit:
        assert result["spilled_bytes"] > 0


def check_frame(result: dict) -> None:
    n = result["rows"]
    assert result["bytes"] == n * FRAME_ROW_BYTES
    assert result["groups"] == result["expected_groups"] == min(n, KEYS)
    assert result["sum"] == result["expected_sum"] == n * (n - 1) // 2
    expected = {r: s for r, s in region_sums(n).items() if s}
    assert result["region_sums"] == result["expected_region_sums"] == expected


CHECKS = {FFT: check_fft, SPILL: check_spill, FRAME: check_frame}


# ---- on a CPU slice --------------------------------------------------------------------------


def test_fft_finds_every_planted_tone(tmp_path):
    result = run_notebook(FFT, CPU_SLICE, tmp_path)
    assert result["backend"] == "cpu"
    check_fft(result)
    # by default 40% of what the workers leave the kernel: 1 GiB - 768 MiB
    kernel_memory = GIB - CPU_WORKER_LIMIT
    assert 0.4 * kernel_memory - FFT_ROW_BYTES < result["bytes"] <= 0.4 * kernel_memory


def test_spill_reduces_an_array_larger_than_the_worker_limit(tmp_path):
    result = run_notebook(SPILL, CPU_SLICE, tmp_path)
    assert result["backend"] == "cpu"
    assert (result["workers"], result["worker_limit_bytes"]) == (1, CPU_WORKER_LIMIT)
    check_spill(result)
    # by default 1.4 x the worker's limit, so part of it must have gone to disk
    assert result["bytes"] == int(1.4 * CPU_WORKER_LIMIT) // 8 * 8
    assert result["spilled_bytes"] > 0
    (storage,) = result["storage"].values()
    assert storage["disk"] == result["spilled_bytes"] and storage["device"] == 0


def test_groupby_join_matches_the_closed_forms(tmp_path):
    result = run_notebook(FRAME, CPU_SLICE, tmp_path)
    assert (result["backend"], result["dataframe"]) == ("cpu", "pandas")
    check_frame(result)
    assert result["bytes"] == int(0.25 * CPU_WORKER_LIMIT) // FRAME_ROW_BYTES * FRAME_ROW_BYTES
    assert result["groups"] == KEYS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_bytes_sets_the_working_set(name, tmp_path):
    """SLICEHUB_EXAMPLE_BYTES (with a unit) replaces the size the slice would give."""
    asked = 24 * MIB
    result = run_notebook(name, {**CPU_SLICE, "SLICEHUB_EXAMPLE_BYTES": "24MiB"}, tmp_path)
    CHECKS[name](result)
    assert asked - FFT_ROW_BYTES < result["bytes"] <= asked  # rounded down to whole rows


# ---- on a GPU slice --------------------------------------------------------------------------


@pytest.fixture
def gpu_present() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no usable NVIDIA driver here: nvmlInit() failed ({exc})")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("the NVIDIA driver shows no GPU")
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
def test_examples_on_a_gpu_slice(gpu_present, tmp_path):
    for name in NOTEBOOKS:
        (tmp_path / name).mkdir()
        result = run_notebook(name, GPU_SLICE, tmp_path / name, timeout=600)
        assert result["backend"] == "cuda", f"{name} ran on the CPU: {result}"
        CHECKS[name](result)
        if name == SPILL:  # 1.4 x the device limit: dask-cuda moved some of it to the host
            assert result["spilled_bytes"] > 0
