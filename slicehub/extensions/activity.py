"""What this Jupyter server has been doing: the reading that idle parking decides on, and the
park handshake with the JupyterLab front ends.

The reading (`build_reading`, pure) says when anything last worked or anyone was last there, by
this server's own clock: the server's start; the kernels' last messages (jupyter_server's
`last_activity`); the terminals' last bytes; the browser's last key, click or "Keep working"
(posted by the front end); the last time the GPU signal was active; the last heartbeat of a kernel
whose Dask cluster had tasks. It also says what works *now*, in sentences: a kernel busy or
starting (even a silent one), Dask tasks processing in any kernel's cluster (from the kernels'
heartbeat files, `slicehub.extensions.heartbeat`), the GPU signal active. While anything works the
server is not idle at all (`idle_seconds` 0). A warm kernel (`slicehub.extensions.warm_kernel`)
is not among the kernel manager's kernels until a notebook takes it, so it counts as nothing
here; its heartbeat says 0 tasks. Whether that idleness warns or parks is the quota
service's decision (`slicehub.quota.parking`), not this module's.

`Activity` is one server's state: the browser's last activity, which front ends polled the status
lately (each sends a random client id; a front end without one counts as "anonymous", so several
such count once), the GPU signal and the kernels' heartbeats sampled every `SAMPLE_S` seconds,
and the park handshake. Before parking, the culler asks the server to park (`request_park`): the
request stands, every front end connected then sees it in its status poll, saves all its
documents and acknowledges (`saved`), and the request returns when every one has acknowledged or
the wait is over.

The GPU signal is `slicehub.extensions.gpu_signal.GpuSampler`'s (its last reading and the last
time it was active), imported when first needed; where it cannot be imported the signal is
"none", saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from slicehub.common import clock

from . import heartbeat

SAMPLE_S = 10.0  # how often the GPU signal and the heartbeats are sampled
FRONT_END_FRESH = timedelta(seconds=30)  # a front end that polled status this recently is there
REQUEST_STANDS = timedelta(seconds=60)  # a park request stands this long after its wait ends
ANONYMOUS = "anonymous"
BUSY_STATES = ("busy", "starting")
NO_GPU_MODULE = "This server cannot read the GPU signal (slicehub.extensions.gpu_signal: {e})."
GPU_NOT_READ = "The GPU signal has not been read yet."


@dataclass(frozen=True)
class KernelState:
    label: str  # "Untitled.ipynb (python3)": the notebook's path, or the kernel's id, and its name
    execution_state: str
    last_activity: datetime | None


def build_reading(
    *,
    now: datetime,
    started: datetime,
    session: int | None,
    kernels: Sequence[KernelState],
    terminals: Iterable[datetime],
    browser: datetime | None,
    gpu: dict,
    gpu_active_at: datetime | None,
    dask_tasks: int,
    dask_active_at: datetime | None,
    front_ends: int,
) -> dict:
    """The reading the culler carries to the quota service. `gpu` is {signal, percent, detail};
    `dask_tasks` the tasks processing now in every kernel's cluster; the `*_at` and `browser`
    times are None where that source never was active."""
    sources = {
        "kernels": _latest(k.last_activity for k in kernels),
        "terminals": _latest(terminals),
        "browser": browser,
        "gpu": gpu_active_at,
        "dask": dask_active_at,
    }
    last_active = _latest([started, *sources.values()])
    busy = [
        f"kernel {k.label} is {k.execution_state}"
        for k in kernels
        if k.execution_state in BUSY_STATES
    ]
    if dask_tasks > 0:
        busy.append(f"Dask: {dask_tasks} task{'s' if dask_tasks != 1 else ''} running")
    if gpu["signal"] == "active":
        busy.append(f"GPU: {gpu['percent']}% busy" if gpu["percent"] is not None else "GPU: busy")
    idle = timedelta(0) if busy else max(now - last_active, timedelta(0))
    return {
        "at": clock.isoformat(now),
        "session": session,
        "idle_seconds": int(idle.total_seconds()),
        "last_active": clock.isoformat(last_active),
        "sources": {k: clock.isoformat(v) if v else None for k, v in sources.items()},
        "busy": busy,
        "gpu": gpu,
        "front_ends": front_ends,
    }


def gpu_shape(reading) -> dict:
    """A GPU reading (signal, percent, detail) as plain JSON; "none" before the first."""
    if reading is None:
        return no_gpu_signal(GPU_NOT_READ)
    return {"signal": reading.signal, "percent": reading.percent, "detail": reading.detail}


def no_gpu_signal(detail: str) -> dict:
    return {"signal": "none", "percent": None, "detail": detail}


def default_gpu_sampler(devices: tuple[str, ...], declared: bool):
    """`slicehub.extensions.gpu_signal.GpuSampler` for the slice's devices, or a sampler that
    says why there is no signal when that module cannot be imported."""
    try:
        from .gpu_signal import GpuSampler
    except ImportError as e:
        return NoGpuSampler(NO_GPU_MODULE.format(e=e))
    return GpuSampler(devices, declared)


@dataclass(frozen=True)
class _NoSignal:
    detail: str
    signal: str = "none"
    percent: None = None


class NoGpuSampler:
    """A sampler with nothing to read: its one reading is "none" with `detail`."""

    last_active = None

    def __init__(self, detail: str):
        self.last_reading = _NoSignal(detail)

    def sample(self):
        return self.last_reading

    def close(self) -> None:
        pass


@dataclass
class _ParkRound:
    asked: set[str]  # the front ends connected when it was asked, and any that acknowledged
    until: datetime  # it stands until then
    acks: dict[str, tuple[int, int]] = field(default_factory=dict)  # client -> (saved, failed)

    def done(self) -> bool:
        return self.asked <= self.acks.keys()


class Activity:
    """One server's activity state. Times come from `slicehub.common.clock`."""

    def __init__(
        self,
        started: datetime,
        runtime_dir: Path,
        devices: tuple[str, ...] = (),
        declared: bool = False,
        session: int | None = None,
        gpu_sampler=None,
    ):
        self.started = started
        self.runtime_dir = Path(runtime_dir)
        self.devices = devices
        self.declared = declared
        self.session = session
        # sample() -> reading; last_reading, last_active (gpu_signal.GpuSampler's face)
        self.gpu_sampler = gpu_sampler
        self.browser_at: datetime | None = None
        self.dask_active_at: datetime | None = None
        self._front_ends: dict[str, datetime] = {}
        self._round: _ParkRound | None = None
        self._changed = asyncio.Condition()

    # ---- the front ends ----------------------------------------------------------------------
    def front_end_seen(self, client: str, now: datetime) -> None:
        """A front end polled the status: it is connected (this is not activity)."""
        self._front_ends[client] = now
        for c, at in list(self._front_ends.items()):  # forget the long gone
            if now - at > FRONT_END_FRESH:
                del self._front_ends[c]

    def connected(self, now: datetime) -> set[str]:
        return {c for c, at in self._front_ends.items() if now - at <= FRONT_END_FRESH}

    def browser_activity(self, now: datetime) -> None:
        """The user pressed a key, clicked, scrolled or chose "Keep working"."""
        self.browser_at = now if self.browser_at is None else max(self.browser_at, now)

    # ---- the park handshake ------------------------------------------------------------------
    def park_requested(self, client: str, now: datetime) -> bool:
        """Whether `client` should save all now: a park request stands that it has not
        acknowledged."""
        r = self._round
        return r is not None and now <= r.until and client not in r.acks

    async def request_park(self, wait_seconds: float) -> dict:
        """Ask every connected front end to save; return when each has acknowledged or after
        `wait_seconds`: {"front_ends": asked, "saved": acknowledged, "documents": {...}}. A
        request made while another stands joins it (front ends that saved are not asked twice)."""
        now = clock.utcnow()
        r = self._round
        if r is None or now > r.until:
            r = self._round = _ParkRound(asked=set(), until=now)
        r.asked |= self.connected(now)
        r.until = max(r.until, now + timedelta(seconds=wait_seconds) + REQUEST_STANDS)
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(r.done), wait_seconds)
            except TimeoutError:
                pass
        return {
            "front_ends": len(r.asked),
            "saved": len(r.acks),
            "documents": {
                "saved": sum(s for s, _ in r.acks.values()),
                "failed": sum(f for _, f in r.acks.values()),
            },
        }

    async def saved(self, client: str, saved: int, failed: int) -> None:
        """`client` saved its documents (`failed` could not be saved) after a park request. An
        acknowledgement with no request standing is ignored."""
        r = self._round
        if r is None or clock.utcnow() > r.until:
            return
        r.asked.add(client)
        r.acks[client] = (saved, failed)
        async with self._changed:
            self._changed.notify_all()

    # ---- the GPU signal and the kernels' heartbeats ------------------------------------------
    async def sample(self) -> None:
        """Sample the GPU signal (in a thread: NVML may take a while) and the heartbeats."""
        if self.gpu_sampler is None:
            self.gpu_sampler = default_gpu_sampler(self.devices, self.declared)
        await asyncio.to_thread(self.gpu_sampler.sample)  # it logs its own failures
        self.dask_tasks(clock.utcnow())

    def dask_tasks(self, now: datetime) -> int:
        """Tasks processing now in the kernels' clusters, from their fresh heartbeats; remembers
        the last heartbeat that saw work."""
        beats = heartbeat.read_all(self.runtime_dir, now)
        working = [b.at for b in beats if b.dask_processing > 0]
        if working:
            self.dask_active_at = _latest([self.dask_active_at, *working])
        return sum(b.dask_processing for b in beats)

    # ---- the reading -------------------------------------------------------------------------
    async def read(self, kernel_manager, session_manager, terminal_manager) -> dict:
        """The reading now, from jupyter_server's kernel, session and terminal managers (the
        terminal manager is None where jupyter_server_terminals is not loaded)."""
        if self.gpu_sampler is None or self.gpu_sampler.last_reading is None:
            await self.sample()
        now = clock.utcnow()
        dask_tasks = self.dask_tasks(now)
        return build_reading(
            now=now,
            started=self.started,
            session=self.session,
            kernels=await kernel_states(kernel_manager, session_manager),
            terminals=terminal_times(terminal_manager),
            browser=self.browser_at,
            gpu=gpu_shape(self.gpu_sampler.last_reading),
            gpu_active_at=self.gpu_sampler.last_active,
            dask_tasks=dask_tasks,
            dask_active_at=self.dask_active_at,
            front_ends=len(self.connected(now)),
        )


async def kernel_states(kernel_manager, session_manager) -> list[KernelState]:
    """Each running kernel's state, labelled with its notebook's path where a session names it."""
    paths = {}
    if session_manager is not None:
        for s in await session_manager.list_sessions():
            if s.get("kernel"):
                paths[s["kernel"]["id"]] = s.get("path") or s.get("name") or ""
    out = []
    for kid in kernel_manager.list_kernel_ids():
        try:
            k = kernel_manager.get_kernel(kid)
        except KeyError:  # shut down while we looked
            continue
        where = paths.get(kid) or kid[:8]
        out.append(
            KernelState(
                label=f"{where} ({k.kernel_name})",
                execution_state=getattr(k, "execution_state", "unknown"),
                last_activity=getattr(k, "last_activity", None),
            )
        )
    return out


def terminal_times(terminal_manager) -> list[datetime]:
    if terminal_manager is None:
        return []
    terms = list(terminal_manager.terminals.values())
    return [t.last_activity for t in terms if getattr(t, "last_activity", None)]


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None
