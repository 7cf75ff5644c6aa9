"""A real `jupyter-server` process of the venv, without a hub, for the tests of Slicehub's
server side (tests/integration/test_activity_server.py, test_warm_kernel_server.py): its own
runtime and config dirs (the venv's other server extensions off, Slicehub's on), a token, and a
requests session that carries it. Closing it stops the server and every kernel it started."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60
# the venv's other server extensions: off unless a test keeps one (the terminals, say)
OTHER_EXTENSIONS = (
    "dask_labextension",
    "jupyter_lsp",
    "jupyter_server_proxy",
    "jupyter_server_terminals",
    "jupyterlab",
    "jupyterlab_nvdashboard",
    "notebook_shim",
)


class JupyterServer:
    """One `jupyter-server` in `root` (notebooks under root/notebooks), with `env` on top of a
    clean environment (no JUPYTER_* or SLICEHUB_* of the test's own) and `args` added to its
    command line; the venv's other server extensions off except those in `keep`. `port_from`:
    where a server that picks its own port (slicehub.extensions.port_report) is found to have
    reported it (None until then); by default it listens where it is told."""

    def __init__(
        self,
        root: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        keep: Sequence[str] = (),
        port_from: Callable[[], int | None] | None = None,
    ):
        self.root = root
        self.runtime_dir = root / "runtime"
        self.notebooks = root / "notebooks"
        self.token = secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"token {self.token}"
        self.notebooks.mkdir(parents=True, exist_ok=True)
        (root / "config").mkdir()
        extensions = {name: False for name in OTHER_EXTENSIONS if name not in keep}
        (root / "config" / "jupyter_server_config.json").write_text(
            json.dumps(
                {
                    "ServerApp": {
                        "jpserver_extensions": extensions | {"slicehub.extensions.server": True}
                    }
                }
            )
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SLICEHUB"))}
        clean.update(
            PATH=f"{VENV_BIN}:{clean.get('PATH', '')}",
            JUPYTER_RUNTIME_DIR=str(self.runtime_dir),
            JUPYTER_CONFIG_DIR=str(root / "config"),
            TMPDIR=str(root),
            **env,
        )
        self.log = open(root / "server.log", "wb")  # closed in close()
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "jupyter-server"),
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--port-retries=0",
                *(["--allow-root"] if os.geteuid() == 0 else []),
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.notebooks}",
                *args,
            ],
            env=clean,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            reported = port_from() if port_from is not None else None
            if reported:
                self.port = reported
            try:
                if (port_from is None or reported) and self.http.get(
                    f"{self.url}/api/status", timeout=2
                ).ok:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"jupyter-server did not start:\n{self.logs()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-4000:]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.url}/{path}", **kwargs)

    def ws(self, kernel_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels"

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and every kernel it started
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.http.close()
        self.log.close()


# -- a notebook cell over a kernel's websocket (what JupyterLab sends) ------------------------


@dataclass
class Cell:
    """What a cell gave: its stdout, its traceback (None: it ran), its execution count."""

    out: str
    error: str | None
    error_line: str  # "ename: evalue", or ""
    count: int | None


def execute_request(code: str, username: str = "student") -> tuple[str, str]:
    """A notebook cell as JupyterLab sends it on a kernel's websocket: (its msg_id, the JSON)."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": username,
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": "",
    }
    message = {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": True},
        "channel": "shell",
        "buffers": [],
    }
    return msg_id, json.dumps(message)


async def run_on(ws, code: str, timeout: float, username: str = "student") -> Cell:
    """Send `code` as an `execute_request` on an open kernel websocket (tornado's) and read its
    replies until the kernel is idle again and has answered with its execution count."""
    msg_id, message = execute_request(code, username)
    ws.write_message(message)
    out, error, error_line, count, idle = [], None, "", None, False
    deadline = time.monotonic() + timeout
    while not (idle and count is not None):
        raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
        if raw is None:
            raise RuntimeError("the kernel's websocket closed")
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = "\n".join(content["traceback"])
            error_line = f"{content['ename']}: {content['evalue']}"
        elif kind == "execute_reply":
            count = content["execution_count"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return Cell("".join(out), error, error_line, count)
