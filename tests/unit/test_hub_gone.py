"""The quota service never outlives the hub that started it (`slicehub.common.hub_watch.hub_gone`,
`SlicehubQuota.watch_hub`): it watches its parent, and a parent killed with kill -9 ends the
watch within a second or so, in a real process tree. tests/integration/test_crash.py shows it
with a hub."""

import asyncio
import logging
import os
import signal
import subprocess
import sys

import psutil
import pytest

from slicehub.common.hub_watch import hub_gone
from slicehub.quota.service import SlicehubQuota

WATCHER = """
import asyncio, os
from slicehub.common.hub_watch import hub_gone
hub = os.getppid()
print("watching", flush=True)
asyncio.run(hub_gone(hub, every=0.1))
print("gone", flush=True)
"""
HUB = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {WATCHER!r}])
time.sleep(60)
"""


async def test_the_watch_goes_on_while_the_hub_lives_and_ends_when_it_is_gone():
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hub_gone(os.getppid(), every=0.05), timeout=0.3)
    # started under another parent: that one is gone
    await asyncio.wait_for(hub_gone(os.getppid() + 1, every=0.05), timeout=0.3)


def test_a_hub_killed_with_kill_9_ends_its_services_watch():
    """A stand-in hub (a process that starts the watcher, then sleeps) is killed with SIGKILL;
    its orphaned child sees it within a second or so and exits."""
    hub = subprocess.Popen([sys.executable, "-c", HUB], stdout=subprocess.PIPE, text=True)
    watchers = psutil.Process(hub.pid).children()
    try:
        assert hub.stdout.readline() == "watching\n"
        watchers = psutil.Process(hub.pid).children()
        hub.send_signal(signal.SIGKILL)
        hub.wait()
        _ended, alive = psutil.wait_procs(watchers, timeout=10)  # not our child: no status
        assert watchers and not alive, "the orphaned watcher did not end"
        assert hub.stdout.readline() == "gone\n"  # it ended the watch, nothing killed it
    finally:
        for watcher in watchers:
            if watcher.is_running():
                watcher.kill()
        hub.kill()
        hub.wait()
        hub.stdout.close()


async def test_the_service_stops_when_its_hub_is_gone(tmp_path, caplog):
    app = SlicehubQuota()
    app.initialize([f"--ledger-url=sqlite:///{tmp_path / 'ledger.sqlite'}"])
    try:
        assert app.hub_pid == os.getppid()
        app.hub_pid = os.getppid() + 1  # as if the hub that started it had died
        done = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="slicehub.quota"):
            await asyncio.wait_for(app.watch_hub(done), timeout=5)
        assert done.is_set()
        assert f"The hub (pid {os.getppid() + 1}) that started this quota service is gone" in (
            caplog.text
        )
    finally:
        app.ledger.dispose()


def test_the_hub_is_the_one_its_config_named_even_when_it_died_before_the_service_asked(
    monkeypatch,
):
    """A hub killed while its service was still starting: the service is already re-parented
    when it first asks, so the parent would name init; the pid the hub's config wrote does not
    lie, and the watch ends at once."""
    from slicehub.common.hub_watch import HUB_PID_ENV, hub_pid

    monkeypatch.delenv(HUB_PID_ENV, raising=False)
    assert hub_pid() == os.getppid()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    monkeypatch.setenv(HUB_PID_ENV, gone.stdout.strip())
    assert hub_pid() == int(gone.stdout) != os.getppid()
    asyncio.run(asyncio.wait_for(hub_gone(hub_pid(), every=0.05), timeout=0.3))
