"""What every benchmark here reports about the machine, and how it stops on a failed check.

Not a benchmark itself (`make bench` skips files starting with "_").
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def memory() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kb / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


REPO = Path(__file__).resolve().parents[1]


def publish(text: str, results: Path, write: bool) -> None:
    """Print a benchmark's report and, with --write, keep it as its table in the repo."""
    print(text)
    if write:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text)
        print(f"wrote {results.relative_to(REPO)}")


class BenchCheckFailed(RuntimeError):
    """A benchmark's own correctness check failed: its numbers must not be reported."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise BenchCheckFailed(what)
