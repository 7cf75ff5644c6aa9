"""The GPU signal of a slice (slicehub.extensions.gpu_signal) against a fake NVML at the library
boundary.

`FakeNvml` has pynvml's shape: the calls the module makes, answering with pynvml's own structs
(`c_nvmlUtilization_t`, `c_nvmlGpmSupport_t`, `c_nvmlGpmMetricsGet_t` filled in as the driver
fills it, GPM samples as `c_nvmlGpmSample_t` pointers) and raising pynvml's own `NVMLError`
subclasses with their real codes. It refuses what the real library refuses: a `str` UUID (pynvml
hands it to a `c_char_p`), a MIG device handle where GPM wants the parent GPU, utilisation of a
GPU in MIG mode, a GPM sample used after it was freed. The real-GPU counterpart is
tests/gpu/test_gpu_signal_real.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pynvml
import pytest

from slicehub.common import clock
from slicehub.extensions import gpu_signal
from slicehub.extensions.gpu_signal import GpuSampler, read_gpu_signal

GPU_A = "GPU-8f3a1c2e-4b5d-6e7f-8091-a2b3c4d5e6f7"
GPU_B = "GPU-1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"
MIG_1 = "MIG-5c6d7e8f-9a0b-5c1d-8e2f-3a4b5c6d7e8f"
MIG_2 = "MIG-0f1e2d3c-4b5a-5968-8776-5a4b3c2d1e0f"
UNKNOWN = "GPU-00000000-0000-0000-0000-000000000000"


def nvml_error(name: str) -> pynvml.NVMLError:
    """pynvml's own exception for NVML_ERROR_<name> (an NVMLError_<Name> subclass)."""
    return pynvml.NVMLError(getattr(pynvml, f"NVML_ERROR_{name}"))


@dataclass
class FakeMig:
    uuid: str
    graphics: float | None = 0.0  # GRAPHICS_UTIL between the last two samples; None: refused
    sm: float | None = 0.0


@dataclass
class FakeGpu:
    uuid: str
    utilization: int = 0
    mig_capable: bool = True  # False: nvmlDeviceGetMigMode answers NOT_SUPPORTED
    mig: bool = False
    gpm: bool | str = True  # False: not supported; a name: that NVML error
    instances: dict[int, FakeMig] = field(default_factory=dict)  # GPU instance id -> MIG device
    fail: str | None = None  # every read of this GPU raises NVML_ERROR_<fail>


@dataclass(frozen=True)
class FakeHandle:
    gpu: int
    gpu_instance: int | None = None  # a MIG device handle


