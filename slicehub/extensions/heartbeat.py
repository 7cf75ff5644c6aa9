"""Kernel heartbeat files: how a GPU kernel tells its Jupyter server that its Dask cluster works.

A kernel's cell may return at once while the work it submitted runs on for hours in the kernel's
own Dask cluster; the server sees an idle kernel. So the kernel extension
(`slicehub.extensions.kernel`) runs a `HeartbeatThread` that writes, every `INTERVAL_S` seconds,
`<jupyter_runtime_dir()>/slicehub-kernel-<pid>.json` = `{"pid": P, "at": ISO, "dask_processing":
N}`, N being the tasks processing or queued in its cluster, and removes the file when it stops.
Each write is atomic (a temporary file renamed over the old one), so a reader never sees half a
file. The server extension (`slicehub.extensions.activity`) reads them with `read_all`, which
skips files older than `FRESH` and files of processes that are gone (a kernel killed with
SIGKILL leaves its file behind).

This module decides the file's name, shape and freshness, and nothing about what counts as idle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil

from slicehub.common import clock

log = logging.getLogger("slicehub.heartbeat")

INTERVAL_S = 5.0
FRESH = timedelta(seconds=30)
PREFIX = "slicehub-kernel-"


@dataclass(frozen=True)
class Heartbeat:
    pid: int
    at: datetime
    dask_processing: int


def path_for(runtime_dir: Path, pid: int) -> Path:
    return Path(runtime_dir) / f"{PREFIX}{pid}.json"


def write(path: Path, beat: Heartbeat) -> None:
    """Write `beat` to `path` atomically (a temporary file in the same directory, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    at = clock.isoformat(beat.at)
    body = {"pid": beat.pid, "at": at, "dask_processing": beat.dask_processing}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def parse(text: str) -> Heartbeat | None:
    """The heartbeat in `text`; None for anything that is not one."""
    try:
        body = json.loads(text)
        beat = Heartbeat(
            pid=body["pid"],
            at=datetime.fromisoformat(body["at"]),
            dask_processing=body["dask_processing"],
        )
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(beat.pid, int) and isinstance(beat.dask_processing, int)):
        return None
    if beat.at.tzinfo is None or beat.dask_processing < 0:
        return None
    return beat


def fresh(beats: Iterable[Heartbeat], now: datetime, alive: Callable[[int], bool]) -> list:
    """The heartbeats of living processes written in the last `FRESH`. Pure but for `alive`."""
    return [b for b in beats if now - b.at <= FRESH and alive(b.pid)]


def read_all(runtime_dir: Path, now: datetime, alive=psutil.pid_exists) -> list[Heartbeat]:
    """Every fresh heartbeat in `runtime_dir` (none when the directory is missing)."""
    beats = []
    for path in sorted(Path(runtime_dir).glob(f"{PREFIX}*.json")):
        try:
            beat = parse(path.read_text())
        except OSError:  # removed between the listing and the read: the kernel stopped
            continue
        if beat is not None:
            beats.append(beat)
    return fresh(beats, now, alive)


class HeartbeatThread(threading.Thread):
    """Writes this process's heartbeat every `interval` seconds from `count()` (the Dask tasks
    processing or queued) until `stop()`, which removes the file. A daemon: it never keeps a
    kernel alive. When `count` fails the last count is written again, and the failure logged."""

    def __init__(self, path: Path, count: Callable[[], int], interval: float = INTERVAL_S):
        super().__init__(name="slicehub-heartbeat", daemon=True)
        self.path = Path(path)
        self._count = count
        self._interval = interval
        self._stopped = threading.Event()
        self._last = 0

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._last = self._count()
            except Exception:
                log.exception("Slicehub heartbeat: could not count the Dask tasks")
            if self._stopped.is_set():  # stop() came while counting: write nothing more
                break
            try:
                write(self.path, Heartbeat(os.getpid(), clock.utcnow(), self._last))
            except OSError as e:
                log.warning("Slicehub heartbeat: could not write %s: %s", self.path, e)
            self._stopped.wait(self._interval)

    def stop(self) -> None:
        """Stop writing and remove the file; safe to call twice, and from atexit."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self._interval + 5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
