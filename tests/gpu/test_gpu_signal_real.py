"""The GPU signal read for real: "active" while a CuPy matmul loop runs on the device, "idle"
while the same process sleeps with its CUDA context open.

Runs bench/gpu_signal_probe.py (the same check as a table, for a session with a lent GPU) and
reads its JSON. Skipped with the probe's reason where NVML cannot be initialised, the driver
shows no GPU, or CuPy is missing.
On a MIG instance whose GPU or driver offers no GPM, the probe's readings are "none"; the test
then checks the sentence and skips the activity check, saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

PROBE = Path(__file__).resolve().parents[2] / "bench" / "gpu_signal_probe.py"


def test_signal_is_active_under_a_cupy_loop_and_idle_asleep(tmp_path):
    out = tmp_path / "probe.json"
    args = ["--busy", "6", "--sleep", "6", "--every", "1", "--settle", "2", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=180
    )
    print(done.stdout, done.stderr)
    result = json.loads(out.read_text())
    if result["device"] is None:  # no usable driver, no GPU, or no CuPy: the probe says which
        pytest.skip(result["why"])
    rows = result["rows"]
    counted = [r for r in rows if r["counts"]]
    if counted and all(r["signal"] == "none" for r in counted):
        assert all(r["detail"].startswith("no GPU signal: ") for r in counted)
        assert "offers no GPM metrics" in counted[0]["detail"], counted[0]
        pytest.skip(f"{result['device']} has no GPU signal here: {counted[0]['detail']}")
    busy = [r for r in counted if r["phase"] == "busy"]
    asleep = [r for r in counted if r["phase"] == "sleep"]
    assert busy and asleep, rows
    assert all(r["signal"] == "active" and r["percent"] >= 5 for r in busy), busy
    assert all(r["signal"] == "idle" and r["percent"] < 5 for r in asleep), asleep
    assert result["ok"] and done.returncode == 0, done.stdout
