"""What slice this process runs on, read from the environment the spawner set. `parse` is pure;
`read` adds the host's CPUs and memory as defaults.

The spawners write `CUDA_VISIBLE_DEVICES` and the `SLICEHUB_*` variables for every single-user
server (the contract and its one reader: `slicehub.common.environment`); kernels inherit them. This
module turns them into a `SliceEnv`, checks the devices against the slice type, and says, in a
sentence, what is wrong with any value it cannot use. It decides nothing about clusters
(`slicehub.extensions.cluster_plan`) and never touches a GPU.

`CUDA_VISIBLE_DEVICES` entries, as CUDA accepts them:
- `MIG-<uuid>`: one MIG instance (CUDA 11.4+ / R470+ naming);
- `MIG-GPU-<uuid>/<gi>/<ci>`: one MIG instance, the older naming;
- `GPU-<uuid>`: one whole GPU;
- `0`, `1`, ...: an index (what a Slurm job with cgroup device constraints sees);
- empty: no GPU at all (a CPU slice).
A MIG slice is exactly one MIG instance; a whole-GPU slice of N is N distinct GPUs; anything
else is refused here (the kernel then falls back to the CPU, saying why), so a kernel never binds
devices its slice did not pay for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from slicehub.common import environment
from slicehub.common.catalogue import SliceShape, parse_slice_type

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_MIG = re.compile(rf"MIG-{_UUID}|MIG-GPU-{_UUID}/\d+/\d+")
_GPU = re.compile(rf"GPU-{_UUID}")
_INDEX = re.compile(r"\d{1,3}")


class SliceEnvError(ValueError):
    """A value in the environment that cannot describe a slice; the message says which."""


@dataclass(frozen=True)
class SliceEnv:
    slice_type: str  # "" when the server was not started by Slicehub
    kind: str  # "mig", "gpu", "cpu", or "unknown" (not Slicehub's: whatever CUDA shows)
    description: str  # "3g.40gb MIG slice of an H100", for the one line a kernel prints
    devices: tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries; () for none
    gpu_memory_bytes: int  # the slice's GPU memory, all its devices together; 0 if unknown
    cpus: int
    memory_bytes: int
    session_end: datetime | None
    project: str
    ledger_session: int | None
    declared: bool  # the devices are a site file's stand-ins, not real GPUs
    problems: tuple[str, ...] = field(default=())  # sentences: what could not be used, and why

    @property
    def wants_gpu(self) -> bool:
        """Whether a GPU cluster should be tried at all."""
        if self.declared:
            return False
        return self.kind == "unknown" or (self.kind in ("mig", "gpu") and bool(self.devices))

    @property
    def gpu_memory_per_device(self) -> int:
        return self.gpu_memory_bytes // len(self.devices) if self.devices else 0


def read(env: Mapping[str, str]) -> SliceEnv:
    """The slice described by `env`, with this host's CPUs and memory where the slice says
    none (the one place that asks the host; `parse` stays pure)."""
    return parse(env, psutil.cpu_count() or 1, psutil.virtual_memory().total)


def parse(env: Mapping[str, str], host_cpus: int, host_memory: int) -> SliceEnv:
    """The slice described by `env`. Never raises: a value it cannot use is reported in
    `problems` and replaced by what is safe (no GPU; the host's CPUs and memory)."""
    reading = environment.from_env(env, host_cpus, host_memory)
    found = reading.environment
    problems = list(reading.problems)
    gpu_memory = found.gpu_memory_bytes
    common = dict(
        cpus=found.cpus,
        memory_bytes=found.memory_bytes,
        session_end=found.session_end,
        project=found.project,
        ledger_session=found.ledger_session,
        declared=found.declared,
    )
    name = found.slice_type
    visible = reading.visible_devices
    if not name:  # not started by Slicehub: whatever CUDA shows this process
        try:
            devices = parse_devices(visible or "")
        except SliceEnvError as e:
            return SliceEnv("", "cpu", "no GPU", (), 0, problems=(*problems, str(e)), **common)
        if visible is not None and not devices:
            return SliceEnv("", "cpu", "no GPU", (), 0, problems=tuple(problems), **common)
        return SliceEnv(
            "", "unknown", "the GPUs visible here", devices, 0, problems=tuple(problems), **common
        )
    try:
        shape = parse_slice_type(name)
    except ValueError as e:
        problems.append(f"SLICEHUB_SLICE_TYPE: {e}.")
        return SliceEnv(name, "cpu", "CPU only", (), 0, problems=tuple(problems), **common)
    if shape.kind == "cpu":
        return SliceEnv(name, "cpu", "CPU only", (), 0, problems=tuple(problems), **common)
    try:
        devices = check_devices(shape, visible)
    except SliceEnvError as e:
        problems.append(str(e))
        return SliceEnv(
            name, shape.kind, describe(shape), (), 0, problems=tuple(problems), **common
        )
    if not gpu_memory:
        gpu_memory = shape.gpu_memory_bytes
    return SliceEnv(
        name, shape.kind, describe(shape), devices, gpu_memory, problems=tuple(problems), **common
    )


def parse_devices(value: str) -> tuple[str, ...]:
    """The entries of a CUDA_VISIBLE_DEVICES value, or SliceEnvError naming the bad one."""
    value = value.strip()
    if not value:
        return ()
    entries = tuple(e.strip() for e in value.split(","))
    for e in entries:
        if not (_MIG.fullmatch(e) or _GPU.fullmatch(e) or _INDEX.fullmatch(e)):
            raise SliceEnvError(
                f"CUDA_VISIBLE_DEVICES={value!r}: {e!r} is not a device (expected MIG-<uuid>, "
                "GPU-<uuid> or an index)."
            )
    if len(set(entries)) != len(entries):
        raise SliceEnvError(f"CUDA_VISIBLE_DEVICES={value!r} names a device twice.")
    return entries


def check_devices(shape: SliceShape, visible: str | None) -> tuple[str, ...]:
    """The devices of a GPU slice of `shape`, checked against what the slice is."""
    if visible is None:
        raise SliceEnvError(
            f"a {shape.name} slice needs CUDA_VISIBLE_DEVICES, and it is not set "
            "(the spawner sets it; was this kernel started outside the server?)."
        )
    devices = parse_devices(visible)
    if shape.kind == "mig":
        if len(devices) != 1 or _GPU.fullmatch(devices[0]):
            raise SliceEnvError(
                f"a {shape.name} slice is one MIG instance, but CUDA_VISIBLE_DEVICES={visible!r}."
            )
        return devices
    if len(devices) != shape.count or any(_MIG.fullmatch(d) for d in devices):
        raise SliceEnvError(
            f"a {shape.name} slice is {shape.count} whole GPU(s), but CUDA_VISIBLE_DEVICES="
            f"{visible!r}."
        )
    return devices


def describe(shape: SliceShape) -> str:
    """'3g.40gb MIG slice of an H100', '2 whole H100 GPUs', 'CPU only'."""
    return shape.describe() if shape.kind != "cpu" else "CPU only"
