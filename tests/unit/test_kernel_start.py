"""The GPU kernel's start on this machine, for real: CuPy installed, no GPU driver. The probe
must meet CUDA's own failure and the kernel must fall back to a working CPU cluster that
matches its plan, and leave nothing behind when closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slicehub.extensions import gpu, kernel
from slicehub.extensions.cluster_plan import GIB

NO_DRIVER = not any(Path(p).exists() for p in ("/dev/nvidiactl", "/proc/driver/nvidia"))


@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver")
def test_the_probe_meets_cudas_own_error_without_a_driver():
    found = gpu.probe()
    assert found.devices == ()
    assert found.error.startswith("CUDA is not usable here (CUDARuntimeError: ")


@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver")
def test_a_mig_slice_without_a_driver_gets_a_working_cpu_cluster(tmp_path):
    env = {
        "SLICEHUB_SLICE_TYPE": "h100.1g.10gb",
        "CUDA_VISIBLE_DEVICES": "MIG-11111111-2222-3333-4444-555555555555",
        "SLICEHUB_CPUS": "2",
        "SLICEHUB_MEMORY_BYTES": str(2 * GIB),
        "SLICEHUB_SESSION_END": "2026-11-22T23:00:00+00:00",
        "SLICEHUB_GPU_MEMORY_BYTES": "not-a-number",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/ana/",
        "TMPDIR": str(tmp_path),
    }
    session = kernel.start(env)
    try:
        assert session.plan.backend == "cpu" and session.xp.__name__ == "numpy"
        first, second, note = session.line.splitlines()
        assert first.startswith("1g.10gb MIG slice of an H100-80GB: no GPU · 2 CPUs, 2 GiB")
        assert "Dask dashboard: /user/ana/proxy/" in first
        assert "cudaErrorInsufficientDriver" in second
        assert note.startswith("Note: SLICEHUB_GPU_MEMORY_BYTES='not-a-number'")
        workers = session.client.scheduler_info()["workers"].values()
        assert [w["memory_limit"] for w in workers] == [session.plan.memory_limit]
        assert [w["nthreads"] for w in workers] == [2]
        assert session.client.submit(sum, [1, 2, 3]).result() == 6
        assert session.client.scheduler.address.startswith("tls://127.0.0.1:")
        spill_dirs = list(tmp_path.glob("slicehub-dask-*"))
        assert len(spill_dirs) == 1
    finally:
        session.close()
    assert not any(tmp_path.glob("slicehub-dask-*"))
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != env["CUDA_VISIBLE_DEVICES"]
