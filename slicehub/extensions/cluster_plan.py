"""What Dask cluster a kernel starts on its slice, and how the slice's memory is shared. Pure.

Input: the slice (`slicehub.extensions.slice_env.SliceEnv`) and what CUDA showed the kernel
(`GpuProbe`). Output: a `ClusterPlan` that `slicehub.extensions.kernel` carries out, and the one
line the user reads. Nothing here imports Dask or CuPy, so every rule is unit-tested on a machine
without a GPU.

The rules:
- A GPU plan needs a GPU slice whose devices are real and usable (CUDA answered); otherwise the
  plan is a CPU `LocalCluster`, and `why_cpu` says why in a sentence.
- One Dask-CUDA worker per visible GPU or MIG instance, one thread each (dask-cuda's model).
- GPU memory per device is the slice's share, never more than CUDA reports. Two processes use
  it: the Dask worker (an RMM pool) and the kernel itself (CuPy's pool, for arrays made in the
  notebook). After a reserve for the two CUDA contexts, the worker's pool gets `WORKER_GPU_SHARE`
  of the rest and CuPy's limit is what remains; the worker spills device memory to host memory
  above `SPILL_AT` of its pool, and host memory to disk above Dask's usual thresholds.
- Host memory: `HOST_SHARE` of the slice's memory goes to the workers, split evenly; the rest
  stays for the kernel and the server.
- CPU workers: about one worker per two CPUs (at most 8), the CPUs shared out as threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .slice_env import SliceEnv

MIB = 1024**2
GIB = 1024**3
CONTEXT_RESERVE = 512 * MIB  # a CUDA context and CuPy/RMM bookkeeping, per process
WORKER_GPU_SHARE = 0.5
SPILL_AT = 0.8
HOST_SHARE = 0.75
POOL_GRANULE = 256 * MIB  # RMM pool sizes are kept to whole multiples of this
MAX_CPU_WORKERS = 8


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # as CUDA names it, e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    total_memory: int


@dataclass(frozen=True)
class GpuProbe:
    devices: tuple[DeviceInfo, ...] = ()
    error: str = ""  # why CUDA could not be used, a sentence; "" when it answered


@dataclass(frozen=True)
class ClusterPlan:
    backend: str  # "cuda" or "cpu"
    n_workers: int
    threads_per_worker: int
    memory_limit: int  # host memory per worker, bytes
    devices: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES for the workers (cuda)
    device_memory: int = 0  # usable GPU memory per device (cuda)
    rmm_pool_size: int = 0  # per worker (cuda)
    device_memory_limit: int = 0  # per worker: spill device -> host above it (cuda)
    cupy_limit: int = 0  # the kernel's own CuPy pool, on its first device (cuda)
    why_cpu: str = ""  # (cpu) why there is no GPU, a sentence; "" for a CPU slice


def plan(s: SliceEnv, probe: GpuProbe | None) -> ClusterPlan:
    """The cluster for slice `s`; `probe` is None when CUDA was not asked (no GPU wanted)."""
    if not s.wants_gpu:
        return cpu_plan(s, _why_no_gpu(s))
    if probe is None or probe.error or not probe.devices:
        why = probe.error if probe and probe.error else "CUDA shows this kernel no device."
        return cpu_plan(s, why)
    devices = s.devices or tuple(str(i) for i in range(len(probe.devices)))
    if len(probe.devices) != len(devices):
        return cpu_plan(
            s,
            f"the slice has {len(devices)} device(s) but CUDA shows {len(probe.devices)}; "
            "not binding devices the slice did not pay for.",
        )
    reported = min(d.total_memory for d in probe.devices)
    per_device = min(s.gpu_memory_per_device, reported) if s.gpu_memory_bytes else reported
    budget = max(per_device - 2 * CONTEXT_RESERVE, 0)
    pool = _round_down(int(budget * WORKER_GPU_SHARE), POOL_GRANULE)
    if pool < POOL_GRANULE:
        return cpu_plan(s, f"{_gb(per_device)} of GPU memory is too little for a Dask-CUDA worker.")
    n = len(devices)
    return ClusterPlan(
        backend="cuda",
        n_workers=n,
        threads_per_worker=1,
        memory_limit=int(s.memory_bytes * HOST_SHARE) // n,
        devices=devices,
        device_memory=per_device,
        rmm_pool_size=pool,
        device_memory_limit=_round_down(int(pool * SPILL_AT), MIB),
        cupy_limit=budget - pool,
    )


def cpu_plan(s: SliceEnv, why: str) -> ClusterPlan:
    n = max(1, min(s.cpus // 2, MAX_CPU_WORKERS))
    return ClusterPlan(
        backend="cpu",
        n_workers=n,
        threads_per_worker=max(1, s.cpus // n),
        memory_limit=int(s.memory_bytes * HOST_SHARE) // n,
        why_cpu=why,
    )


def summary(s: SliceEnv, p: ClusterPlan, dashboard: str) -> str:
    """The one line a kernel prints when it is ready."""
    workers = f"{p.n_workers} worker{'s' if p.n_workers != 1 else ''}"
    if p.backend == "cuda":
        parts = [
            s.description if s.slice_type else f"{len(p.devices)} GPU(s)",
            _gb(s.gpu_memory_bytes or p.device_memory * len(p.devices)),
            f"Dask-CUDA: {workers}, RMM pool {_gb(p.rmm_pool_size)} each",
            f"CuPy: {_gb(p.cupy_limit)}",
        ]
    else:
        what = "CPU only" if not s.wants_gpu and not p.why_cpu else f"{s.description}: no GPU"
        parts = [
            what,
            f"{s.cpus} CPU{'s' if s.cpus != 1 else ''}, {_gb(s.memory_bytes)}",
            f"Dask: {workers} x {p.threads_per_worker} threads",
            "NumPy",
        ]
    parts.append(f"Dask dashboard: {dashboard}")
    line = " · ".join(parts)
    if p.backend == "cpu" and p.why_cpu:
        line += f"\nNo GPU for this kernel: {p.why_cpu} Notebooks run unchanged, on the CPU."
    return line


def _why_no_gpu(s: SliceEnv) -> str:
    if s.kind == "cpu":
        return "" if s.slice_type == "cpu" else " ".join(s.problems)
    if s.declared:
        return (
            f"the slice's devices ({', '.join(s.devices) or 'none'}) are declared by the "
            "site file for a machine without GPUs; they are not real."
        )
    return " ".join(s.problems) or "the slice has no GPU."


def _round_down(n: int, granule: int) -> int:
    return n // granule * granule


def _gb(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n % GIB else f"{n // GIB} GiB"
