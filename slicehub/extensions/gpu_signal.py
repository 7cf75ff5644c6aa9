"""The GPU activity of this server's slice: "active", "idle", or "none" with a sentence saying why
there is no signal. Parking (issue 13) counts an active GPU as work, so a silent training loop
is never parked.

Decides, per device the slice names in `CUDA_VISIBLE_DEVICES`:
- a whole GPU (`GPU-<uuid>`): NVML's utilisation (`nvmlDeviceGetUtilizationRates(...).gpu`, the
  share of its last sample period in which a kernel ran);
- a MIG instance (`MIG-<uuid>`, `MIG-GPU-<uuid>/<gi>/<ci>`): NVML has no utilisation per MIG
  instance, so GPM, where the driver offers it: the instance's graphics-engine activity
  (`NVML_GPM_METRIC_GRAPHICS_UTIL`, else SM activity) between two GPM samples taken on its
  parent GPU for its GPU instance;
- an index (`0`): NVML ignores `CUDA_VISIBLE_DEVICES`, so an index is read only where NVML sees
  exactly the slice's GPUs (a Slurm job with cgroup device constraints on a node without MIG);
  anywhere else which GPU it is cannot be told for sure, and the answer is "none".
A slice is "active" when any of its devices is at `ACTIVE_PERCENT` or more (the percent is the
busiest device's), "idle" when every device was read and none is, and "none" otherwise: declared
devices (the site file's stand-ins), a CPU slice, no NVML library or driver, no GPM, a device
NVML does not know, any NVML refusal. "none" never carries a number, and no NVML error leaves
this module as an exception.

`read_gpu_signal` is one reading (it waits `gpm_interval` seconds between the two GPM samples a
MIG instance needs). `GpuSampler` is what the server extension keeps: NVML started once, lazily;
each `sample()` reads over the interval since the previous one; it remembers the last reading
and the last time the signal was active. Reads only: nothing here changes GPU state.

Does not decide what counts as idle for a session (slicehub.quota.parking) or how the activity
is reported (slicehub.extensions.server).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from slicehub.common import clock

from .slice_env import SliceEnvError, parse_devices

try:
    import pynvml
except ImportError:  # nvidia-ml-py: the single-user image has it (dask-cuda's dependency)
    pynvml = None

log = logging.getLogger(__name__)

ACTIVE = "active"
IDLE = "idle"
NONE = "none"
ACTIVE_PERCENT = 5  # a device at this utilisation or more is doing work
GPM_INTERVAL_S = 1.0  # read_gpu_signal's wait between two GPM samples (NVML wants >= 0.1 s)
SAMPLE_EVERY_S = 10.0  # GpuSampler.run's default period

_OLD_MIG = re.compile(r"MIG-(GPU-[0-9a-fA-F-]{36})/(\d+)/(\d+)")
# NVML return codes by number, so a sentence names them ("NVML_ERROR_NOT_FOUND")
_ERROR_NAMES = {
    v: k
    for k, v in vars(pynvml or object).items()
    if k.startswith("NVML_ERROR_") and isinstance(v, int)
}


@dataclass(frozen=True)
class GpuReading:
    signal: str  # ACTIVE, IDLE or NONE
    percent: int | None  # the busiest device's activity, 0..100; None with NONE
    detail: str  # a sentence per device, or "no GPU signal: why"

    @property
    def active(self) -> bool:
        return self.signal == ACTIVE

    def as_json(self) -> dict:
        return {"signal": self.signal, "percent": self.percent, "detail": self.detail}


def no_signal(why: str) -> GpuReading:
    return GpuReading(NONE, None, f"no GPU signal: {why}")


def read_gpu_signal(
    devices: tuple[str, ...],
    declared: bool,
    nvml=None,
    gpm_interval: float = GPM_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> GpuReading:
    """One reading of the slice's GPU activity. Blocks for `gpm_interval` seconds when a device
    is a MIG instance (GPM compares two samples); starts and shuts down NVML itself."""
    sampler = GpuSampler(devices, declared, nvml=nvml)
    try:
        reading = sampler.sample()
        if sampler.waiting_for_gpm:
            sleep(gpm_interval)
            reading = sampler.sample()
        return reading
    finally:
        sampler.close()


class GpuSampler:
    """The slice's GPU activity over time, for the server extension: call `sample()` every few
    seconds (or `await run()`); `last_reading` and `last_active` say what it saw. NVML is started
    at the first sample that needs it and shut down by `close()`. Thread-safe: `run` reads NVML
    in a worker thread so the server's loop never waits on the driver."""

    def __init__(self, devices: tuple[str, ...], declared: bool, nvml=None):
        self.devices = tuple(devices)
        self.declared = declared
        self.last_reading: GpuReading | None = None
        self.last_read_at: datetime | None = None
        self.last_active: datetime | None = None
        self.waiting_for_gpm = False  # a MIG instance has its first GPM sample only
        self._nvml = pynvml if nvml is None else nvml
        self._lock = threading.Lock()
        self._started = False
        self._cannot_start: GpuReading | None = None  # kept: a missing library stays missing
        self._targets: dict[str, _Target] = {}
        self._gpm: dict[str, tuple[object, float]] = {}  # entry -> (GPM sample, monotonic time)

    def sample(self) -> GpuReading:
        """Read the devices now; remember the reading, and its time if it is active."""
        with self._lock:
            try:
                reading = self._read()
            except Exception as exc:  # a bug or a driver surprise: logged, never raised
                log.exception("reading the GPU activity of %s failed", ",".join(self.devices))
                self._forget_all()
                reading = no_signal(
                    f"reading the GPU failed unexpectedly ({type(exc).__name__}); "
                    "the server log has the details."
                )
            now = clock.utcnow()
            self.last_reading, self.last_read_at = reading, now
            if reading.active:
                self.last_active = now
            return reading

    async def run(self, every: float = SAMPLE_EVERY_S) -> None:
        """Sample every `every` seconds until cancelled; NVML is read in a worker thread."""
        try:
            while True:
                await asyncio.to_thread(self.sample)
                await asyncio.sleep(every)
        finally:
            self.close()  # frees memory and NVML at once; never awaits, so cancelling is safe

    def close(self) -> None:
        """Free the GPM samples and shut NVML down if this sampler started it. Idempotent."""
        with self._lock:
            self._forget_all()
            if self._started:
                self._started = False
                try:
                    self._nvml.nvmlShutdown()
                except pynvml.NVMLError as exc:
                    log.warning("nvmlShutdown failed: %s", exc)

    # -- reading ----------------------------------------------------------------------------

    def _read(self) -> GpuReading:
        self.waiting_for_gpm = False
        if self.declared:
            return no_signal(
                "the slice's devices are the site file's stand-ins (declared), not GPUs "
                "that NVML can read."
            )
        if not self.devices:
            return no_signal("this slice has no GPU (CUDA_VISIBLE_DEVICES names none).")
        try:
            parse_devices(",".join(self.devices))
        except SliceEnvError as exc:
            return no_signal(str(exc))
        started = self._start()
        if started is not None:
            return started
        if any(e.isdigit() for e in self.devices):
            why = self._check_indices()
            if why:
                return no_signal(why)
        return combine([self._read_device(e) for e in self.devices])

    def _start(self) -> GpuReading | None:
        if self._cannot_start is not None:
            return self._cannot_start
        if self._started:
            return None
        if self._nvml is None:
            self._cannot_start = no_signal(
                "nvidia-ml-py (pynvml), which reads NVML, is not installed in this environment."
            )
            return self._cannot_start
        try:
            self._nvml.nvmlInit()
        except pynvml.NVMLError as exc:
            if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
                why = "the NVIDIA driver's NVML library is not on this machine"
            else:
                why = "NVML cannot be started on this machine"
            self._cannot_start = no_signal(f"{why} ({error_text(exc)}).")
            log.info("GPU activity: %s", self._cannot_start.detail)
            return self._cannot_start
        self._started = True
        return None

    def _check_indices(self) -> str | None:
        """Why the index entries cannot be read for sure, or None when NVML sees exactly the
        slice's GPUs (then their order does not matter: the slice's signal is over all)."""
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            return f"NVML cannot count the GPUs on this node ({error_text(exc)})."
        wanted = sorted(int(e) for e in self.devices if e.isdigit())
        if len(wanted) == len(self.devices) and wanted == list(range(count)):
            return None
        return (
            f"CUDA_VISIBLE_DEVICES={','.join(self.devices)} names devices by index, and NVML, "
            f"which ignores CUDA_VISIBLE_DEVICES, sees {count} GPU(s) on this node; which of them "
            "are this slice's cannot be told for sure."
        )

    def _read_device(self, entry: str) -> DeviceReading:
        try:
            target = self._targets.get(entry) or self._resolve(entry)
            if isinstance(target, DeviceReading):  # a device that cannot be read, and why
                return target
            self._targets[entry] = target
            if target.gpu_instance is None:
                util = self._nvml.nvmlDeviceGetUtilizationRates(target.handle)
                percent = _percent(util.gpu)
                return DeviceReading(percent, f"{entry}: {percent}% busy (NVML utilisation).")
            return self._read_gpm(entry, target)
        except pynvml.NVMLError as exc:
            self._forget(entry)
            if isinstance(exc, pynvml.NVMLError_Uninitialized):  # shut down under our feet
                self._started = False
            return DeviceReading(None, f"NVML refused to read {entry} ({error_text(exc)}).")

    def _resolve(self, entry: str) -> _Target | DeviceReading:
        """The NVML handle to read for `entry`, and the GPU instance for a MIG instance."""
        nvml = self._nvml
        old = _OLD_MIG.fullmatch(entry)
        try:
            if entry.isdigit():
                handle = nvml.nvmlDeviceGetHandleByIndex(int(entry))
            else:
                # pynvml hands the UUID to a c_char_p: bytes, not str
                uuid = old.group(1) if old else entry
                handle = nvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        except pynvml.NVMLError_NotFound:
            return DeviceReading(
                None,
                f"NVML does not know {entry} on this node (NVML_ERROR_NOT_FOUND): the device is "
                "elsewhere or no longer exists.",
            )
        if old:
            return self._gpm_target(entry, handle, int(old.group(2)))
        if entry.startswith("MIG-"):
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            return self._gpm_target(entry, parent, int(nvml.nvmlDeviceGetGpuInstanceId(handle)))
        try:
            mode = nvml.nvmlDeviceGetMigMode(handle)[0]
        except pynvml.NVMLError_NotSupported:  # a GPU without MIG
            mode = pynvml.NVML_DEVICE_MIG_DISABLE
        if mode == pynvml.NVML_DEVICE_MIG_ENABLE:
            return DeviceReading(
                None,
                f"{entry} is a GPU in MIG mode: its utilisation is not reported per slice, and "
                "which of its MIG instances is this slice's cannot be told from this name.",
            )
        return _Target(handle, None)

    def _gpm_target(self, entry: str, parent, gpu_instance: int) -> _Target | DeviceReading:
        try:
            supported = bool(self._nvml.nvmlGpmQueryDeviceSupport(parent).isSupportedDevice)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound) as exc:
            supported, why = False, f" ({error_text(exc)})"
        else:
            why = ""
        if not supported:
            return DeviceReading(
                None,
                f"{entry} is a MIG instance; NVML has no utilisation per MIG instance and this "
                f"GPU or driver offers no GPM metrics{why}.",
            )
        return _Target(parent, gpu_instance)

    def _read_gpm(self, entry: str, target: _Target) -> DeviceReading:
        """Activity since this instance's previous GPM sample; the first sample reads nothing."""
        nvml = self._nvml
        sample = nvml.nvmlGpmSampleAlloc()
        try:
            nvml.nvmlGpmMigSampleGet(target.handle, target.gpu_instance, sample)
        except BaseException:
            nvml.nvmlGpmSampleFree(sample)
            raise
        taken = time.monotonic()
        previous = self._gpm.get(entry)
        self._gpm[entry] = (sample, taken)
        if previous is None:
            self.waiting_for_gpm = True
            return DeviceReading(
                None,
                f"{entry} is a MIG instance and GPM compares two samples; the first was "
                "taken just now, so its activity shows from the next reading.",
            )
        before, before_at = previous
        try:
            result = nvml.nvmlGpmMetricsGet(gpm_metrics_request(nvml, before, sample))
        finally:
            nvml.nvmlGpmSampleFree(before)
        span = f"over the last {taken - before_at:.0f} s (GPM, GPU instance {target.gpu_instance})"
        graphics, sm = result.metrics[0], result.metrics[1]
        if graphics.nvmlReturn == pynvml.NVML_SUCCESS:
            percent = _percent(graphics.value)
            return DeviceReading(percent, f"{entry}: {percent}% graphics-engine activity {span}.")
        if sm.nvmlReturn == pynvml.NVML_SUCCESS:
            percent = _percent(sm.value)
            return DeviceReading(percent, f"{entry}: {percent}% SM activity {span}.")
        return DeviceReading(
            None,
            f"GPM gave no activity metric for {entry} ({_error_name(graphics.nvmlReturn)}).",
        )

    def _forget(self, entry: str) -> None:
        self._targets.pop(entry, None)
        sample = self._gpm.pop(entry, (None, 0.0))[0]
        if sample is not None:
            try:
                self._nvml.nvmlGpmSampleFree(sample)
            except pynvml.NVMLError as exc:
                log.warning("nvmlGpmSampleFree failed: %s", exc)

    def _forget_all(self) -> None:
        for entry in list(self._gpm) + list(self._targets):
            self._forget(entry)