class FakeNvml:
    """The part of pynvml that gpu_signal uses, replaying a node's answers (see module doc)."""

    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_GRAPHICS_UTIL = pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL
    NVML_GPM_METRIC_SM_UTIL = pynvml.NVML_GPM_METRIC_SM_UTIL
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t

    def __init__(self, *gpus: FakeGpu, init_error: str | None = None):
        self.gpus = list(gpus)
        self.init_error = init_error
        self.calls: list[str] = []
        self.initialised = 0
        self.live_samples: dict[int, tuple | None] = {}  # address -> (gi, graphics, sm)
        self._next_address = 0x1000

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name not in ("nvmlInit",) and self.initialised <= 0:
            raise nvml_error("UNINITIALIZED")

    def _gpu(self, handle: FakeHandle) -> FakeGpu:
        gpu = self.gpus[handle.gpu]
        if gpu.fail:
            raise nvml_error(gpu.fail)
        return gpu

    def nvmlInit(self):
        self._call("nvmlInit")
        if self.init_error:
            raise nvml_error(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self):
        self._call("nvmlShutdown")
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error("INVALID_ARGUMENT")
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._call("nvmlDeviceGetHandleByUUID")
        ctypes.c_char_p(uuid)  # pynvml's own conversion: a str raises TypeError here
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid.encode() == uuid:
                return FakeHandle(i)
            for gi, mig in gpu.instances.items():
                if mig.uuid.encode() == uuid:
                    return FakeHandle(i, gi)
        raise nvml_error("NOT_FOUND")

    def nvmlDeviceGetMigMode(self, handle):
        self._call("nvmlDeviceGetMigMode")
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            raise nvml_error("NOT_SUPPORTED")
        return [int(gpu.mig), int(gpu.mig)]

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._call("nvmlDeviceGetUtilizationRates")
        gpu = self._gpu(handle)
        if gpu.mig or handle.gpu_instance is not None:  # no utilisation in MIG mode
            raise nvml_error("NOT_SUPPORTED")
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization, memory=gpu.utilization // 2)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        if handle.gpu_instance is None:
            raise nvml_error("INVALID_ARGUMENT")
        return FakeHandle(handle.gpu)

    def nvmlDeviceGetGpuInstanceId(self, handle):
        self._call("nvmlDeviceGetGpuInstanceId")
        if handle.gpu_instance is None:
            raise nvml_error("INVALID_ARGUMENT")
        return handle.gpu_instance

    def nvmlGpmQueryDeviceSupport(self, handle):
        self._call("nvmlGpmQueryDeviceSupport")
        gpu = self._gpu(handle)
        if isinstance(gpu.gpm, str):
            raise nvml_error(gpu.gpm)
        return pynvml.c_nvmlGpmSupport_t(
            version=pynvml.NVML_GPM_SUPPORT_VERSION, isSupportedDevice=int(gpu.gpm)
        )

    def nvmlGpmSampleAlloc(self):
        self._call("nvmlGpmSampleAlloc")
        address, self._next_address = self._next_address, self._next_address + 0x100
        self.live_samples[address] = None
        return ctypes.cast(ctypes.c_void_p(address), pynvml.c_nvmlGpmSample_t)

    def _address(self, sample) -> int:
        address = ctypes.cast(sample, ctypes.c_void_p).value
        if address not in self.live_samples:
            raise nvml_error("INVALID_ARGUMENT")
        return address

    def nvmlGpmSampleFree(self, sample):
        self._call("nvmlGpmSampleFree")
        del self.live_samples[self._address(sample)]

    def nvmlGpmMigSampleGet(self, handle, gpu_instance, sample):
        self._call("nvmlGpmMigSampleGet")
        gpu = self._gpu(handle)
        if handle.gpu_instance is not None or not gpu.mig:  # GPM wants the parent GPU
            raise nvml_error("INVALID_ARGUMENT")
        if gpu_instance not in gpu.instances:
            raise nvml_error("NOT_FOUND")
        mig = gpu.instances[gpu_instance]
        self.live_samples[self._address(sample)] = (gpu_instance, mig.graphics, mig.sm)
        return sample

    def nvmlGpmMetricsGet(self, request):
        self._call("nvmlGpmMetricsGet")
        if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise nvml_error("ARGUMENT_VERSION_MISMATCH")
        first = self.live_samples[self._address(request.sample1)]
        second = self.live_samples[self._address(request.sample2)]
        if first is None or second is None or first[0] != second[0]:
            raise nvml_error("INVALID_ARGUMENT")
        values = {
            pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: second[1],
            pynvml.NVML_GPM_METRIC_SM_UTIL: second[2],
        }
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            value = values.get(metric.metricId)
            metric.nvmlReturn = (
                pynvml.NVML_SUCCESS if value is not None else pynvml.NVML_ERROR_NOT_SUPPORTED
            )
            metric.value = value or 0.0
        return request


def no_wait(seconds: float) -> None:
    pass


def mig_gpu(graphics: float | None = 0.0, sm: float | None = 0.0, gpm: bool | str = True):
    return FakeGpu(GPU_A, mig=True, gpm=gpm, instances={2: FakeMig(MIG_1, graphics, sm)})


# ---- whole GPUs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utilization", "signal"), [(87, "active"), (5, "active"), (4, "idle"), (0, "idle")]
)
def test_whole_gpu(utilization, signal):
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=utilization))
    reading = read_gpu_signal((GPU_A,), declared=False, nvml=nvml)
    assert (reading.signal, reading.percent) == (signal, utilization)
    assert reading.detail == f"{GPU_A}: {utilization}% busy (NVML utilisation)."
    assert nvml.initialised == 0  # started and shut down


def test_a_slice_of_two_gpus_is_as_busy_as_its_busiest():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=0), FakeGpu(GPU_B, utilization=63))
    reading = read_gpu_signal((GPU_A, GPU_B), declared=False, nvml=nvml)
    assert (reading.signal, reading.percent) == ("active", 63)
    assert GPU_A in reading.detail and GPU_B in reading.detail


