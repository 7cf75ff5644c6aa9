"""The port a local server listens on: one the OS never hands to a port-0 bind.

JupyterHub's LocalProcessSpawner takes `random_port()` (bind port 0, read it, close it) seconds
before the server binds that port. Meanwhile every kernel's ZMQ sockets and every Dask scheduler
and worker on the machine bind port 0 too, and the OS may hand one of them the same port: in
bench/classroom_burst.py one server of a class of 40 never answered (its port spoke ZMQ: "Bad
status line … \\xff\\x00…") and the hub waited its whole http_timeout. A port below the kernel's
ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) is never chosen by a port-0 bind; only
another explicit choice could take it, so the spawner also skips the ports it handed to servers
of this hub that still run (`taken`). The Slurm spawner does better still, as a job's node is not
the hub's: its server binds a port of the OS's choosing and reports it
(slicehub.extensions.port_report).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

from jupyterhub.utils import random_port

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_RANGE = (32768, 60999)
LOWEST = 20000  # above the usual services' ports (PostgreSQL, LDAP, Slurm's, the hub's own)
ROOM = 1000  # fewer ports than this below the ephemeral range: take the stock choice


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The ports the OS hands to port-0 binds (Linux's default where it cannot be read)."""
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_RANGE
    return low, high


def _free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def server_port(
    ip: str,
    taken: Collection[int] = (),
    rng: random.Random | None = None,
    range_file: Path = EPHEMERAL_RANGE,
    tries: int = 100,
) -> int:
    """A free port for a server on `ip`, below the ephemeral range and not in `taken`; the stock
    `random_port()` when there is no room below the range or nothing free was found."""
    low, _high = ephemeral_range(range_file)
    if low - LOWEST < ROOM:
        return random_port()
    rng = rng or random.SystemRandom()
    for _ in range(tries):
        port = rng.randrange(LOWEST, low)
        if port not in taken and _free(ip, port):
            return port
    return random_port()
