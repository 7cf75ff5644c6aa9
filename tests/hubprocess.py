"""A real JupyterHub, run as a subprocess, for integration tests and benchmarks.

`HubProcess` starts the `jupyterhub` executable that sits next to `sys.executable` (the project's
venv) with a config file under test, behind the configurable-http-proxy from the repository's
`node_modules`. It does not fake anything: the hub, the proxy and every single-user server are real
processes, talked to over HTTP.

What the harness decides, and nothing else:

- where a hub lives: a wrapper config `workdir/test_config.py` loads the config under test and then
  moves every port (public, hub, proxy API) and every file (database, cookie secret, pid files) into
  the work directory, so several hubs run side by side without colliding;
- who may call the REST API: a service `test-admin` with a random token and an explicit,
  documented list of scopes (`ADMIN_SCOPES`);
- that nothing outlives a test: every process the hub starts carries `SLICEHUB_TEST_RUN=<uuid>` in
  its environment (the hub and the proxy inherit it; single-user servers get it through
  `c.Spawner.environment`), and the hub's descendants are recorded each time it is stopped, so
  `close()` can find and kill what a hub left behind (for example with `cleanup_servers = False`).

What the config under test keeps: spawner, authenticator, `cleanup_servers` and `cleanup_proxy`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
JUPYTERHUB = VENV_BIN / "jupyterhub"
JUPYTERHUB_SINGLEUSER = VENV_BIN / "jupyterhub-singleuser"
CONFIGURABLE_HTTP_PROXY = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
DEMO_DEPLOYMENT = REPO_ROOT / "hub_config" / "demo.toml"

MARKER_ENV = "SLICEHUB_TEST_RUN"
ADMIN_SERVICE = "test-admin"
# The scopes of JupyterHub's built-in `admin` role (jupyterhub/roles.py), spelled out, plus the
# sub-scopes tests lean on. `access:servers` lets the token reach single-user servers through the
# proxy; `admin:server_state` (in `admin:servers`) lets tests read spawner state.
ADMIN_SCOPES = [
    "admin:users",
    "list:users",
    "read:users",
    "admin:servers",
    "servers",
    "read:servers",
    "access:servers",
    "admin:groups",
    "admin:services",
    "list:services",
    "read:services",
    "access:services",
    "tokens",
    "read:roles",
    "read:hub",
    "read:metrics",
    "proxy",
    "shares",
    "shutdown",
]

WRAPPER_NAME = "test_config.py"
SETTINGS_NAME = "harness_settings.json"
LOG_NAME = "hub.log"
HUB_PID_NAME = "jupyterhub.pid"
PROXY_PID_NAME = "jupyterhub-proxy.pid"

_ports_handed_out: set[int] = set()


class HubError(RuntimeError):
    """The hub did not do what the harness waited for; the message ends with the hub's log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and this process has not handed out."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free port found in 100 tries")


def write_stock_config(path: Path, home_root: Path, *, cleanup_servers: bool = True) -> Path:
    """Write a config for JupyterHub's stock SimpleLocalProcessSpawner and DummyAuthenticator.

    The reference point for benchmarks and the hub that proves the harness itself works.
    Single-user servers run from this venv with their home under `home_root/<username>`.
    """
    args = ["--allow-root"] if os.geteuid() == 0 else []
    path.write_text(
        "# Stock JupyterHub: SimpleLocalProcessSpawner + DummyAuthenticator (tests/hubprocess.py)\n"
        'c.JupyterHub.spawner_class = "simple"\n'
        'c.JupyterHub.authenticator_class = "dummy"\n'
        "c.Authenticator.allow_all = True\n"
        f"c.ConfigurableHTTPProxy.command = [{str(CONFIGURABLE_HTTP_PROXY)!r}]\n"
        f"c.Spawner.cmd = [{str(JUPYTERHUB_SINGLEUSER)!r}]\n"
        f"c.Spawner.args = {args!r}\n"
        f"c.SimpleLocalProcessSpawner.home_dir_template = {str(home_root / '{username}')!r}\n"
        f"c.JupyterHub.cleanup_servers = {cleanup_servers!r}\n"
    )
    return path


