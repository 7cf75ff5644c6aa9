"""Whether the hub that started this process is still there: for the hub's managed services
(the quota service, the culler), which must never outlive their hub.
"""

from __future__ import annotations

import asyncio
import os

HUB_PID_ENV = "SLICEHUB_HUB_PID"  # set by the hub's config for its managed services
HUB_WATCH_INTERVAL = 1.0  # seconds: the longest a dead hub's service runs on


async def hub_gone(hub_pid: int, every: float = HUB_WATCH_INTERVAL) -> None:
    """Return once the hub that started this service is gone; `hub_pid` is the service's
    parent at start (a managed service is the hub's child).

    Told by the parent pid alone: a hub that dies, even by `kill -9`, which no handler sees,
    leaves its service re-parented (to init or a subreaper), one system call a second to notice.
    Not by asking the hub's API: a restarted hub answers the old service's token too (JupyterHub
    does not revoke the token it generated at the previous start), so the orphan would meter on
    beside the new hub's service; and a hub that lives but is slow to answer is still the hub.
    Not by prctl(PR_SET_PDEATHSIG): it fires when the *thread* that started the service exits,
    which may be a worker thread of a hub that lives on.
    """
    while os.getppid() == hub_pid:
        await asyncio.sleep(every)


def hub_pid() -> int:
    """The pid of the hub that started this service: the one its config wrote into the
    environment (the parent, else). Not the parent alone: a hub killed while its service was
    still importing leaves the service re-parented before it could ask, and it would then watch
    init forever."""
    raw = os.environ.get(HUB_PID_ENV, "")
    return int(raw) if raw.isdigit() else os.getppid()