@dataclass(frozen=True)
class _Target:
    handle: object  # the GPU's NVML handle (a MIG instance's parent GPU)
    gpu_instance: int | None  # the MIG instance's GPU instance id; None for a whole GPU


@dataclass(frozen=True)
class DeviceReading:
    """One device's activity, or (percent None) the sentence saying why it was not read."""

    percent: int | None
    text: str


def combine(devices: list[DeviceReading]) -> GpuReading:
    """The slice's signal from its devices': active if any is; idle only if all were read."""
    read = [d.percent for d in devices if d.percent is not None]
    busiest = max(read, default=None)
    text = " ".join(d.text for d in devices)
    if busiest is not None and busiest >= ACTIVE_PERCENT:
        return GpuReading(ACTIVE, busiest, text)
    if len(read) < len(devices):
        return no_signal(" ".join(d.text for d in devices if d.percent is None))
    return GpuReading(IDLE, busiest, text)


def gpm_metrics_request(nvml, sample1, sample2):
    """nvmlGpmMetricsGet's in-out struct asking for graphics-engine and SM activity between two
    samples (pynvml's `c_nvmlGpmMetricsGet_t`; the caller fills it, NVML fills the values)."""
    request = nvml.c_nvmlGpmMetricsGet_t()
    request.version = nvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = 2
    request.sample1 = sample1
    request.sample2 = sample2
    request.metrics[0].metricId = nvml.NVML_GPM_METRIC_GRAPHICS_UTIL
    request.metrics[1].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
    return request


def _percent(value: float) -> int:
    return max(0, min(100, round(value)))


def _error_name(code: int) -> str:
    return _ERROR_NAMES.get(code, f"NVML error {code}")


def error_text(exc: pynvml.NVMLError) -> str:
    """'NVML_ERROR_NOT_FOUND: Not Found' for an NVML error."""
    return f"{_error_name(exc.value)}: {exc}"