class HubProcess:
    """One real JupyterHub, with its proxy, in its own work directory.

    `config_file` is the config under test; `env` is added to this process's environment for the
    hub (and so for the proxy, and for the spawner if it passes the environment on), after
    `SLICEHUB_DATA_DIR=workdir/data` and `SLICEHUB_DEPLOYMENT=hub_config/demo.toml` (the
    embedded demo); `port` is the public port (a free one when None). Ports stay
    the same across `restart()`. `venv_bin` is the bin directory of another environment whose
    `jupyterhub` runs the hub (an installed wheel's venv); default: this venv's, `JUPYTERHUB`.
    """

    def __init__(
        self,
        config_file: Path,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        venv_bin: Path | None = None,
    ) -> None:
        self.config_file = Path(config_file).resolve()
        if not self.config_file.is_file():
            # load_subconfig would skip a missing file silently and start a bare hub
            raise FileNotFoundError(f"hub config not found: {self.config_file}")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jupyterhub = Path(venv_bin) / "jupyterhub" if venv_bin else JUPYTERHUB
        self.port = port or free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.token = secrets.token_hex(32)
        self.marker = uuid.uuid4().hex
        self.extra_env = dict(env or {})
        self.log_path = self.workdir / LOG_NAME
        self.wrapper_path = self.workdir / WRAPPER_NAME
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # (pid, create_time) of every process seen under this hub; checked again by close()
        self._seen: set[tuple[int, float]] = set()
        self._session = requests.Session()
        self._session.trust_env = False  # never send 127.0.0.1 through an HTTP proxy from env
        self._session.headers["Authorization"] = f"token {self.token}"
        self._write_wrapper()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The public URL (the proxy), without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    def _write_wrapper(self) -> None:
        w = self.workdir
        role = {"name": ADMIN_SERVICE, "scopes": ADMIN_SCOPES, "services": [ADMIN_SERVICE]}
        self.wrapper_path.write_text(
            f"""\
# Generated by tests/hubprocess.py. Loads the config under test, then moves every port and
# file of this hub into {w} so that hubs started side by side never collide.
import json as _json
import os as _os

_config_file = {str(self.config_file)!r}
if not _os.path.isfile(_config_file):
    raise FileNotFoundError(_config_file)
load_subconfig(_config_file)

# Public address: bind_url alone; ip/port from the config would rewrite it.
c.JupyterHub.pop("ip", None)
c.JupyterHub.pop("port", None)
c.JupyterHub.pop("base_url", None)
c.JupyterHub.bind_url = "http://127.0.0.1:{self.port}/"
# Slicehub's culler reaches the servers through the proxy at the hub's public URL, which the
# config set from the deployment file: it moves with the address
for _service in c.JupyterHub.get("services", []):
    if _service.get("name") == "culler":
        _service.setdefault("environment", {{}})["SLICEHUB_SERVERS_URL"] = "http://127.0.0.1:{self.port}"
# Hub address: hub_bind_url/hub_connect_url would win over hub_ip/hub_port.
c.JupyterHub.pop("hub_bind_url", None)
c.JupyterHub.pop("hub_connect_url", None)
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
# the repository's configurable-http-proxy, unless the config under test names one
if "command" not in c.ConfigurableHTTPProxy:
    c.ConfigurableHTTPProxy.command = [{str(CONFIGURABLE_HTTP_PROXY)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(w / PROXY_PID_NAME)!r}
c.JupyterHub.pid_file = {str(w / HUB_PID_NAME)!r}
c.JupyterHub.db_url = {"sqlite:///" + str(w / "jupyterhub.sqlite")!r}
c.JupyterHub.cookie_secret_file = {str(w / "jupyterhub_cookie_secret")!r}

c.JupyterHub.services.append({{"name": {ADMIN_SERVICE!r}, "api_token": {self.token!r}}})
c.JupyterHub.load_roles.append({role!r})
# lets the harness find single-user servers this hub leaves behind
c.Spawner.environment.update({{{MARKER_ENV!r}: {self.marker!r}}})

with open({str(w / SETTINGS_NAME)!r}, "w") as _f:
    _json.dump(
        {{
            "cleanup_servers": bool(c.JupyterHub.get("cleanup_servers", True)),
            "cleanup_proxy": bool(c.JupyterHub.get("cleanup_proxy", True)),
        }},
        _f,
    )
"""
        )

    def settings(self) -> dict[str, bool]:
        """`cleanup_servers` / `cleanup_proxy` as the config under test set them (after a start)."""
        path = self.workdir / SETTINGS_NAME
        if not path.exists():
            return {"cleanup_servers": True, "cleanup_proxy": True}
        return json.loads(path.read_text())

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60) -> HubProcess:
        """Start the hub and wait until `GET /hub/api/` answers 200 through the proxy and the hub
        has started its managed services (it logs "JupyterHub is now running" after them: the
        quota service migrates and seeds its ledger before it answers)."""
        if self.running:
            raise RuntimeError(f"hub in {self.workdir} is already running")
        self.starts += 1
        env = {
            **os.environ,
            # Slicehub's config keeps its databases there; never the repository's .data/
            "SLICEHUB_DATA_DIR": str(self.workdir / "data"),
            # Slicehub's config serves the embedded demo unless a test names a deployment
            "SLICEHUB_DEPLOYMENT": str(DEMO_DEPLOYMENT),
            **self.extra_env,
            MARKER_ENV: self.marker,
        }
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== harness: start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.jupyterhub), "-f", str(self.wrapper_path)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # a Ctrl-C meant for the test runner must not reach the hub: stop() ends it
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise HubError(f"hub exited with code {code} while starting\n{self.log_tail()}")
            try:
                r = self._session.get(f"{self.api_url}/", timeout=2)
                if r.status_code == 200 and self._running_since_this_start():
                    return self
            except requests.ConnectionError:
                pass
            except requests.Timeout:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HubError(f"hub not up within {timeout} s\n{self.log_tail()}")
            time.sleep(0.1)

    def _running_since_this_start(self) -> bool:
        marker = f"===== harness: start #{self.starts} ====="
        text = self.log_text()
        return "JupyterHub is now running" in text[text.rfind(marker) :]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Send `sig` to the hub, SIGKILL it after `timeout` s; return its exit code.

        The hub stops its proxy and single-user servers on SIGTERM/SIGINT as its config says
        (`cleanup_proxy`, `cleanup_servers`). Afterwards the harness makes sure the proxy is gone
        unless `cleanup_proxy` is False: a hub that was killed never stops it, and a hub that
        did stop it only sent SIGTERM without waiting. Servers left by a killed hub keep running,
        as after a real crash; `close()` ends them.
        """
        proxy = self._proxy_process()
        if self.proc is None:
            return None
        self._record_descendants()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if proxy is not None and self.settings()["cleanup_proxy"]:
            _terminate([proxy], grace=10)
            (self.workdir / PROXY_PID_NAME).unlink(missing_ok=True)
        return code

    def restart(self, timeout: float = 60) -> HubProcess:
        self.stop()
        return self.start(timeout=timeout)

    def close(self) -> list[str]:
        """Stop the hub and kill every process it left; return what had to be killed."""
        try:
            self.stop()
        finally:
            leftovers = self.leftover_processes()
            described = [_describe(p) for p in leftovers]
            _terminate(leftovers, grace=5)
            self._session.close()
        return described

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def leftover_processes(self) -> list[psutil.Process]:
        """Live processes that belong to this hub: by the marker in their environment, by having
        been seen under the hub, or as children of those; the running hub itself excluded."""
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter():
            try:
                if p.environ().get(MARKER_ENV) == self.marker:
                    found[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        for pid, created in self._seen:
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    found[pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for p in list(found.values()):
            try:
                for child in p.children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                continue
        if self.running:
            assert self.proc is not None
            found.pop(self.proc.pid, None)
        found.pop(os.getpid(), None)
        return list(found.values())

    def _record_descendants(self) -> None:
        if self.proc is None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                self._seen.add((child.pid, child.create_time()))
            except psutil.NoSuchProcess:
                continue

    def _proxy_process(self) -> psutil.Process | None:
        try:
            pid = int((self.workdir / PROXY_PID_NAME).read_text().strip())
            proxy = psutil.Process(pid)
            # a stale pid file may name a pid that now belongs to something else
            if "configurable-http-proxy" in " ".join(proxy.cmdline()):
                return proxy
        except (FileNotFoundError, ValueError, psutil.Error):
            pass
        return None

    # -- logs -----------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # -- REST API -------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the hub's REST API as `test-admin`: `api("GET", "/users/alice")`."""
        kw.setdefault("timeout", 30)
        return self._session.request(method, f"{self.api_url}/{path.lstrip('/')}", **kw)

    def get(self, url_path: str, **kw: Any) -> requests.Response:
        """GET a path through the proxy as test-admin: `get("/user/alice/api/status")`."""
        kw.setdefault("timeout", 30)
        return self._session.get(f"{self.url}/{url_path.lstrip('/')}", **kw)

    def login(self, username: str, password: str, next_url: str = "/hub/home") -> requests.Session:
        """A browser-like session logged in through the hub's login form.

        JupyterHub checks XSRF on the form: the `_xsrf` cookie from `GET /hub/login` has to come
        back as a form field, or the POST gets 403. Without `next`, a login goes on to
        `/hub/spawn`, which starts the server of a spawner that has no form; hence `next_url`.
        """
        session = requests.Session()
        session.trust_env = False
        r = session.get(f"{self.url}/hub/login", timeout=30)
        r.raise_for_status()
        xsrf = session.cookies.get("_xsrf", "")
        r = session.post(
            f"{self.url}/hub/login",
            params={"next": next_url},
            data={"username": username, "password": password, "_xsrf": xsrf},
            timeout=30,
        )
        if r.status_code != 200 or "/hub/login" in r.url:
            session.close()
            raise HubError(f"login as {username} failed: {r.status_code} at {r.url}")
        return session

    def create_user(self, name: str) -> None:
        """Create `name` unless the hub knows it already."""
        r = self.api("POST", f"/users/{name}")
        if r.status_code not in (201, 409):
            raise HubError(f"creating user {name}: {r.status_code} {r.text}")

    def start_server(
        self,
        user: str,
        options: Mapping[str, Any] | None = None,
        server_name: str = "",
        *,
        wrap: bool = False,
    ) -> requests.Response:
        """POST `/users/{user}/server[s/{name}]` and return the response (201 ready, 202 pending).

        JupyterHub 6 takes either the options themselves as the body (the form most clients
        send, used here by default) or `{"user_options": {...}, "display_name": ...}`
        (`wrap=True`). The wrapped form is used anyway when the options are empty (a bare `{}`
        means "no body", which reuses the options of the last start) or contain the keys
        `user_options` / `display_name`. `options=None` sends no body: last options again.
        """
        path = f"/users/{user}/servers/{server_name}" if server_name else f"/users/{user}/server"
        if options is None:
            return self.api("POST", path)
        options = dict(options)
        if wrap or not options or {"user_options", "display_name"} & options.keys():
            return self.api("POST", path, json={"user_options": options})
        return self.api("POST", path, json=options)

    def server_model(self, user: str, server_name: str = "") -> dict[str, Any] | None:
        """The server's entry in `GET /users/{user}`; None when the server is not active."""
        r = self.api("GET", f"/users/{user}")
        r.raise_for_status()
        return r.json().get("servers", {}).get(server_name)

    def wait_for_server(
        self,
        user: str,
        server_name: str = "",
        timeout: float = 60,
        interval: float = 0.05,
        *,
        record_processes: bool = True,
    ) -> dict[str, Any]:
        """Poll `GET /users/{user}` until the server is ready; return its model.

        Call it after the start request: a server that is neither ready nor pending has failed,
        and the error says so with the hub's log. Once ready, the hub's child processes are
        recorded for `close()` (a few ms; timing code passes `record_processes=False`).
        """
        deadline = time.monotonic() + timeout
        while True:
            model = self.server_model(user, server_name)
            if model is not None and model.get("ready"):
                if record_processes:  # close() finds the server even if the hub crashes
                    self._record_descendants()
                return model
            if model is None or not model.get("pending"):
                raise HubError(
                    f"server {user}/{server_name} is not starting (model: {model})\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise HubError(
                    f"server {user}/{server_name} not ready in {timeout} s\n{self.log_tail()}"
                )
            time.sleep(interval)

    def stop_server(
        self, user: str, server_name: str = "", timeout: float = 60, interval: float = 0.05
    ) -> None:
        """DELETE the server and wait until the hub no longer lists it."""
        path = f"/users/{user}/servers/{server_name}" if server_name else f"/users/{user}/server"
        r = self.api("DELETE", path)
        if r.status_code not in (202, 204):
            raise HubError(f"stopping {user}/{server_name}: {r.status_code} {r.text}")
        deadline = time.monotonic() + timeout
        while self.server_model(user, server_name) is not None:
            if time.monotonic() > deadline:
                raise HubError(
                    f"server {user}/{server_name} still listed after {timeout} s\n{self.log_tail()}"
                )
            time.sleep(interval)


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:200]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return str(p.pid)


def _terminate(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM, wait `grace` s, then SIGKILL."""
    for p in procs:
        try:
            p.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
