"""Asking CUDA, through CuPy, what this kernel can see: the one place that touches a GPU before
the cluster starts.

CuPy installs on a machine without a GPU and imports there; it fails at the first device call
(`CUDARuntimeError: cudaErrorInsufficientDriver` where there is no driver). So a probe makes a
device call, and any failure becomes a sentence in `GpuProbe.error`, never an exception: the
kernel then falls back to the CPU and says why.
"""

from __future__ import annotations

from .cluster_plan import DeviceInfo, GpuProbe


def probe() -> GpuProbe:
    try:
        import cupy
    except ImportError:
        return GpuProbe(error="CuPy is not installed in this environment.")
    try:
        runtime = cupy.cuda.runtime
        devices = []
        for i in range(runtime.getDeviceCount()):
            props = runtime.getDeviceProperties(i)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            devices.append(DeviceInfo(name, int(props["totalGlobalMem"])))
    except Exception as e:  # CUDARuntimeError and friends: no driver, no device, busy device
        return GpuProbe(error=f"CUDA is not usable here ({short_error(e)}).")
    if not devices:
        return GpuProbe(error="CUDA shows this kernel no device.")
    return GpuProbe(tuple(devices))


def short_error(e: BaseException) -> str:
    """'CUDARuntimeError: cudaErrorInsufficientDriver: ...' on one line, at most 160 chars."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= 160 else text[:157] + "..."
