"""The GPU kernel inside a real single-user server started by a real hub (declared slice, no
GPU here): the kernel falls back to the CPU and says why, its Dask dashboard is reachable
through the hub and jupyter-server-proxy at the link it prints, and `%slicehub` reads the
session's money from the quota service with the server's own token."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import psutil
import pytest
import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.integration.test_quota_hub import token_for
from tests.jupyterserver import run_on

pytestmark = pytest.mark.integration


def run_cell(ws_url: str, token: str, code: str, timeout: float = 120) -> str:
    """Execute `code` in a running kernel over the Jupyter server's websocket; its stdout."""

    async def go() -> str:
        request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
        ws = await websocket_connect(request)
        cell = await run_on(ws, code, timeout, username="test")
        ws.close()
        # wait for the close to finish, so no socket outlives this event loop
        while await asyncio.wait_for(ws.read_message(), 10) is not None:
            pass
        if cell.error:
            raise AssertionError(f"the cell failed:\n{cell.error}")
        return cell.out

    return asyncio.run(go())


def test_the_gpu_kernel_in_a_hub_server(quota_hub):
    hub, _data = quota_hub
    r = hub.start_server("bob", {"slice_type": "h100.1g.10gb", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    pid = hub.api("GET", "/users/bob").json()["servers"][""]["state"]["pid"]
    server_env = psutil.Process(pid).environ()
    assert server_env["SLICEHUB_QUOTA_URL"].endswith("/services/quota/")

    token = token_for(hub, "bob")
    with requests.Session() as s:
        s.trust_env = False
        s.headers["Authorization"] = f"token {token}"
        check_the_kernel(hub, s, token)
    hub.stop_server("bob")


def check_the_kernel(hub, s: requests.Session, token: str) -> None:
    specs = s.get(f"{hub.url}/user/bob/api/kernelspecs", timeout=30).json()["kernelspecs"]
    assert specs["slicehub-gpu"]["spec"]["display_name"] == "Python 3 (GPU: CuPy + Dask-CUDA)"
    kernel = s.post(f"{hub.url}/user/bob/api/kernels", json={"name": "slicehub-gpu"}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    ws_url = (
        hub.url.replace("http://", "ws://")
        + f"/user/bob/api/kernels/{kernel.json()['id']}/channels"
    )

    first = run_cell(ws_url, token, "print(xp.__name__, len(client.scheduler_info()['workers']))")
    line, *rest = first.splitlines()
    # the demo site's devices are declared: the kernel says so and runs on the CPU
    assert line.startswith("1g.10gb MIG slice of an H100-80GB: no GPU · ")
    assert "Dask dashboard: /user/bob/proxy/" in line
    assert any("declared by the site file" in x for x in rest)
    assert rest[-1] == "numpy 1"

    link = run_cell(ws_url, token, "print(slicehub.dashboard_link)").strip()
    assert link.startswith("/user/bob/proxy/") and link.endswith("/status")
    page = s.get(f"{hub.url}{link}", timeout=30)
    assert page.status_code == 200 and "Dask" in page.text
    # the dashboard needs the user's login: without a token the hub does not serve it
    with requests.Session() as anonymous:
        anonymous.trust_env = False
        r = anonymous.get(f"{hub.url}{link}", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403)

    status = run_cell(ws_url, token, "%slicehub")
    assert "Time left: 59 min" in status or "Time left: 1 h 00 min" in status
    assert "Money: HK$" in status and "held (subsidy HK$" in status, status
    assert "Dask workers' memory:" in status


def test_the_status_bar_endpoints_read_and_extend_the_session(quota_hub):
    """slicehub.extensions.server inside a real server: the session's time and money from the quota
    service with the server's own token; Extend moves the end, or says why not."""
    hub, _data = quota_hub
    r = hub.start_server("bob", {"slice_type": "h100.1g.10gb", "duration_hours": 1})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("bob")
    token = token_for(hub, "bob")
    with requests.Session() as s:
        s.trust_env = False
        s.headers["Authorization"] = f"token {token}"
        base = f"{hub.url}/user/bob/slicehub/api"
        status = s.get(f"{base}/status", timeout=30).json()
        assert status["quota"] == "ok"
        assert status["slice"] == {
            "type": "h100.1g.10gb",
            "description": "1g.10gb MIG slice of an H100-80GB",
            "declared": True,
        }
        session = status["session"]
        assert session["project"] == "demo-lab" and session["held"]["list"] == 550
        assert session["held"]["subsidy"] + session["held"]["copay"] == 550
        assert status["project"]["slug"] == "demo-lab" and status["project"]["policy"] == "stop"
        before = datetime.fromisoformat(session["end_at"])

        extended = s.post(f"{base}/extend", json={"minutes": 30}, timeout=30)
        assert extended.status_code == 200, extended.text
        after = datetime.fromisoformat(extended.json()["session"]["end_at"])
        assert after - before == timedelta(minutes=30)
        assert extended.json()["session"]["held"]["list"] == 825  # 1.5 h at HK$5.50
        again = s.get(f"{base}/status", timeout=30).json()["session"]
        assert again["end_at"] == extended.json()["session"]["end_at"]

        # demo-lab has HK$500 of subsidy: 24 h of a whole H100 would be more, but this slice
        # is a 1g: ask for more than the project can pay by extending many times over
        refused = s.post(f"{base}/extend", json={"minutes": 24 * 60}, timeout=30)
        while refused.status_code == 200:
            refused = s.post(f"{base}/extend", json={"minutes": 24 * 60}, timeout=30)
        assert refused.status_code == 402
        assert refused.json()["message"].startswith("Project demo-lab has HK$")

        for bad in ({"minutes": 0}, {"minutes": "60"}, {"hours": 1}, [60]):
            r = s.post(f"{base}/extend", json=bad, timeout=30)
            assert r.status_code == 400 and r.json()["message"], bad
    with requests.Session() as anonymous:
        anonymous.trust_env = False
        r = anonymous.get(f"{hub.url}/user/bob/slicehub/api/status", allow_redirects=False)
    assert r.status_code in (302, 403)
    hub.stop_server("bob")
