"""A warm kernel for a pre-warmed class server: one kernel started ahead, handed to the first
notebook that asks for its kind.

A class starts at once (issue 15): the classroom service starts the students' servers before the
class (the spawner sets `SLICEHUB_PREWARM=1` for them), but a kernel starts only when the student
opens a notebook, and the GPU kernel's start (its Dask cluster) is what they would wait for. With
`WarmKernelManager` as the server's kernel manager and pre-warming on (`SLICEHUB_PREWARM=1`, or
`prewarm = True`), the server starts ONE kernel of `warm_kernel_name` (by default the server's
default kernel) when its event loop starts, in the background: the server answers at once, and
the kernel's extension starts its cluster while nobody waits.

The first `start_kernel` for that kernel name with no kernel id (JupyterLab opening a notebook:
`POST api/sessions`; or `POST api/kernels`) gets the warm kernel: same id, same process. Before
it is handed over, one silent cell (no output, no execution count, no history, no
`pre_run_cell`: `handover_code`) moves it where a kernel started for that notebook would be:
its working directory (the notebook's folder, as `cwd_for_path` says; the warm kernel started in
the server's root), IPython's directory history, and `JPY_SESSION_NAME` / `__session__` (the
notebook's path, which the session manager gives a new kernel). Its reply is waited for, so the
student's first cell runs in the notebook's folder. A restart of the kernel later starts it
there too.

When that first request cannot take the warm kernel it is shut down and a kernel is started as
usual: the warm kernel died, failed to start, is not ready within `handover_wait` seconds,
did not answer the silent cell, or the request asks for an environment other than the server's
(anything beyond `JPY_SESSION_NAME`). A request for another kernel name leaves it waiting.

One per server, never replenished: a pre-warmed class server belongs to one student, who opens
one notebook first; a second warm kernel would hold a second Dask cluster (on a GPU slice, a
second RMM pool in the slice's memory) for a notebook that may never come, and a whole class
starting replacements at once would load the node's shared CPUs just when the class begins.

Until it is handed over the warm kernel is not one of the server's kernels: `api/kernels` does
not list it, jupyter_server does not watch its messages (so neither the server's
`last_activity` nor its kernel culler sees it), and idle parking's reading
(`slicehub.extensions.activity`, which counts kernels that are busy or starting as work) does not
count it: a warm kernel nobody uses is not activity. Its Dask heartbeat says 0 tasks. The server's
shutdown shuts it down too.

Disabled, the manager is jupyter_server's `AsyncMappingKernelManager`: `start_kernel` and
`shutdown_all` go straight to it.

This module is also the server extension that installs the manager (enabled in
`jupyter_config/slicehub.json`, installed to `etc/jupyter/jupyter_server_config.d`): a server
reads only `jpserver_extensions` from that directory, and `kernel_manager_class` must be set
before the server makes its kernel manager, which is after extensions are linked and before they
are loaded. So `_link_jupyter_server_extension` sets it, unless the server's configuration names
a kernel manager of its own or a kernel gateway (whose manager it keeps; pre-warming is then
off, and the log says so). `jupyter server extension disable slicehub.extensions.warm_kernel`
leaves the stock manager. The warm kernel must be a Python (ipykernel) kernel, since the
hand-over cell is Python.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from queue import Empty

from jupyter_server.prometheus.metrics import KERNEL_CURRENTLY_RUNNING_TOTAL
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Unicode, default

from slicehub.common import clock
from slicehub.common.environment import PREWARM as PREWARM_ENV

GPU_KERNEL = "slicehub-gpu"  # the kernel whose start a warm kernel is for (docs/kernels.md)
SESSION_NAME = "JPY_SESSION_NAME"  # what the session manager adds to a new kernel's environment
ASKS = frozenset({"kernel_name", "env"})  # a start that asks for more gets a kernel of its own


class WarmKernelUnusable(RuntimeError):
    """Why the warm kernel cannot be handed over, in a sentence."""


@dataclass
class WarmKernel:
    kernel_id: str
    kernel_name: str
    km: object  # the ServerKernelManager, not yet one of the server's kernels
    cwd: str
    env: dict[str, str]
    autorestart: bool  # what the configuration says, restored on hand-over
    ready: asyncio.Future  # done once it answered kernel_info; its exception when it did not


def prewarm_from_env(environ: Mapping[str, str]) -> tuple[bool, str]:
    """(enabled, problem) from `SLICEHUB_PREWARM`: "1" enables; unset, "" or "0" do not;
    anything else does not either, and `problem` says so."""
    value = environ.get(PREWARM_ENV, "")  # as slicehub.common.environment reads it
    if value in ("", "0"):
        return False, ""
    if value == "1":
        return True, ""
    return False, f"{PREWARM_ENV}={value!r} is neither 1 nor 0; no warm kernel is started."


def env_difference(requested: Mapping[str, str] | None, started: Mapping[str, str]) -> list[str]:
    """The names of the variables in which a kernel asked for with `requested` (None: the
    server's own environment, `started`) would differ from the warm kernel, started with
    `started`; `JPY_SESSION_NAME` aside (the hand-over sets it). Names only: never values."""
    if requested is None:
        return []
    names = (set(requested) | set(started)) - {SESSION_NAME}
    return sorted(n for n in names if requested.get(n) != started.get(n))


def handover_code(cwd: str | None, session_name: str | None) -> str:
    """The silent cell that moves a warm ipykernel to `cwd` (None: where it is) and names its
    session; "" when there is nothing to do. Values are Python literals (`repr`), so no path
    can end the string; the cell binds no name of its own in the user's namespace."""
    lines = []
    if cwd is not None:
        lines += [f"__import__('os').chdir({cwd!r})", f"_dh[:] = [{cwd!r}]"]
    if session_name is not None:
        lines += [
            f"__import__('os').environ[{SESSION_NAME!r}] = {session_name!r}",
            f"__session__ = {session_name!r}",
        ]
    return "\n".join(lines)


class WarmKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager, with one warm kernel when pre-warming is on."""

    prewarm = Bool(
        config=True,
        help=f"""Start one kernel of `warm_kernel_name` when the server starts, and hand it to
        the first notebook that asks for that kernel. Default: on when the environment has
        {PREWARM_ENV}=1 (the spawner sets it for a pre-warmed class server), else off.
        Example: c.WarmKernelManager.prewarm = True""",
    )
    warm_kernel_name = Unicode(
        "",
        config=True,
        help="""The kernelspec of the warm kernel; "" (the default): the GPU kernel
        (slicehub-gpu) where it is installed, the class's notebooks' kernel, else the server's
        default kernel (`MappingKernelManager.default_kernel_name`). It must be a Python
        (ipykernel) kernel. Example: c.WarmKernelManager.warm_kernel_name = "python3" """,
    )
    warm_start_timeout = Float(
        120.0,
        min=1.0,
        config=True,
        help="""Seconds the warm kernel has to start and answer kernel_info; after that it is
        shut down and the first notebook starts its own kernel. Default 120.
        Example: c.WarmKernelManager.warm_start_timeout = 60""",
    )
    handover_wait = Float(
        10.0,
        min=0.0,
        config=True,
        help="""Seconds the first notebook waits for a warm kernel that is still starting (it
        started earlier, so it is the quicker way to a kernel); after that the warm kernel is
        shut down and a kernel started as usual. 0: never wait. Default 10.
        Example: c.WarmKernelManager.handover_wait = 5""",
    )
    handover_timeout = Float(
        30.0,
        min=1.0,
        config=True,
        help="""Seconds the warm kernel has to answer the hand-over's silent cell (changing its
        working directory); after that it is shut down and a kernel started as usual.
        Default 30. Example: c.WarmKernelManager.handover_timeout = 10""",
    )

    @default("prewarm")
    def _default_prewarm(self) -> bool:
        enabled, problem = prewarm_from_env(os.environ)
        if problem:
            self.log.warning("%s", problem)
        return enabled

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._warm: WarmKernel | None = None
        self._stopping: set[asyncio.Task] = set()
        if self.prewarm:  # once the server's loop runs: the server's start does not wait
            IOLoop.current().add_callback(self.start_warm_kernel)

    def warm_name(self) -> str:
        """The warm kernel's kernelspec (`warm_kernel_name`, with its default)."""
        if self.warm_kernel_name:
            return self.warm_kernel_name
        if GPU_KERNEL in self.kernel_spec_manager.find_kernel_specs():
            return GPU_KERNEL
        return self.default_kernel_name

    @property
    def warm_kernel(self) -> WarmKernel | None:
        """The warm kernel not handed over yet, if any."""
        return self._warm

    # ---- the warm kernel's start -------------------------------------------------------------
    async def start_warm_kernel(self) -> None:
        """Start the warm kernel, unless there is one; it is ready once it answered kernel_info.
        Failures are logged: the first notebook then starts its own kernel."""
        if self._warm is not None:
            return
        name = self.warm_name()
        try:
            spec = self.kernel_spec_manager.get_kernel_spec(name)
        except Exception as e:  # NoSuchKernel and friends
            self.log.warning("Slicehub: no warm kernel: kernelspec %r: %s", name, e)
            return
        if spec.language.lower() != "python":
            self.log.warning(
                "Slicehub: no warm kernel: %r is a %s kernel; the warm kernel must be a Python "
                "(ipykernel) kernel.",
                name,
                spec.language,
            )
            return
        cwd = self.cwd_for_path("")
        env = dict(os.environ)
        kwargs = self._kernel_start_kwargs(cwd=cwd, env=env)
        km, name, kernel_id = self.pre_start_kernel(name, kwargs)
        kwargs["kernel_id"] = kernel_id
        autorestart = km.autorestart
        km.autorestart = False  # a warm kernel that dies is not started again; see _adopt
        ready = asyncio.ensure_future(self._warm_up(km, kwargs))
        self._warm = WarmKernel(kernel_id, name, km, cwd, env, autorestart, ready)
        self.log.info("Slicehub: starting the warm kernel %s (%s) in %s", kernel_id, name, cwd)
        ready.add_done_callback(self._log_warm_up)

    async def _warm_up(self, km, kwargs: dict) -> None:
        await km.start_kernel(**kwargs)
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=self.warm_start_timeout)
        finally:
            client.stop_channels()

    def _log_warm_up(self, ready: asyncio.Future) -> None:
        if ready.cancelled():
            return
        warm = self._warm
        waiting = warm is not None and warm.ready is ready  # not taken by a request yet
        if ready.exception() is None:
            self.log.info("Slicehub: the warm kernel is ready")
        elif waiting:  # a request that took it says so itself
            self.log.warning("Slicehub: the warm kernel did not start: %s", ready.exception())
            self._warm = None
            self._stop(warm)

    # ---- the hand-over -----------------------------------------------------------------------
    async def _async_start_kernel(self, *, kernel_id=None, path=None, **kwargs) -> str:
        warm = self._take_warm(kernel_id, kwargs)
        if warm is not None:
            try:
                await self._hand_over(warm, path, kwargs)
            except WarmKernelUnusable as e:
                self.log.warning(
                    "Slicehub: the warm kernel %s was not handed over (%s); starting a kernel "
                    "as usual.",
                    warm.kernel_id,
                    e,
                )
                self._stop(warm)
            except BaseException:  # the request was cancelled: nobody will use it
                self._stop(warm)
                raise
            else:
                return warm.kernel_id
        return await super()._async_start_kernel(kernel_id=kernel_id, path=path, **kwargs)

    start_kernel = _async_start_kernel

    def _take_warm(self, kernel_id, kwargs: dict) -> WarmKernel | None:
        """The warm kernel, taken for this request (no other request can have it) when the
        request asks for its kind with no kernel id; None otherwise."""
        warm = self._warm
        if warm is None or kernel_id is not None:
            return None
        if (kwargs.get("kernel_name") or self.default_kernel_name) != warm.kernel_name:
            return None
        self._warm = None
        return warm

    async def _hand_over(self, warm: WarmKernel, path, kwargs: dict) -> None:
        """Make `warm` the kernel this request would have started, or raise
        WarmKernelUnusable saying why it cannot be."""
        more = sorted(set(kwargs) - ASKS)
        if more:  # what the warm kernel was not started with
            raise WarmKernelUnusable(f"the request asks for {', '.join(more)}")
        env = kwargs.get("env")
        differs = env_difference(env, warm.env)
        if differs:
            raise WarmKernelUnusable(f"the request sets {', '.join(differs)} otherwise")
        try:
            await asyncio.wait_for(asyncio.shield(warm.ready), self.handover_wait)
        except TimeoutError:
            raise WarmKernelUnusable(f"it was not ready within {self.handover_wait:g} s") from None
        except Exception as e:
            raise WarmKernelUnusable(f"it did not start: {e}") from e
        if not await warm.km.is_alive():
            raise WarmKernelUnusable("it is no longer running")
        cwd = self.cwd_for_path(path, env=env or {}) if path is not None else os.getcwd()
        session_name = (env or {}).get(SESSION_NAME)
        code = handover_code(cwd if cwd != warm.cwd else None, session_name)
        if code:
            await self._run_silently(warm.km, code)
        await self._adopt(warm, cwd, session_name)

    async def _run_silently(self, km, code: str) -> None:
        """Run `code` as a silent cell and wait for its reply; WarmKernelUnusable when it fails
        or does not answer within `handover_timeout`."""
        client = km.client()
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handover_timeout
        try:
            msg_id = client.execute(
                code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False
            )
            while True:
                try:
                    reply = await client.get_shell_msg(timeout=max(deadline - loop.time(), 0))
                except Empty:
                    raise WarmKernelUnusable(
                        f"it did not answer the hand-over cell within {self.handover_timeout:g} s"
                    ) from None
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        finally:
            client.stop_channels()
        content = reply["content"]
        if content.get("status") != "ok":
            raise WarmKernelUnusable(
                f"the hand-over cell failed: {content.get('ename')}: {content.get('evalue')}"
            )

    async def _adopt(self, warm: WarmKernel, cwd: str, session_name: str | None) -> None:
        """Make `warm` one of the server's kernels, as `_async_start_kernel` does for a kernel
        it started: listed, watched for activity, restarted when it dies (in `cwd`)."""
        km, kernel_id = warm.km, warm.kernel_id
        if isinstance(km._launch_args, dict):  # a restart starts where a new kernel would have
            km._launch_args["cwd"] = cwd
        if session_name is not None:
            km.update_env(env={SESSION_NAME: session_name})
        km.autorestart = warm.autorestart
        km.start_restarter()
        self._kernels[kernel_id] = km
        self._kernel_connections[kernel_id] = 0
        km.execution_state = "idle"  # it answered the hand-over
        km.reason = ""
        km.last_activity = clock.utcnow()
        await self._finish_kernel_start(kernel_id)
        KERNEL_CURRENTLY_RUNNING_TOTAL.labels(type=km.kernel_name).inc()
        if not self._initialized_culler:
            self.initialize_culler()
        self.log.info("Kernel started: %s (the warm kernel, handed over)", kernel_id)

    # ---- shutting it down --------------------------------------------------------------------
    def _stop(self, warm: WarmKernel) -> None:
        """Shut the warm kernel down in the background (the request that gave it up goes on)."""
        task = asyncio.ensure_future(self._shut_down(warm))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _shut_down(self, warm: WarmKernel) -> None:
        if not warm.ready.done():
            warm.ready.cancel()
        try:
            await warm.ready
        except asyncio.CancelledError:
            if not warm.ready.cancelled():  # this task itself was cancelled
                raise
        except Exception:  # it failed to start: logged by _log_warm_up
            pass
        try:
            # not `now`: its extension closes its Dask cluster and removes its spill directory
            await warm.km.shutdown_kernel(now=False)
        except Exception:
            self.log.exception("Slicehub: could not shut the warm kernel %s down", warm.kernel_id)
        else:
            self.log.info("Slicehub: the warm kernel %s is shut down", warm.kernel_id)

    async def _async_shutdown_all(self, now: bool = False) -> None:
        warm, self._warm = self._warm, None
        if warm is not None:
            self._stop(warm)
        await super()._async_shutdown_all(now=now)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    shutdown_all = _async_shutdown_all


# ---- the server extension that installs the manager ----------------------------------------------
def _jupyter_server_extension_points():
    return [{"module": "slicehub.extensions.warm_kernel"}]


def _link_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.gateway.gateway_client import GatewayClient

    if "kernel_manager_class" in serverapp.config.ServerApp:
        serverapp.log.info(
            "Slicehub: ServerApp.kernel_manager_class is configured (%s): no warm kernel",
            serverapp.config.ServerApp.kernel_manager_class,
        )
    elif GatewayClient.instance(parent=serverapp).gateway_enabled:
        serverapp.log.info("Slicehub: kernels run on a gateway: no warm kernel")
    else:
        serverapp.kernel_manager_class = WarmKernelManager


def _load_jupyter_server_extension(serverapp) -> None:
    km = serverapp.kernel_manager
    if not (isinstance(km, WarmKernelManager) and km.prewarm):
        return
    serverapp.log.info("Slicehub: a warm kernel (%s) starts with the server", km.warm_name())
