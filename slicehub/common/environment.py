"""The `SLICEHUB_*` environment: how a spawner tells a single-user server, and every kernel it
starts, which slice it runs on and where its session stands in the ledger.

One writer and one reader. The spawners describe the slice as a `SliceEnvironment` and write it
with `to_env`; the notebook side reads it back with `from_env`, which never raises: a value it
cannot use is reported in `problems` (a sentence naming the variable) and replaced by what is
safe. `CUDA_VISIBLE_DEVICES` is part of the contract: the local spawner writes the slice's device
UUIDs (empty for a CPU slice, which hides every GPU); under a batch system the scheduler sets it
for the job's GRES, and `devices` is None. What the devices mean for a kernel (one MIG instance,
N whole GPUs) is the notebook side's to check (`slicehub.extensions.slice_env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import clock

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
SLICE_TYPE = "SLICEHUB_SLICE_TYPE"
GPU_MEMORY_BYTES = "SLICEHUB_GPU_MEMORY_BYTES"
SESSION_END = "SLICEHUB_SESSION_END"
NODE = "SLICEHUB_NODE"
CPUS = "SLICEHUB_CPUS"
MEMORY_BYTES = "SLICEHUB_MEMORY_BYTES"
DEVICES_DECLARED = "SLICEHUB_DEVICES_DECLARED"
PROJECT = "SLICEHUB_PROJECT"
LEDGER_SESSION = "SLICEHUB_LEDGER_SESSION"
QUOTA_URL = "SLICEHUB_QUOTA_URL"
PREWARM = "SLICEHUB_PREWARM"  # "1": started ahead of a class for its student, not yet claimed
REPORT_PORT = "SLICEHUB_REPORT_PORT"  # "1": bind a port the OS picks, then tell the hub (Slurm)


@dataclass(frozen=True)
class SliceEnvironment:
    """A server's slice and ledger session, as its environment carries them."""

    slice_type: str  # "" when the process was not started by Slicehub
    gpu_memory_bytes: int  # the slice's GPU memory, all its devices together; 0 if unknown
    cpus: int
    memory_bytes: int
    session_end: datetime | None
    devices: tuple[str, ...] | None = None  # None: the batch system sets CUDA_VISIBLE_DEVICES
    node: str | None = None  # None: the job's script sets SLICEHUB_NODE where it runs
    declared: bool = False  # the devices are a site file's stand-ins, not real GPUs
    project: str = ""
    ledger_session: int | None = None
    quota_url: str = ""  # where kernels ask the quota service, with the server's own token
    prewarmed: bool = False  # started before a class window; its student claims it on arrival

    def to_env(self) -> dict[str, str]:
        """The variables a spawner sets for its server."""
        env = {
            SLICE_TYPE: self.slice_type,
            GPU_MEMORY_BYTES: str(self.gpu_memory_bytes),
            SESSION_END: clock.isoformat(self.session_end) if self.session_end else "",
            CPUS: str(self.cpus),
            MEMORY_BYTES: str(self.memory_bytes),
            DEVICES_DECLARED: "1" if self.declared else "0",
            PROJECT: self.project,
            LEDGER_SESSION: str(self.ledger_session or ""),
            QUOTA_URL: self.quota_url,
            PREWARM: "1" if self.prewarmed else "0",
        }
        if self.devices is not None:
            env[CUDA_VISIBLE_DEVICES] = ",".join(self.devices)
        if self.node is not None:
            env[NODE] = self.node
        return env


@dataclass(frozen=True)
class Reading:
    """What `from_env` found: the environment, CUDA_VISIBLE_DEVICES as it was (None: unset; its
    entries are the notebook side's to check) and sentences about values it could not use."""

    environment: SliceEnvironment
    visible_devices: str | None
    problems: tuple[str, ...] = field(default=())


def from_env(env: Mapping[str, str], host_cpus: int, host_memory: int) -> Reading:
    """The slice environment in `env`; the host's CPUs and memory where the slice says none."""
    problems: list[str] = []

    def number(name: str, default: int, minimum: int) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not a whole number; using {default}.")
            return default
        if value < minimum:
            problems.append(f"{name}={raw!r} is below {minimum}; using {default}.")
            return default
        return value

    cpus = number(CPUS, host_cpus, 1)
    memory = number(MEMORY_BYTES, host_memory, 1)
    gpu_memory = number(GPU_MEMORY_BYTES, 0, 0)
    end = _session_end(env.get(SESSION_END, ""), problems)
    ledger_session = number(LEDGER_SESSION, 0, 1) or None
    visible = env.get(CUDA_VISIBLE_DEVICES)
    environment = SliceEnvironment(
        slice_type=env.get(SLICE_TYPE, "").strip(),
        gpu_memory_bytes=gpu_memory,
        cpus=cpus,
        memory_bytes=memory,
        session_end=end,
        devices=None if visible is None else tuple(d.strip() for d in visible.split(",") if d),
        node=env.get(NODE),
        declared=env.get(DEVICES_DECLARED, "0") == "1",
        project=env.get(PROJECT, ""),
        ledger_session=ledger_session,
        quota_url=env.get(QUOTA_URL, ""),
        prewarmed=env.get(PREWARM, "0") == "1",
    )
    return Reading(environment, visible, tuple(problems))


def _session_end(raw: str, problems: list[str]) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        end = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(f"{SESSION_END}={raw!r} is not an ISO 8601 time.")
        return None
    if end.tzinfo is None:
        problems.append(f"{SESSION_END}={raw!r} has no time zone.")
        return None
    return end.astimezone(UTC)
