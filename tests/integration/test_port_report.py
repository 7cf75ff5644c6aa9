"""A server in a Slurm job binds a port of the OS's choosing and tells the hub once it listens
(slicehub.extensions.port_report), so no other process can take its port between the report and
the bind (batchspawner#58, jupyterhub#3005).

The server is a real `jupyter-server` with Slicehub's extension (tests/jupyterserver.py); the
hub's `POST /hub/api/batchspawner` is `FakePortAPI`, a fake of that one endpoint that records
each report and answers with the statuses a test gives it. The real hub's handler is tested in
test_batch_api and, with real jobs, in test_slurm_hub."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from jupyterserver import JupyterServer, run_on
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from slicehub.extensions import port_report

TOKEN = "the-servers-own-token"
SERVICE_URL = "http://127.0.0.1:0/user/ann/"  # as the Slurm spawner sets it: port 0


def kernel_says(server: JupyterServer, kernel_id: str, code: str) -> str:
    async def go() -> str:
        request = HTTPRequest(
            server.ws(kernel_id), headers={"Authorization": f"token {server.token}"}
        )
        ws = await websocket_connect(request)
        cell = await run_on(ws, code, timeout=60)
        ws.close()
        assert cell.error is None, cell.error
        return cell.out

    return asyncio.run(go())


class FakePortAPI:
    """A fake of the hub's `POST /hub/api/batchspawner`: records (path, Authorization, body,
    the status it answered) and answers with `statuses` in turn (the last one from then on)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.reports: list[tuple[str, str, dict, int]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = fake.statuses.pop(0) if len(fake.statuses) > 1 else fake.statuses[0]
                fake.reports.append(
                    (self.path, self.headers.get("Authorization", ""), body, status)
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.httpd.server_port}/hub/api"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def taken_port(self) -> int | None:
        """The port of a report the fake answered 200, if any."""
        return next((body["port"] for *_, body, status in self.reports if status == 200), None)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_hub():
    fakes = []

    def make(statuses=(200,)):
        fakes.append(FakePortAPI(statuses))
        return fakes[-1]

    yield make
    for f in fakes:
        f.close()


def test_the_server_listens_where_the_os_put_it_and_says_so_once_it_listens(tmp_path, fake_hub):
    hub = fake_hub([503, 200])  # the hub is busy at the first report: asked again
    env = {
        "SLICEHUB_REPORT_PORT": "1",
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_SERVICE_URL": SERVICE_URL,
    }
    server = JupyterServer(tmp_path, env, port_from=hub.taken_port)
    try:
        told = server.port
        assert server.api("GET", "api/status").status_code == 200  # it listens where it said
        assert [r[0] for r in hub.reports] == ["/hub/api/batchspawner"] * 2
        assert {r[1] for r in hub.reports} == {f"token {TOKEN}"}
        assert [r[2:] for r in hub.reports] == [({"port": told}, 503), ({"port": told}, 200)]
        told_line = f"Told the hub this server listens on port {told}"
        deadline = time.monotonic() + 10  # its log line may come a moment after the answer
        while told_line not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert told_line in server.logs()
        # kernels see the environment the server started with: a warm kernel (made before the
        # port was known) is handed to a notebook only when the two match (warm_kernel)
        kernel = server.api("POST", "api/kernels", json={"name": "python3"}).json()["id"]
        code = "import os; print(os.environ['JUPYTERHUB_SERVICE_URL'])"
        assert kernel_says(server, kernel, code).strip() == SERVICE_URL
    finally:
        server.close()


def test_without_the_request_the_server_listens_where_it_is_told(tmp_path, fake_hub):
    hub = fake_hub()
    server = JupyterServer(
        tmp_path, {"JUPYTERHUB_API_URL": hub.api_url, "JUPYTERHUB_API_TOKEN": TOKEN}
    )
    try:
        assert server.api("GET", "api/status").status_code == 200  # on the harness's port
        assert hub.reports == []
    finally:
        server.close()


async def test_a_refusal_ends_the_report_and_an_absent_hub_is_asked_again(fake_hub, caplog):
    hub = fake_hub([409])  # the start was cancelled meanwhile: the hub takes no port
    env = {"JUPYTERHUB_API_URL": hub.api_url, "JUPYTERHUB_API_TOKEN": TOKEN}
    assert await port_report.send(4321, env) is False
    assert [r[2] for r in hub.reports] == [{"port": 4321}]  # not asked again
    assert "The hub refused this server's port 4321 (409)" in caplog.text

    hub.close()  # nobody answers at that address any more
    assert await port_report.send(4321, env, timeout=1.0) is False
    assert caplog.text.count("did not take this server's port 4321 yet") >= 1
    assert "Could not tell the hub this server's port 4321" in caplog.text


@pytest.mark.parametrize(
    ("ip", "host"),
    [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3")],
)
def test_where_the_server_is_reached_from_its_own_node(ip, host):
    assert port_report.connect_host(ip) == host