def test_idle_needs_every_device_read_active_needs_one():
    lost = FakeGpu(GPU_B, fail="GPU_IS_LOST")
    idle = read_gpu_signal((GPU_A, GPU_B), False, nvml=FakeNvml(FakeGpu(GPU_A), lost))
    assert (idle.signal, idle.percent) == ("none", None)
    assert idle.detail == (
        f"no GPU signal: NVML refused to read {GPU_B} (NVML_ERROR_GPU_IS_LOST: GPU is lost)."
    )
    busy = read_gpu_signal(
        (GPU_A, GPU_B), False, nvml=FakeNvml(FakeGpu(GPU_A, utilization=90), lost)
    )
    assert (busy.signal, busy.percent) == ("active", 90)


def test_a_whole_gpu_in_mig_mode_gives_no_signal():
    nvml = FakeNvml(mig_gpu())
    reading = read_gpu_signal((GPU_A,), False, nvml=nvml)
    assert reading.signal == "none" and reading.percent is None
    assert "is a GPU in MIG mode" in reading.detail
    assert "nvmlDeviceGetUtilizationRates" not in nvml.calls


def test_a_gpu_without_mig_support_is_read():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=40, mig_capable=False))
    assert read_gpu_signal((GPU_A,), False, nvml=nvml).percent == 40


# ---- MIG instances through GPM --------------------------------------------------------------


@pytest.mark.parametrize(
    ("graphics", "signal", "percent"), [(87.4, "active", 87), (0.3, "idle", 0)]
)
def test_mig_instance_over_two_gpm_samples(graphics, signal, percent):
    nvml = FakeNvml(mig_gpu(graphics=graphics, sm=graphics / 2))
    waited = []
    reading = read_gpu_signal((MIG_1,), False, nvml=nvml, gpm_interval=0.5, sleep=waited.append)
    assert waited == [0.5]
    assert (reading.signal, reading.percent) == (signal, percent)
    assert reading.detail.startswith(f"{MIG_1}: {percent}% graphics-engine activity over the last")
    assert "(GPM, GPU instance 2)" in reading.detail
    assert nvml.calls.count("nvmlGpmMigSampleGet") == 2
    assert nvml.live_samples == {}  # every sample freed
    assert nvml.initialised == 0


def test_mig_instance_by_its_old_name():
    nvml = FakeNvml(mig_gpu(graphics=55.0))
    reading = read_gpu_signal((f"MIG-{GPU_A}/2/0",), False, nvml=nvml, sleep=no_wait)
    assert (reading.signal, reading.percent) == ("active", 55)
    assert "nvmlDeviceGetDeviceHandleFromMigDeviceHandle" not in nvml.calls


def test_sm_activity_when_the_graphics_metric_is_refused():
    nvml = FakeNvml(mig_gpu(graphics=None, sm=33.0))
    reading = read_gpu_signal((MIG_1,), False, nvml=nvml, sleep=no_wait)
    assert (reading.signal, reading.percent) == ("active", 33)
    assert "33% SM activity" in reading.detail


def test_no_metric_at_all_is_no_signal():
    nvml = FakeNvml(mig_gpu(graphics=None, sm=None))
    reading = read_gpu_signal((MIG_1,), False, nvml=nvml, sleep=no_wait)
    assert reading == gpu_signal.no_signal(
        f"GPM gave no activity metric for {MIG_1} (NVML_ERROR_NOT_SUPPORTED)."
    )


@pytest.mark.parametrize(
    ("gpm", "why"),
    [
        (False, ""),
        ("NOT_SUPPORTED", " (NVML_ERROR_NOT_SUPPORTED: Not Supported)"),
        ("FUNCTION_NOT_FOUND", " (NVML_ERROR_FUNCTION_NOT_FOUND: Function Not Found)"),
    ],
)
def test_mig_instance_without_gpm(gpm, why):
    nvml = FakeNvml(mig_gpu(graphics=90.0, gpm=gpm))
    reading = read_gpu_signal((MIG_1,), False, nvml=nvml, sleep=no_wait)
    assert reading == gpu_signal.no_signal(
        f"{MIG_1} is a MIG instance; NVML has no utilisation per MIG instance and this GPU or "
        f"driver offers no GPM metrics{why}."
    )
    assert "nvmlGpmSampleAlloc" not in nvml.calls


# ---- no signal --------------------------------------------------------------------------------


