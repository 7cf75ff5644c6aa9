"""The GPU kernel on a real NVIDIA GPU: the cluster binds the visible device, the workers' RMM
pools and the kernel's CuPy limit are what the plan says, and work runs on the device.

Skipped (with the reason) where CUDA does not answer. Read-only towards the GPU: it uses the
GPU or MIG instance that is there and changes no mode or setting.
"""

from __future__ import annotations

import pytest

from slicehub.extensions import gpu, kernel
from slicehub.extensions.cluster_plan import GIB

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device():
    found = gpu.probe()
    if not found.devices:
        pytest.skip(f"no usable GPU here: {found.error}")
    return found.devices[0]


def test_a_whole_gpu_slice_gets_a_bound_cuda_cluster(device, tmp_path):
    env = {
        "SLICEHUB_SLICE_TYPE": "h100x1",
        "CUDA_VISIBLE_DEVICES": "0",
        "SLICEHUB_CPUS": "4",
        "SLICEHUB_MEMORY_BYTES": str(16 * GIB),
        "SLICEHUB_GPU_MEMORY_BYTES": str(min(device.total_memory, 80 * GIB)),
        "TMPDIR": str(tmp_path),
    }
    session = kernel.start(env)
    try:
        p = session.plan
        print(session.line)
        assert p.backend == "cuda", session.line
        assert session.xp.__name__ == "cupy"
        assert session.line.startswith("1 whole H100-80GB GPU · ")
        workers = session.client.scheduler_info()["workers"]
        assert len(workers) == 1

        def bound(dask_worker=None):
            import os

            import cupy
            import rmm

            mr = rmm.mr.get_current_device_resource()
            allocator = cupy.cuda.get_allocator()
            return (
                os.environ["CUDA_VISIBLE_DEVICES"],
                type(mr).__name__,
                getattr(mr, "pool_size", lambda: None)(),
                getattr(allocator, "__module__", "") or repr(allocator),
            )

        ((visible, resource, pool, allocator),) = session.client.run(bound).values()
        assert "rmm" in allocator  # the workers' CuPy arrays live in the slice's RMM pool
        assert visible.split(",")[0] == "0"
        assert "Pool" in resource or "Statistics" in resource or "Tracking" in resource
        if pool is not None:
            assert pool >= p.rmm_pool_size

        import cupy

        assert cupy.get_default_memory_pool().get_limit() == p.cupy_limit

        def on_device(n):
            import cupy

            return float(cupy.arange(n, dtype=cupy.float64).sum())

        n = 10_000_000
        assert session.client.submit(on_device, n).result() == n * (n - 1) / 2
        m = session.memory()
        assert m["device_total"] > 0 and m["cupy_limit"] == p.cupy_limit
    finally:
        session.close()
