"""The harness itself, proved against JupyterHub's stock SimpleLocalProcessSpawner."""

import os
import signal
import time

import psutil
import pytest
from hubprocess import MARKER_ENV, HubProcess, write_stock_config

pytestmark = pytest.mark.integration


def singleuser_pids(hub: HubProcess) -> list[int]:
    return [
        p.pid
        for p in hub.leftover_processes()
        if any("jupyterhub-singleuser" in part for part in p.cmdline())
    ]


def test_spawn_reach_stop_restart(hub_factory, tmp_path):
    config = write_stock_config(tmp_path / "stock_config.py", tmp_path / "home")
    hub = hub_factory(config)

    assert hub.api("GET", "/").json()["version"].startswith("6.")
    hub.create_user("alice")
    r = hub.start_server("alice", {"note": "bare options body"})
    assert r.status_code in (201, 202), r.text
    model = hub.wait_for_server("alice")
    assert model["ready"] is True
    assert model["user_options"] == {"note": "bare options body"}

    # through the proxy to the single-user server, with the service's token
    r = hub.get("/user/alice/api/status")
    assert r.status_code == 200, r.text
    assert "started" in r.json()
    [pid] = singleuser_pids(hub)
    assert psutil.Process(pid).environ()[MARKER_ENV] == hub.marker

    hub.stop_server("alice")
    assert hub.server_model("alice") is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert hub.get("/user/alice/api/status", allow_redirects=False).status_code != 200

    # the wrapped body form, with an empty dict: options cleared, not reused
    r = hub.start_server("alice", {})
    assert r.status_code in (201, 202), r.text
    assert hub.wait_for_server("alice")["user_options"] == {}

    hub.restart()
    assert hub.starts == 2
    assert hub.api("GET", "/users/alice").status_code == 200
    # cleanup_servers defaults to True: the SIGTERMed hub stopped the server
    assert hub.server_model("alice") is None
    assert singleuser_pids(hub) == []


def test_server_survives_hub_restart_and_close_kills_it(hub_factory, tmp_path):
    config = write_stock_config(
        tmp_path / "stock_config.py", tmp_path / "home", cleanup_servers=False
    )
    hub = hub_factory(config)
    hub.create_user("bob")
    hub.start_server("bob", {"n": 1})
    hub.wait_for_server("bob")
    [pid] = singleuser_pids(hub)

    hub.restart()
    assert hub.settings() == {"cleanup_servers": False, "cleanup_proxy": True}
    assert psutil.pid_exists(pid)
    # the new hub picked the server up again, and its new proxy routes to it
    assert hub.wait_for_server("bob")["ready"]
    assert hub.get("/user/bob/api/status").status_code == 200

    killed = hub.close()
    assert any("jupyterhub-singleuser" in k for k in killed), killed
    time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert hub.leftover_processes() == []


def test_killed_hub_leaves_no_proxy(hub_factory, tmp_path):
    config = write_stock_config(tmp_path / "stock_config.py", tmp_path / "home")
    hub = hub_factory(config)
    proxy_pid = int((hub.workdir / "jupyterhub-proxy.pid").read_text())
    assert psutil.pid_exists(proxy_pid)

    assert hub.stop(sig=signal.SIGKILL) == -signal.SIGKILL
    time.sleep(0.2)
    assert not psutil.pid_exists(proxy_pid) or (
        psutil.Process(proxy_pid).status() == psutil.STATUS_ZOMBIE
    )
    hub.start()
    assert hub.api("GET", "/").status_code == 200


def test_start_failure_reports_the_log(tmp_path):
    config = tmp_path / "broken_config.py"
    config.write_text('c.JupyterHub.spawner_class = "no-such-spawner"\n')
    hub = HubProcess(config, tmp_path / "hub")
    with pytest.raises(RuntimeError, match="hub exited with code") as excinfo:
        hub.start(timeout=60)
    assert "no-such-spawner" in str(excinfo.value)
    assert hub.close() == []
    assert os.path.exists(hub.workdir / "hub.log")


def test_login_through_the_form(hub_factory, tmp_path):
    config = write_stock_config(tmp_path / "stock_config.py", tmp_path / "home")
    hub = hub_factory(config)
    with hub.login("carol", "any password works with DummyAuthenticator") as browser:
        r = browser.get(f"{hub.url}/hub/home", timeout=30)
        assert r.status_code == 200 and "/hub/login" not in r.url, r.url
        assert "carol" in r.text
    # logging in did not start a server (next_url keeps the browser away from /hub/spawn)
    assert hub.server_model("carol") is None
