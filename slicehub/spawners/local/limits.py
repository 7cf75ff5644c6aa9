"""CPU pinning and a memory limit for a local server process, where the machine allows them.

Pure decisions (`pin_cpus`) plus two small effects: a cgroup made by the hub before the fork, and
a `preexec` step that pins the child and moves it into that cgroup. A machine that offers neither
(no cgroup write access, fewer real CPUs than the site declares) still runs the server; the hub
logs what was not applied, once, in plain words.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def pin_cpus(declared: tuple[int, ...], real: set[int]) -> set[int]:
    """The real CPUs to pin to. Declared CPU ids that exist here are used as they are; a declared
    node bigger than this machine (the demo declares a GPU server on a laptop) folds its ids onto
    the real ones, so two slices still land on different cores when there are enough."""
    if not declared or not real:
        return set(real)
    if set(declared) <= real:
        return set(declared)
    ordered = sorted(real)
    return {ordered[c % len(ordered)] for c in declared}


def memory_cgroup(name: str, limit_bytes: int) -> Path | None:
    """Create (or reuse) a memory cgroup for one server; None where we may not."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    candidates = []
    if (CGROUP_V2 / "cgroup.controllers").exists():
        candidates.append((CGROUP_V2 / "slicehub" / safe, "memory.max"))
    if CGROUP_V1_MEMORY.is_dir():
        candidates.append((CGROUP_V1_MEMORY / "slicehub" / safe, "memory.limit_in_bytes"))
    for path, knob in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / knob).write_text(str(limit_bytes))
            return path
        except OSError:
            continue
    return None


def remove_cgroup(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.rmdir()
    except OSError:
        pass  # still has processes, or already gone: the next start reuses it


def make_preexec(cpus: set[int] | None, cgroup: Path | None, then=None):
    """A preexec_fn: join the cgroup and pin CPUs (as root, before any setuid), then `then`."""

    def preexec():
        if cgroup is not None:
            try:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass
        if cpus:
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass
        if then is not None:
            then()

    return preexec
