"""What each Dask worker of a GPU kernel's cluster does first: ignore SIGINT (a Dask preload).

Interrupting a cell (JupyterLab's stop button) sends SIGINT to the kernel's whole process group,
so to the cluster's worker processes too. The interrupt is for the cell: a worker that took it
would die with its results and the Nanny would start a new one. Workers started while ipykernel
ignores SIGINT (between cells) inherit that; workers started while a cell runs (the cluster
starts in the background, `slicehub.extensions.background`, and the Nanny restarts a worker that
died) would not, so each worker ignores SIGINT itself, as its first preload. The kernel's own
shutdown and the Nanny stop workers by other means (a message, then SIGTERM).
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
        signal.signal(signal.SIGINT, signal.SIG_IGN)
