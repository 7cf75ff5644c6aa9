"""The warm kernel manager (slicehub.extensions.warm_kernel): its pure rules, then the manager in
this process with real kernels (the stock python3 kernel: quick to start; the GPU kernel's
hand-over in a real Jupyter server is tests/integration/test_warm_kernel_server.py). Each test
makes its own manager and shuts every kernel down."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from slicehub.extensions.warm_kernel import (
    PREWARM_ENV,
    WarmKernelManager,
    env_difference,
    handover_code,
    prewarm_from_env,
)

KERNEL = "python3"
START_S = 60


# ---- the pure rules -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "enabled", "problem"),
    [
        (None, False, ""),
        ("", False, ""),
        ("0", False, ""),
        ("1", True, ""),
        (" 1", False, "SLICEHUB_PREWARM=' 1' is neither 1 nor 0; no warm kernel is started."),
        ("yes", False, "SLICEHUB_PREWARM='yes' is neither 1 nor 0; no warm kernel is started."),
    ],
)
def test_prewarm_is_on_only_for_1(value, enabled, problem):
    env = {} if value is None else {PREWARM_ENV: value}
    assert prewarm_from_env(env) == (enabled, problem)


def test_env_difference_names_the_variables_that_differ_but_not_the_session_name():
    started = {"PATH": "/bin", "HOME": "/home/ana", "JUPYTERHUB_API_TOKEN": "secret"}
    assert env_difference(None, started) == []
    assert env_difference({**started, "JPY_SESSION_NAME": "/home/ana/a.ipynb"}, started) == []
    asked = {**started, "HOME": "/tmp", "EXTRA": "1", "JUPYTERHUB_API_TOKEN": "other"}
    del asked["PATH"]
    assert env_difference(asked, started) == ["EXTRA", "HOME", "JUPYTERHUB_API_TOKEN", "PATH"]


def test_handover_code_is_nothing_when_nothing_moves():
    assert handover_code(None, None) == ""


def test_handover_code_moves_to_any_folder_and_binds_no_name_of_its_own(tmp_path):
    hostile = tmp_path / "it's \"a\" dir\\ é\n'); import shutil #"
    hostile.mkdir()
    code = handover_code(str(hostile), "/x/it's.ipynb")
    namespace = {"_dh": [str(tmp_path)]}
    before = os.getcwd()
    try:
        exec(compile(code, "<hand-over>", "exec"), namespace)
        assert os.getcwd() == str(hostile)
        assert os.environ["JPY_SESSION_NAME"] == "/x/it's.ipynb"
    finally:
        os.chdir(before)
        os.environ.pop("JPY_SESSION_NAME", None)
    namespace.pop("__builtins__")
    assert namespace == {"_dh": [str(hostile)], "__session__": "/x/it's.ipynb"}


# ---- the manager, with real kernels ----------------------------------------------------------
@pytest.fixture
def make_manager(tmp_path):
    """`make(**traits)`: a WarmKernelManager rooted in tmp_path/root (made, with a folder `sub`).
    Each test shuts its manager's kernels down itself, on its own event loop."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "runtime").mkdir()

    def make(**traits) -> WarmKernelManager:
        return WarmKernelManager(
            root_dir=str(tmp_path / "root"),
            connection_dir=str(tmp_path / "runtime"),
            kernel_spec_manager=KernelSpecManager(),
            **traits,
        )

    return make


async def warm_up(km: WarmKernelManager):
    """The manager's warm kernel once it answered kernel_info."""
    for _ in range(100):  # the start is scheduled on the loop when the manager is made
        if km.warm_kernel is not None:
            break
        await asyncio.sleep(0.05)
    warm = km.warm_kernel
    assert warm is not None, "no warm kernel was started"
    await asyncio.wait_for(asyncio.shield(warm.ready), START_S)
    return warm


def pid_of(kernel_manager) -> int:
    return kernel_manager.provisioner.process.pid


async def cwd_of(kernel_manager) -> str:
    client = kernel_manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=START_S)
        reply = await client.execute(
            "import os", user_expressions={"cwd": "os.getcwd()"}, reply=True, timeout=START_S
        )
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    return eval(reply["content"]["user_expressions"]["cwd"]["data"]["text/plain"])


async def gone(pid: int, timeout: float = 20) -> bool:
    """Whether process `pid` ends (or is a zombie, not yet reaped) within `timeout` seconds."""
    for _ in range(int(timeout / 0.1)):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_disabled_it_is_the_stock_manager(make_manager, tmp_path, monkeypatch):
    monkeypatch.delenv(PREWARM_ENV, raising=False)
    km = make_manager()
    try:
        assert km.prewarm is False
        await asyncio.sleep(0.5)
        assert km.warm_kernel is None
        assert not list((tmp_path / "runtime").glob("kernel-*.json"))
        kernel_id = await km.start_kernel(kernel_name=KERNEL, path="sub")
        assert km.list_kernel_ids() == [kernel_id]
        assert await cwd_of(km.get_kernel(kernel_id)) == str(tmp_path / "root" / "sub")
    finally:
        await km.shutdown_all(now=True)


