"""The GPU kernel's pure parts: the slice read from the environment, the cluster planned on it,
the line the user reads, and the session's money. Every slice shape, no GPU needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slicehub.common.durations import duration_text
from slicehub.extensions.cluster_plan import (
    CONTEXT_RESERVE,
    GIB,
    POOL_GRANULE,
    DeviceInfo,
    GpuProbe,
    plan,
    summary,
)
from slicehub.extensions.session import SessionMoney
from slicehub.extensions.slice_env import parse, parse_devices

U1 = "11111111-2222-3333-4444-555555555555"
U2 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
HOST_CPUS, HOST_MEM = 16, 64 * GIB


def env(**kw) -> dict[str, str]:
    base = {"SLICEHUB_CPUS": "4", "SLICEHUB_MEMORY_BYTES": str(16 * GIB)}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def read(**kw):
    return parse(env(**kw), HOST_CPUS, HOST_MEM)


def h100s(n: int, memory: int = 80 * GIB, name: str = "NVIDIA H100 80GB HBM3") -> GpuProbe:
    return GpuProbe(tuple(DeviceInfo(name, memory) for _ in range(n)))


# -- the slice ------------------------------------------------------------------------------


def test_mig_slice_by_uuid():
    s = read(SLICEHUB_SLICE_TYPE="h100.3g.40gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}")
    assert (s.kind, s.devices, s.problems) == ("mig", (f"MIG-{U1}",), ())
    assert s.gpu_memory_bytes == 40 * GIB and s.wants_gpu
    assert s.description == "3g.40gb MIG slice of an H100-80GB"


def test_mig_slice_by_legacy_name_and_by_slurm_index():
    legacy = f"MIG-GPU-{U1}/1/0"
    assert read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES=legacy).devices == (
        legacy,
    )
    # a Slurm job with cgroup device constraints sees its one device as 0
    assert read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES="0").devices == ("0",)


def test_several_whole_gpus():
    s = read(SLICEHUB_SLICE_TYPE="h100x2", CUDA_VISIBLE_DEVICES=f"GPU-{U1},GPU-{U2}")
    assert s.kind == "gpu" and len(s.devices) == 2
    assert s.gpu_memory_bytes == 160 * GIB and s.gpu_memory_per_device == 80 * GIB
    assert read(SLICEHUB_SLICE_TYPE="h100x2", CUDA_VISIBLE_DEVICES="0,1").devices == ("0", "1")


def test_cpu_slice_has_no_devices_and_no_problem():
    s = read(SLICEHUB_SLICE_TYPE="cpu", CUDA_VISIBLE_DEVICES="")
    assert (s.kind, s.devices, s.problems, s.wants_gpu) == ("cpu", (), (), False)
    assert (s.cpus, s.memory_bytes) == (4, 16 * GIB)


@pytest.mark.parametrize(
    "slice_type, visible, says",
    [
        ("h100.1g.10gb", "banana", "'banana' is not a device"),
        ("h100.1g.10gb", f"MIG-{U1},MIG-{U2}", "is one MIG instance"),
        ("h100.1g.10gb", f"GPU-{U1}", "is one MIG instance"),
        ("h100.1g.10gb", None, "needs CUDA_VISIBLE_DEVICES, and it is not set"),
        ("h100x2", f"GPU-{U1}", "is 2 whole GPU(s)"),
        ("h100x2", f"GPU-{U1},GPU-{U1}", "names a device twice"),
        ("h100x1", f"MIG-{U1}", "is 1 whole GPU(s)"),
        ("h100x1", "0;rm -rf /", "is not a device"),
        ("h100x1", f"GPU-{U1[:-1]}", "is not a device"),
        ("h100.9g.90gb", f"MIG-{U1}", "is not a MIG profile"),
    ],
)
def test_malformed_devices_fall_back_to_the_cpu_with_a_sentence(slice_type, visible, says):
    s = read(SLICEHUB_SLICE_TYPE=slice_type, CUDA_VISIBLE_DEVICES=visible)
    assert s.devices == () and not s.wants_gpu
    assert any(says in p for p in s.problems), s.problems
    p = plan(s, None)
    assert p.backend == "cpu" and says in p.why_cpu
    assert "No GPU for this kernel" in summary(s, p, "/d")


@pytest.mark.parametrize(
    "name, raw, says",
    [
        ("SLICEHUB_CPUS", "four", "is not a whole number; using 16"),
        ("SLICEHUB_CPUS", "0", "is below 1; using 16"),
        ("SLICEHUB_MEMORY_BYTES", "-5", "is below 1"),
        ("SLICEHUB_SESSION_END", "tomorrow", "is not an ISO 8601 time"),
        ("SLICEHUB_SESSION_END", "2026-11-22T10:00:00", "has no time zone"),
    ],
)
def test_bad_numbers_and_times_are_named_and_replaced(name, raw, says):
    s = read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}", **{name: raw})
    assert any(name in p and says in p for p in s.problems), s.problems
    assert s.wants_gpu  # a bad number does not cost the user the GPU
    assert s.cpus >= 1 and s.memory_bytes >= 1


def test_declared_devices_are_never_used_as_gpus():
    s = read(
        SLICEHUB_SLICE_TYPE="h100.1g.10gb",
        CUDA_VISIBLE_DEVICES=f"MIG-{U1}",
        SLICEHUB_DEVICES_DECLARED="1",
    )
    assert s.declared and not s.wants_gpu
    p = plan(s, h100s(1))  # even if something answered: declared is not real
    assert p.backend == "cpu" and "declared" in p.why_cpu


def test_outside_slicehub_whatever_cuda_shows():
    s = parse({}, HOST_CPUS, HOST_MEM)
    assert (s.kind, s.devices, s.cpus, s.memory_bytes) == ("unknown", (), HOST_CPUS, HOST_MEM)
    assert plan(s, h100s(2)).n_workers == 2
    hidden = parse({"CUDA_VISIBLE_DEVICES": ""}, HOST_CPUS, HOST_MEM)
    assert hidden.kind == "cpu" and not hidden.wants_gpu


def test_session_end_and_ledger_session():
    s = read(
        SLICEHUB_SLICE_TYPE="cpu",
        SLICEHUB_SESSION_END="2026-11-22T14:00:00+08:00",
        SLICEHUB_LEDGER_SESSION="42",
        SLICEHUB_PROJECT="ai-lab",
    )
    assert s.session_end == datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    assert (s.ledger_session, s.project) == (42, "ai-lab")


def test_parse_devices_accepts_spaces_and_refuses_empty_entries():
    assert parse_devices(f" MIG-{U1} ") == (f"MIG-{U1}",)
    with pytest.raises(ValueError, match="is not a device"):
        parse_devices("0,,1")


# -- the cluster ------------------------------------------------------------------------------


def test_mig_slice_gets_one_cuda_worker_and_shares_its_memory():
    s = read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}")
    # CUDA reports a 1g.10gb instance as a little under 10 GiB
    p = plan(s, h100s(1, memory=9_856 * 1024**2, name="NVIDIA H100 80GB HBM3 MIG 1g.10gb"))
    assert (p.backend, p.n_workers, p.threads_per_worker, p.devices) == (
        "cuda",
        1,
        1,
        (f"MIG-{U1}",),
    )
    assert p.device_memory == 9_856 * 1024**2  # what CUDA reports, below the slice's 10 GiB
    assert p.rmm_pool_size % POOL_GRANULE == 0 and p.rmm_pool_size > 0
    assert p.device_memory_limit < p.rmm_pool_size  # spilling starts before the pool is full
    # the worker's pool, the kernel's CuPy limit and two CUDA contexts fit in the device
    assert p.rmm_pool_size + p.cupy_limit + 2 * CONTEXT_RESERVE <= p.device_memory
    assert p.memory_limit == int(16 * GIB * 0.75)


def test_whole_gpus_get_one_worker_each_sized_per_device():
    s = read(SLICEHUB_SLICE_TYPE="h100x4", CUDA_VISIBLE_DEVICES="0,1,2,3")
    p = plan(s, h100s(4))
    assert p.n_workers == 4 and p.devices == ("0", "1", "2", "3")
    assert p.device_memory == 80 * GIB
    assert p.memory_limit * 4 <= 16 * GIB


def test_the_slice_never_gets_more_than_it_paid_for():
    # CUDA shows more devices than the slice has: no GPU rather than someone else's
    s = read(SLICEHUB_SLICE_TYPE="h100x1", CUDA_VISIBLE_DEVICES=f"GPU-{U1}")
    p = plan(s, h100s(2))
    assert p.backend == "cpu" and "did not pay for" in p.why_cpu
    # a slice smaller than the device it sits on is held to the slice's size
    small = read(
        SLICEHUB_SLICE_TYPE="h100.3g.40gb",
        CUDA_VISIBLE_DEVICES=f"MIG-{U1}",
    )
    assert plan(small, h100s(1)).device_memory == 40 * GIB


def test_no_driver_falls_back_with_cudas_own_words():
    s = read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}")
    why = "CUDA is not usable here (CUDARuntimeError: cudaErrorInsufficientDriver)."
    p = plan(s, GpuProbe(error=why))
    assert p.backend == "cpu" and p.why_cpu == why
    line = summary(s, p, "/user/a/proxy/8787/status")
    assert line.startswith("1g.10gb MIG slice of an H100-80GB: no GPU · 4 CPUs, 16 GiB")
    assert "cudaErrorInsufficientDriver" in line and "run unchanged, on the CPU" in line


def test_too_little_gpu_memory_is_refused_plainly():
    s = read(SLICEHUB_SLICE_TYPE="h100.1g.10gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}")
    p = plan(s, h100s(1, memory=1 * GIB))
    assert p.backend == "cpu" and "too little for a Dask-CUDA worker" in p.why_cpu


@pytest.mark.parametrize("cpus, workers, threads", [(1, 1, 1), (2, 1, 2), (8, 4, 2), (64, 8, 8)])
def test_cpu_workers_follow_the_slices_cpus(cpus, workers, threads):
    s = read(SLICEHUB_SLICE_TYPE="cpu", SLICEHUB_CPUS=str(cpus))
    p = plan(s, None)
    assert (p.backend, p.n_workers, p.threads_per_worker) == ("cpu", workers, threads)
    assert p.why_cpu == ""
    assert p.n_workers * p.threads_per_worker <= cpus or cpus == 1


def test_the_one_line_for_a_gpu_slice():
    s = read(SLICEHUB_SLICE_TYPE="h100.3g.40gb", CUDA_VISIBLE_DEVICES=f"MIG-{U1}")
    p = plan(s, h100s(1, memory=40 * GIB))
    line = summary(s, p, "/user/ana/proxy/8787/status")
    assert line.startswith("3g.40gb MIG slice of an H100-80GB · 40 GiB · Dask-CUDA: 1 worker")
    assert line.endswith("Dask dashboard: /user/ana/proxy/8787/status")
    assert "\n" not in line


def test_the_one_line_for_a_cpu_slice():
    s = read(SLICEHUB_SLICE_TYPE="cpu", SLICEHUB_CPUS="2", SLICEHUB_MEMORY_BYTES=str(4 * GIB))
    line = summary(s, plan(s, None), "/d")
    assert (
        line == "CPU only · 2 CPUs, 4 GiB · Dask: 1 worker x 2 threads · NumPy · Dask dashboard: /d"
    )


# -- time and money -----------------------------------------------------------------------------


def test_session_money_from_the_quota_view():
    view = {
        "hold_list_cents": 1100,
        "hold_subsidy_cents": 770,
        "charged_list_cents": 275,
        "charged_subsidy_cents": 192,
        "charged_copay_cents": 83,
    }
    m = SessionMoney.from_view(view)
    assert (m.subsidy_left, m.copay_left) == (578, 247)
    assert m.subsidy_left + m.copay_left + m.spent_list == m.held_list
    assert m.describe() == (
        "HK$8.25 left of HK$11.00 held (subsidy HK$5.78, co-pay HK$2.47); spent HK$2.75 so far"
    )


@pytest.mark.parametrize(
    "left, text",
    [
        (timedelta(hours=2, minutes=5), "2 h 05 min"),
        (timedelta(minutes=9, seconds=59), "9 min"),
        (timedelta(seconds=42), "42 s"),
        (timedelta(seconds=-3), "0 s"),
    ],
)
def test_durations_read_well(left, text):
    assert duration_text(left) == text
