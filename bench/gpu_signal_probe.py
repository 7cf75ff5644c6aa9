"""The GPU signal (slicehub.extensions.gpu_signal) read for real: while a CuPy matmul loop runs
on one device, then while the same process sleeps with its CUDA context open.

The device is the first MIG instance of the first GPU in MIG mode, else the first whole GPU
(`--device` names another). A child process runs the load with `CUDA_VISIBLE_DEVICES` set to
that device; this process reads it with a `GpuSampler` every `--every` seconds, as the server
extension does, and prints one row per reading. The check: every reading in the busy phase after
the first is "active", and every reading in the sleep phase after `--settle` seconds is "idle".
A machine without a usable NVIDIA driver or CuPy prints why and exits 0 (nothing to probe);
tests/gpu/test_gpu_signal_real.py runs this with `--json` and checks the same.

    .venv/bin/python bench/gpu_signal_probe.py [--device UUID] [--busy 8] [--sleep 8]
        [--every 1] [--settle 2] [--json PATH] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pynvml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(REPO)
)  # a lent GPU machine runs this from a checkout, slicehub not installed

from slicehub.extensions.gpu_signal import GpuSampler  # noqa: E402

RESULTS = REPO / "bench" / "results" / "gpu_signal_probe.md"

# The load: a 4096² float32 matmul loop for `busy` seconds, then a sleep with the context open.
CHILD = """
import sys, time
import cupy
busy, rest = float(sys.argv[1]), float(sys.argv[2])
a = cupy.random.random((4096, 4096), dtype=cupy.float32)
b = a @ a
cupy.cuda.runtime.deviceSynchronize()
print("busy", flush=True)
end = time.monotonic() + busy
while time.monotonic() < end:
    b = a @ b
    b /= 4096.0
    cupy.cuda.runtime.deviceSynchronize()
print("sleep", flush=True)
time.sleep(rest)
print("done", flush=True)
"""


def pick_device() -> tuple[str | None, str]:
    """The device to load and read, or None and why there is none."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"no usable NVIDIA driver here: nvmlInit() failed ({exc})"
    try:
        whole = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            gpu = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(gpu)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            except pynvml.NVMLError_NotSupported:
                mig = False
            if not mig:
                whole = whole or pynvml.nvmlDeviceGetUUID(gpu)
                continue
            for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
                try:
                    instance = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot)
                except pynvml.NVMLError_NotFound:
                    continue
                return _text(pynvml.nvmlDeviceGetUUID(instance)), "the first MIG instance"
        if whole:
            return _text(whole), "the first whole GPU"
        return None, "the NVIDIA driver shows no GPU and no MIG instance"
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe(device: str, busy: float, rest: float, every: float, settle: float) -> list[dict]:
    """Readings while the child loads `device`, then while it sleeps; one dict per reading."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=device)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(busy), str(rest)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    phases: queue.Queue[tuple[str, float]] = queue.Queue()

    def follow() -> None:
        for line in child.stdout:
            phases.put((line.strip(), time.monotonic()))

    threading.Thread(target=follow, daemon=True).start()
    sampler = GpuSampler((device,), declared=False)
    rows: list[dict] = []
    phase, since, start = "start", time.monotonic(), time.monotonic()
    try:
        while child.poll() is None or not phases.empty():
            while not phases.empty():
                phase, since = phases.get()
            if phase == "done":
                break
            reading = sampler.sample()
            now = time.monotonic()
            rows.append(
                {
                    "t": round(now - start, 1),
                    "phase": phase,
                    "in_phase": round(now - since, 1),
                    **reading.as_json(),
                }
            )
            time.sleep(every)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        sampler.close()
    if child.returncode:
        raise SystemExit(f"the CuPy load failed (exit {child.returncode}); see its stderr above")
    for row in rows:
        row["counts"] = (row["phase"] == "busy" and row is not _first(rows, "busy")) or (
            row["phase"] == "sleep" and row["in_phase"] >= settle
        )
    return rows


def _first(rows: list[dict], phase: str) -> dict | None:
    return next((r for r in rows if r["phase"] == phase), None)


def verdict(rows: list[dict]) -> tuple[bool, str]:
    busy = [r for r in rows if r["counts"] and r["phase"] == "busy"]
    rest = [r for r in rows if r["counts"] and r["phase"] == "sleep"]
    active = sum(r["signal"] == "active" for r in busy)
    idle = sum(r["signal"] == "idle" for r in rest)
    ok = bool(busy) and bool(rest) and active == len(busy) and idle == len(rest)
    return ok, f"busy phase: {active}/{len(busy)} active; sleep phase: {idle}/{len(rest)} idle"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| t (s) | phase | signal | percent | counts | detail |",
        "|---:|---|---|---:|---|---|",
    ]
    for r in rows:
        percent = "" if r["percent"] is None else r["percent"]
        lines.append(
            f"| {r['t']} | {r['phase']} +{r['in_phase']} s | {r['signal']} | {percent} | "
            f"{'yes' if r['counts'] else ''} | {r['detail']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", help="a GPU-<uuid> or MIG-<uuid> (default: picked, see above)")
    ap.add_argument("--busy", type=float, default=8.0, help="seconds of matmul loop")
    ap.add_argument("--sleep", type=float, default=8.0, help="seconds of sleep after it")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between readings")
    ap.add_argument("--settle", type=float, default=2.0, help="sleep-phase readings before this")
    ap.add_argument("--json", type=Path, help="also write the readings and verdict as JSON")
    ap.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    args = ap.parse_args(argv)
    device, why = (args.device, "--device") if args.device else pick_device()
    try:
        import cupy  # noqa: F401
    except ImportError:
        device, why = None, "CuPy is not installed in this environment"
    if device is None:
        print(f"nothing to probe: {why}")
        if args.json:
            args.json.write_text(json.dumps({"device": None, "why": why}) + "\n")
        return 0
    rows = probe(device, args.busy, args.sleep, args.every, args.settle)
    ok, summary = verdict(rows)
    lines = [
        "# GPU signal read for real",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; device {device} ({why}); "
        f"readings every {args.every} s; a {args.busy} s CuPy 4096² matmul loop, then "
        f"{args.sleep} s asleep with the CUDA context open; sleep-phase readings count after "
        f"{args.settle} s",
        "",
        *table(rows),
        "",
        f"{'PASS' if ok else 'FAIL'}: {summary}",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps({"device": device, "ok": ok, "summary": summary, "rows": rows}) + "\n"
        )
    if args.write:
        RESULTS.write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
