"""A kernel's Dask cluster started on a thread, and what stands in for it until it is up.

The GPU kernel (`slicehub.extensions.kernel`) must answer its first cell without waiting for
its cluster (1.2 s on a CPU slice, more with Dask-CUDA's memory pools), yet every use of Dask
must run on that cluster, never silently on Dask's local threaded scheduler. This module holds
the parts that make both true; the kernel module wires them into IPython.

- `BackgroundStart` runs a start function on a daemon thread, after a configure step that sets
  Dask's scheduler (`configured` is set once that step is over, failed or not). `result()` waits
  for the start, for at most a given time, and raises `ClusterNotStarted` with the reason when
  the start failed or is late. `close()` closes what the start made, now or, when it is still
  under way, as soon as it is done.
- `Deferred` stands in for an object the start makes (`client`, `slicehub`, `xp` on a GPU
  slice): any attribute waits for it, then is the real object's. `isinstance` sees the real
  class (`__class__` waits too), so a library that checks for a `Client` accepts it.
- `NOTEBOOK_SCHEDULER` is Dask's scheduler until the `Client` exists: `.compute()`,
  `dask.compute` and `dask.persist` call it (the kernel sets it as `dask.config`'s `scheduler`),
  and it waits for the client, then hands the graph to it (`persist` keeps its futures on the
  cluster). Once made, the `Client` sets itself as Dask's scheduler as usual, so it is not called
  again. It is a module-level object that pickles by name: distributed copies the whole Dask
  config into every worker process it spawns, and a closure there would stop the workers from
  starting.

Nothing here imports Dask, so importing it costs nothing at a kernel's start.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .gpu import short_error

log = logging.getLogger("slicehub.kernel")


class ClusterNotStarted(RuntimeError):
    """Dask was used, and this kernel's cluster did not start (or has not started in time)."""


class BackgroundStart:
    """`configure()`, then `start()`, on a daemon thread; `result()` waits for the start.

    `start()` returns what it made (an object with a `close()` method) or raises; either way
    the exception, never a traceback, is kept for `result()` to report."""

    def __init__(
        self,
        start: Callable[[], Any],
        configure: Callable[[], Any] = lambda: None,
        what: str = "This kernel's Dask cluster",
    ):
        self.what = what
        self.configured = threading.Event()
        self.configuration: Any = None  # what configure() returned
        self._start = start
        self._configure = configure
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._error: BaseException | None = None
        self._closing = False
        self._began = 0.0
        self.seconds: float | None = None  # how long the start took, once done
        self._thread = threading.Thread(
            target=self._run, name="slicehub-cluster-start", daemon=True
        )

    def begin(self) -> BackgroundStart:
        self._began = time.monotonic()
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        return self._done.is_set() and self._error is not None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def ready(self) -> Any:
        """What the start made when it is done and worked; None otherwise (never waits)."""
        if not self._done.is_set() or self._closing:
            return None
        return self._result

    def result(self, timeout: float) -> Any:
        """What the start made; waits for it `timeout` seconds at most, then raises
        `ClusterNotStarted` saying why."""
        if not self._done.wait(timeout):
            raise ClusterNotStarted(
                f"{self.what} has not started in {timeout:.0f} s; it is still starting. Run "
                "the cell again to wait longer, or restart the kernel."
            )
        if self._closing:
            raise ClusterNotStarted(f"{self.what} was closed with the kernel's extension.")
        if self._error is not None:
            raise ClusterNotStarted(self.failure()) from self._error
        return self._result

    def failure(self) -> str:
        """The sentence that says why the start failed ("" when it did not)."""
        if self._error is None:
            return ""
        return f"{self.what} did not start: {short_error(self._error)}"

    def close(self, timeout: float) -> None:
        """Close what the start made. A start still under way is waited for `timeout` seconds;
        what it makes after that is closed by its own thread when it is done."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            made = self._result if self._done.is_set() else None
        if made is not None:
            made.close()
        elif self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        quiet_thread_output()
        made, error = None, None
        try:
            try:
                self.configuration = self._configure()
            finally:
                self.configured.set()  # a cell must never wait for a configure step that failed
            made = self._start()
        except BaseException as e:  # kept for result(); the notebook is told there
            error = e
            log.info("%s did not start", self.what, exc_info=True)
        with self._lock:
            self._result, self._error = made, error
            self.seconds = time.monotonic() - self._began
            close_now = self._closing and made is not None
            self._done.set()
        if close_now:  # closed while it started: nobody will use it
            made.close()


def quiet_thread_output() -> None:
    """Output written from this thread goes to no cell.

    In ipykernel, output from a thread that no cell started is shown under whichever cell runs
    at that moment. What the start writes (a warning of Dask's, a log line) belongs to no cell:
    with an empty parent header here it is published as it was when the extension started the
    cluster before any cell, and front ends show it under none."""
    for stream in (sys.stdout, sys.stderr):
        set_parent = getattr(stream, "set_thread_parent", None)
        if set_parent is not None:
            set_parent({})


class Deferred:
    """Stands in for the object `resolve()` returns, which may have to be waited for.

    Every attribute read (and `dir`, `repr`, `isinstance`) is the real object's; looking one up
    waits in `resolve()`, which raises `ClusterNotStarted` when there is nothing to wait for. A
    copy is the stand-in itself (a handle on one cluster). `repr` never raises: it says why there
    is no object. Nothing on the start's own thread may touch a stand-in: it would wait for
    itself."""

    __slots__ = ("_resolve", "_what")

    def __init__(self, resolve: Callable[[], Any], what: str):
        object.__setattr__(self, "_resolve", resolve)
        object.__setattr__(self, "_what", what)

    def resolved(self) -> Any:
        return self._resolve()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)

    def __copy__(self) -> Deferred:  # a handle on the same object: copying keeps it
        return self

    def __deepcopy__(self, memo) -> Deferred:
        return self

    def __dir__(self) -> list[str]:
        return dir(self._resolve())

    def __repr__(self) -> str:
        try:
            return repr(self._resolve())
        except ClusterNotStarted as e:
            return f"<{self._what}: {e}>"

    @property  # type: ignore[misc]
    def __class__(self):
        try:
            return type(self._resolve())
        except ClusterNotStarted:
            return Deferred


class NotebookScheduler:
    """Dask's scheduler while the notebook's `Client` is being made (see the module docstring).

    `attach(client)` gives it the function that waits for the client; unattached (in a worker
    process, which gets a copy of the config, or after `detach()`) it refuses to run a graph
    rather than run it anywhere else."""

    def __init__(self):
        self._client: Callable[[], Any] | None = None

    def attach(self, client: Callable[[], Any]) -> None:
        self._client = client

    def detach(self) -> None:
        self._client = None

    def get(self, *args, **kwargs):
        return self._wait().get(*args, **kwargs)

    def persist(self, *args, **kwargs):
        return self._wait().persist(*args, **kwargs)

    def _wait(self):
        if self._client is None:
            raise ClusterNotStarted(
                "This process has no Slicehub Dask cluster to run on (the kernel's extension "
                "is not loaded here)."
            )
        return self._client()

    def __reduce__(self) -> str:
        return "NOTEBOOK_SCHEDULER"  # pickled by name: one per process


NOTEBOOK_SCHEDULER = NotebookScheduler()