def test_declared_devices_give_no_signal_without_asking_nvml():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=99))
    reading = read_gpu_signal((MIG_1,), declared=True, nvml=nvml)
    assert (reading.signal, reading.percent) == ("none", None)
    assert reading.detail.startswith("no GPU signal: the slice's devices are the site file's")
    assert nvml.calls == []


def test_a_cpu_slice_gives_no_signal_without_asking_nvml():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=99))
    reading = read_gpu_signal((), declared=False, nvml=nvml)
    assert reading == gpu_signal.no_signal(
        "this slice has no GPU (CUDA_VISIBLE_DEVICES names none)."
    )
    assert nvml.calls == []


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (
            "LIBRARY_NOT_FOUND",
            "no GPU signal: the NVIDIA driver's NVML library is not on this machine "
            "(NVML_ERROR_LIBRARY_NOT_FOUND: NVML Shared Library Not Found).",
        ),
        (
            "DRIVER_NOT_LOADED",
            "no GPU signal: NVML cannot be started on this machine "
            "(NVML_ERROR_DRIVER_NOT_LOADED: Driver Not Loaded).",
        ),
    ],
)
def test_no_nvml(error, detail):
    nvml = FakeNvml(init_error=error)
    sampler = GpuSampler((GPU_A,), False, nvml=nvml)
    assert sampler.sample() == gpu_signal.GpuReading("none", None, detail)
    assert sampler.sample().detail == detail
    assert nvml.calls == ["nvmlInit"]  # not tried again every 10 s
    sampler.close()
    assert nvml.calls == ["nvmlInit"]


def test_an_unknown_uuid():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=80))
    reading = read_gpu_signal((UNKNOWN,), False, nvml=nvml)
    assert reading == gpu_signal.no_signal(
        f"NVML does not know {UNKNOWN} on this node (NVML_ERROR_NOT_FOUND): the device is "
        "elsewhere or no longer exists."
    )


def test_not_a_device():
    nvml = FakeNvml(FakeGpu(GPU_A))
    reading = read_gpu_signal(("banana",), False, nvml=nvml)
    assert reading.signal == "none" and "'banana' is not a device" in reading.detail
    assert nvml.calls == []


def test_indices_are_read_only_where_nvml_sees_exactly_the_slices_gpus():
    alone = FakeNvml(FakeGpu(GPU_A, utilization=70))
    assert read_gpu_signal(("0",), False, nvml=alone).percent == 70
    pair = FakeNvml(FakeGpu(GPU_A, utilization=0), FakeGpu(GPU_B, utilization=20))
    assert read_gpu_signal(("1", "0"), False, nvml=pair).percent == 20

    node = FakeNvml(*(FakeGpu(f"GPU-{i:08d}-0000-0000-0000-000000000000") for i in range(4)))
    reading = read_gpu_signal(("2",), False, nvml=node)
    assert reading == gpu_signal.no_signal(
        "CUDA_VISIBLE_DEVICES=2 names devices by index, and NVML, which ignores "
        "CUDA_VISIBLE_DEVICES, sees 4 GPU(s) on this node; which of them are this slice's "
        "cannot be told for sure."
    )
    assert "nvmlDeviceGetUtilizationRates" not in node.calls


def test_an_index_on_a_gpu_in_mig_mode_gives_no_signal():
    reading = read_gpu_signal(("0",), False, nvml=FakeNvml(mig_gpu(graphics=90.0)))
    assert reading.signal == "none" and "is a GPU in MIG mode" in reading.detail


# ---- the sampler --------------------------------------------------------------------------------


@pytest.fixture
def now(monkeypatch):
    moment = [datetime(2026, 11, 22, 14, 0, tzinfo=UTC)]
    monkeypatch.setattr(clock, "utcnow", lambda: moment[0])
    return moment