async def test_the_warm_kernel_is_handed_over_and_restarts_in_the_notebooks_folder(
    make_manager, tmp_path, monkeypatch
):
    monkeypatch.setenv(PREWARM_ENV, "1")
    km = make_manager(warm_kernel_name=KERNEL)
    try:
        warm = await warm_up(km)
        assert km.list_kernel_ids() == []  # not one of the server's kernels before
        pid = pid_of(warm.km)
        env = {**os.environ, "JPY_SESSION_NAME": str(tmp_path / "root" / "sub" / "a.ipynb")}
        kernel_id = await km.start_kernel(kernel_name=KERNEL, path="sub", env=env)
        assert kernel_id == warm.kernel_id and km.warm_kernel is None
        assert km.list_kernel_ids() == [kernel_id]
        kernel = km.get_kernel(kernel_id)
        assert pid_of(kernel) == pid
        assert kernel.execution_state == "idle" and kernel.autorestart is True
        assert await cwd_of(kernel) == str(tmp_path / "root" / "sub")
        # a restart starts where a kernel started for the notebook would
        await km.restart_kernel(kernel_id)
        assert pid_of(kernel) != pid
        assert await cwd_of(kernel) == str(tmp_path / "root" / "sub")
        # not replenished: the next notebook gets a kernel of its own
        second = await km.start_kernel(kernel_name=KERNEL, path="")
        assert second != kernel_id and km.warm_kernel is None
    finally:
        await km.shutdown_all(now=True)


async def test_a_dead_warm_kernel_is_not_handed_over(make_manager, monkeypatch):
    monkeypatch.setenv(PREWARM_ENV, "1")
    km = make_manager(warm_kernel_name=KERNEL)
    try:
        warm = await warm_up(km)
        pid = pid_of(warm.km)
        os.kill(pid, signal.SIGKILL)
        assert await gone(pid)
        kernel_id = await km.start_kernel(kernel_name=KERNEL, path="sub")
        assert kernel_id != warm.kernel_id
        assert km.list_kernel_ids() == [kernel_id]
        assert pid_of(km.get_kernel(kernel_id)) != pid
        await asyncio.wait_for(asyncio.gather(*km._stopping), START_S)
        assert not Path(warm.km.connection_file).exists()  # its files were cleaned up
    finally:
        await km.shutdown_all(now=True)


async def test_another_kernel_leaves_it_waiting_and_another_environment_does_not_get_it(
    make_manager, monkeypatch
):
    monkeypatch.setenv(PREWARM_ENV, "1")
    km = make_manager(warm_kernel_name=KERNEL)
    try:
        warm = await warm_up(km)
        pid = pid_of(warm.km)
        # a kernel id asked for: not the warm kernel's to answer
        own = await km.start_kernel(kernel_name=KERNEL, kernel_id="0" * 32)
        assert own == "0" * 32 and km.warm_kernel is warm
        # the first request for its kind, with an environment of its own: shut down
        kernel_id = await km.start_kernel(
            kernel_name=KERNEL, path="", env={**os.environ, "SLICEHUB_EXTRA": "1"}
        )
        assert kernel_id != warm.kernel_id and km.warm_kernel is None
        assert await gone(pid)
    finally:
        await km.shutdown_all(now=True)


async def test_a_warm_kernel_still_starting_is_waited_for_at_most_handover_wait(
    make_manager, monkeypatch
):
    monkeypatch.setenv(PREWARM_ENV, "1")
    km = make_manager(warm_kernel_name=KERNEL, handover_wait=0.0)
    try:
        for _ in range(100):
            if km.warm_kernel is not None:
                break
            await asyncio.sleep(0.05)
        warm = km.warm_kernel
        assert warm is not None and not warm.ready.done()  # asked for before it answered
        kernel_id = await km.start_kernel(kernel_name=KERNEL, path="")
        assert kernel_id != warm.kernel_id and km.warm_kernel is None
        await asyncio.wait_for(asyncio.gather(*km._stopping), START_S)
        assert warm.ready.cancelled() or not await warm.km.is_alive()
    finally:
        await km.shutdown_all(now=True)


async def test_the_servers_shutdown_shuts_the_warm_kernel_down(make_manager, monkeypatch):
    monkeypatch.setenv(PREWARM_ENV, "1")
    km = make_manager(warm_kernel_name=KERNEL)
    warm = await warm_up(km)
    pid = pid_of(warm.km)
    await km.shutdown_all()
    assert km.warm_kernel is None
    assert await gone(pid)
    assert not Path(warm.km.connection_file).exists()
