"""A hub killed with `kill -9` comes back with the same command and finds everything (issue 12:
a restart is never a repair job). Two servers run; after each restart both answer through the
proxy, their slices and ledger sessions are those from before (none lost, none doubled),
metering goes on, and exactly one quota service, one culler and one proxy run. One hub crashes three
times, to keep to few hub starts: the hub alone; the hub and its quota service; the hub, with
the proxy's pid file naming a process that no longer exists while the old proxy still listens
(seen in the field: the new proxy could not bind). That the ledger's charges tile a session
exactly across a kill -9 is test_quota_hub.py's; a proxy of another deployment on our ports is
checked here without a hub."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hubprocess import CONFIGURABLE_HTTP_PROXY, MARKER_ENV, PROXY_PID_NAME, free_port

from slicehub.proxy import SlicehubProxy
from tests.integration.test_quota_hub import ledger_rows

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SERVERS = {
    "alice": {"project": "demo-lab", "slice_type": "h100x1"},
    "bob": {"slice_type": "h100.3g.40gb"},
}
# 2 shared cores: a restarted hub's first ticks and the old service's exit can take seconds
SETTLE = 30


def test_a_hub_killed_three_ways_finds_both_servers_and_runs_one_service(hub_factory, tmp_path):
    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        # as after a real crash: the harness stops a killed hub's proxy unless told not to
        "c.JupyterHub.cleanup_proxy = False\n"
    )
    data = tmp_path / "data"
    hub = hub_factory(cfg, env={"SLICEHUB_DATA_DIR": str(data), "SLICEHUB_METER_INTERVAL": "1"})
    for user, options in SERVERS.items():
        hub.create_user(user)
        assert hub.start_server(user, options).status_code in (201, 202)
    for user in SERVERS:
        hub.wait_for_server(user)
    before = slices_and_sessions(data)
    assert len(before["slices"]) == 2 and len(before["sessions"]) == 2, before

    # 1. the hub alone: its quota service and its culler notice and exit
    old_service, old_proxy, old_culler = (
        one_quota_service(hub, data),
        one_proxy(hub),
        one_culler(hub),
    )
    hub.stop(sig=signal.SIGKILL)
    restart_and_find_everything(hub, data, before)
    assert not alive(old_service), "the dead hub's quota service lives on"
    assert not alive(old_culler), "the dead hub's culler lives on"
    assert not alive(old_proxy)

    # 2. the hub and its quota service
    one_quota_service(hub, data).kill()
    hub.stop(sig=signal.SIGKILL)
    restart_and_find_everything(hub, data, before)

    # 3. the proxy's pid file names a process that no longer exists, and the old proxy listens
    old_proxy = one_proxy(hub)
    hub.stop(sig=signal.SIGKILL)
    (hub.workdir / PROXY_PID_NAME).write_text(str(dead_pid()))
    restart_and_find_everything(hub, data, before)
    assert not alive(old_proxy)
    assert "left by a hub that did not stop it" in hub.log_text()
    # stopped here, not by the hub's clean-up, which stops the quota service first: the
    # servers' releases would retry until the harness gives up on the hub (30 s)
    for user in SERVERS:
        hub.stop_server(user)


def restart_and_find_everything(hub, data, before) -> None:
    charged_before = charged(data)
    hub.start()
    for user in SERVERS:
        assert hub.server_model(user)["ready"], user
        # routes come back with the hub's route check at start-up; allow a later one
        answers = wait_for(lambda u=user: hub.get(f"/user/{u}/api/status").status_code == 200)
        assert answers, f"{user}'s server does not answer through the proxy\n{hub.log_tail()}"
    assert slices_and_sessions(data) == before
    grew = wait_for(lambda: all(charged(data)[s] > charged_before[s] for s in charged_before))
    assert grew, f"metering did not go on: {charged_before} then {charged(data)}"
    service = one_quota_service(hub, data)
    assert service.ppid() == hub.proc.pid  # the new hub's own
    assert one_culler(hub).ppid() == hub.proc.pid
    proxy = one_proxy(hub)  # the one that listens is the one the hub started and watches
    assert proxy.ppid() == hub.proc.pid
    assert proxy.pid == int((hub.workdir / PROXY_PID_NAME).read_text())


def slices_and_sessions(data: Path) -> dict[str, list]:
    with sqlite3.connect(data / "slicehub.sqlite") as db:
        slices = db.execute(
            "SELECT holder, slice_type, node, assignment FROM slice_reservations ORDER BY holder"
        ).fetchall()
    sessions = ledger_rows(
        data, "SELECT id, username, slice_type, status, end_at FROM sessions ORDER BY id"
    )
    return {"slices": slices, "sessions": sessions}


def charged(data: Path) -> dict[int, int]:
    return dict(ledger_rows(data, "SELECT id, charged_list_cents FROM sessions"))


def one_quota_service(hub, data: Path) -> psutil.Process:
    """The one quota service of this hub's data dir, once any other has exited."""
    services: list[psutil.Process] = []

    def exactly_one() -> bool:
        services[:] = processes(
            lambda cmdline: "slicehub.quota.service" in cmdline and str(data) in " ".join(cmdline)
        )
        return len(services) == 1

    assert wait_for(exactly_one), f"quota services running: {services}"
    return services[0]


def one_culler(hub) -> psutil.Process:
    """The one culler reading this hub's servers, once any other has exited."""
    cullers: list[psutil.Process] = []

    def exactly_one() -> bool:
        cullers[:] = [
            p
            for p in processes(lambda cmdline: "slicehub.culler" in cmdline)
            if environ(p).get("SLICEHUB_SERVERS_URL") == hub.url
        ]
        return len(cullers) == 1

    assert wait_for(exactly_one), f"cullers running: {cullers}"
    return cullers[0]


def one_proxy(hub) -> psutil.Process:
    """The one configurable-http-proxy of this hub, and that it listens on the public port."""
    proxies = [
        p
        for p in processes(lambda cmdline: "configurable-http-proxy" in " ".join(cmdline[:2]))
        if environ(p).get(MARKER_ENV) == hub.marker
    ]
    assert len(proxies) == 1, proxies
    assert hub.port in listening_ports(proxies[0].pid)
    return proxies[0]


def processes(match) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and match(p.info["cmdline"] or []):
            found.append(p)
    return found


def environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except psutil.Error:  # another user's, or gone
        return {}


def alive(process: psutil.Process) -> bool:
    return process.is_running() and process.status() != psutil.STATUS_ZOMBIE


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def wait_for(condition, timeout: float = SETTLE) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def test_a_proxy_of_another_deployment_on_our_ports_is_never_stopped(tmp_path):
    """A configurable-http-proxy on the hub's proxy ports, started with another token: the hub
    refuses to start, naming its pid, and leaves it running."""
    public, api = free_port(), free_port()
    other = subprocess.Popen(
        [
            str(CONFIGURABLE_HTTP_PROXY),
            "--ip=127.0.0.1",
            f"--port={public}",
            "--api-ip=127.0.0.1",
            f"--api-port={api}",
        ],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": "another deployment's"},
        stdout=subprocess.DEVNULL,
    )
    try:
        proxy = SlicehubProxy(
            public_url=f"http://127.0.0.1:{public}/",
            api_url=f"http://127.0.0.1:{api}",
            auth_token="ours",
        )
        assert wait_for(lambda: api in listening_ports(other.pid), timeout=15)
        with pytest.raises(RuntimeError, match=rf"pid {other.pid}\) listens on a port"):
            proxy.stop_leftover_proxies()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def listening_ports(pid: int) -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process(pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