def test_sampler_reads_each_interval_and_remembers_the_last_activity(now):
    gpu = mig_gpu(graphics=80.0)
    nvml = FakeNvml(gpu)
    sampler = GpuSampler((MIG_1,), False, nvml=nvml)
    assert sampler.last_reading is None and sampler.last_active is None

    first = sampler.sample()  # GPM's first sample: nothing to compare with yet
    assert first.signal == "none" and "the first was taken just now" in first.detail
    assert sampler.waiting_for_gpm and sampler.last_active is None

    now[0] += timedelta(seconds=10)
    assert sampler.sample().percent == 80
    busy_at = now[0]
    assert sampler.last_active == busy_at and not sampler.waiting_for_gpm

    gpu.instances[2].graphics = 1.0
    now[0] += timedelta(seconds=10)
    idle = sampler.sample()
    assert (idle.signal, idle.percent) == ("idle", 1)
    assert sampler.last_reading == idle and sampler.last_read_at == now[0]
    assert sampler.last_active == busy_at
    assert nvml.calls.count("nvmlInit") == 1  # once, lazily
    assert len(nvml.live_samples) == 1  # only the latest sample is kept

    sampler.close()
    sampler.close()
    assert nvml.live_samples == {} and nvml.initialised == 0
    assert nvml.calls.count("nvmlShutdown") == 1


def test_sampler_starts_over_after_an_nvml_error():
    gpu = mig_gpu(graphics=50.0)
    nvml = FakeNvml(gpu)
    sampler = GpuSampler((MIG_1,), False, nvml=nvml)
    sampler.sample()
    assert sampler.sample().signal == "active"
    gpu.fail = "GPU_IS_LOST"
    lost = sampler.sample()
    assert lost == gpu_signal.no_signal(
        f"NVML refused to read {MIG_1} (NVML_ERROR_GPU_IS_LOST: GPU is lost)."
    )
    assert nvml.live_samples == {}  # the kept sample was freed with the failure
    gpu.fail = None
    assert sampler.sample().signal == "none"  # a fresh first sample
    assert sampler.sample().signal == "active"
    sampler.close()
    assert nvml.live_samples == {}


def test_a_surprise_is_logged_and_read_as_no_signal(caplog):
    class Broken(FakeNvml):
        def nvmlDeviceGetUtilizationRates(self, handle):
            raise RuntimeError("ctypes went away")

    nvml = Broken(FakeGpu(GPU_A))
    sampler = GpuSampler((GPU_A,), False, nvml=nvml)
    with caplog.at_level(logging.ERROR, logger="slicehub.extensions.gpu_signal"):
        reading = sampler.sample()
    assert reading == gpu_signal.no_signal(
        "reading the GPU failed unexpectedly (RuntimeError); the server log has the details."
    )
    assert "ctypes went away" in caplog.text
    sampler.close()
    assert nvml.initialised == 0


async def test_run_samples_until_cancelled_then_closes():
    nvml = FakeNvml(FakeGpu(GPU_A, utilization=30))
    sampler = GpuSampler((GPU_A,), False, nvml=nvml)
    task = asyncio.create_task(sampler.run(every=0.01))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if nvml.calls.count("nvmlDeviceGetUtilizationRates") >= 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sampler.last_reading.percent == 30 and sampler.last_active is not None
    assert nvml.initialised == 0


# ---- the real library, without a GPU -----------------------------------------------------------


def test_the_gpm_request_fits_pynvmls_struct():
    first = ctypes.cast(ctypes.c_void_p(0x1000), pynvml.c_nvmlGpmSample_t)
    second = ctypes.cast(ctypes.c_void_p(0x2000), pynvml.c_nvmlGpmSample_t)
    request = gpu_signal.gpm_metrics_request(pynvml, first, second)
    assert isinstance(request, pynvml.c_nvmlGpmMetricsGet_t)
    assert (request.version, request.numMetrics) == (pynvml.NVML_GPM_METRICS_GET_VERSION, 2)
    assert ctypes.cast(request.sample1, ctypes.c_void_p).value == 0x1000
    assert ctypes.cast(request.sample2, ctypes.c_void_p).value == 0x2000
    assert [request.metrics[i].metricId for i in range(2)] == [
        pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL,
        pynvml.NVML_GPM_METRIC_SM_UTIL,
    ]


def test_the_real_library_without_a_driver_gives_no_signal():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works here: tests/gpu/test_gpu_signal_real.py reads it")
    reading = read_gpu_signal((GPU_A,), declared=False)
    assert reading.signal == "none" and reading.percent is None
    assert reading.detail.startswith("no GPU signal: ")


def test_without_nvidia_ml_py(monkeypatch):
    monkeypatch.setattr(gpu_signal, "pynvml", None)
    reading = read_gpu_signal((GPU_A,), declared=False)
    assert reading == gpu_signal.no_signal(
        "nvidia-ml-py (pynvml), which reads NVML, is not installed in this environment."
    )
