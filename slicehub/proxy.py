"""The hub's proxy, as JupyterHub's ConfigurableHTTPProxy with what a restart after a crash needs.

Its auth token is kept in the data dir (0600, `slicehub.hub`), so a hub that restarts after a
`kill -9` speaks to a proxy that outlived it with the same token instead of minting a new one and
being refused.

Decided here: a proxy left by a crashed hub is **replaced**, never re-adopted. Before it starts
its proxy, the hub stops every configurable-http-proxy of this deployment (one started with this
deployment's token) that still listens on the proxy's public or API port, whatever the pid file
says; JupyterHub then starts a fresh one and puts every running server's route back (it checks
the routes at start-up), and the servers themselves never stop. JupyterHub does the same for the
proxy its pid file names; the pid file may name a process that no longer exists while the old
proxy holds the ports (seen in the field), and then a new proxy could not bind, died, and was
restarted by `check_running` again and again. Re-adopting was not chosen: the old proxy runs
with the old hub's command line (SSL files, log level, error target), writes to the old hub's
output, and is not the hub's child, so JupyterHub could not watch it with `poll()`.

A configurable-http-proxy on those ports with another token belongs to someone else (another
deployment, or a proxy from before the token was kept): it is never stopped, and the hub stops
with a sentence naming its pid. A pid file naming a pid that the system has since given to
another program is not acted on either (JupyterHub's own check only asks whether the pid lives).

Does not decide the proxy's routes (JupyterHub's) or its token (`slicehub.hub`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psutil
from jupyterhub.proxy import ConfigurableHTTPProxy

PROXY_PROGRAM = "configurable-http-proxy"
TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL; configurable-http-proxy exits at once


@dataclass(frozen=True)
class ProxyProcess:
    """A running configurable-http-proxy, as seen from outside."""

    pid: int
    ports: frozenset[int]  # the TCP ports it listens on
    token: str | None  # its CONFIGPROXY_AUTH_TOKEN; None when it has none


def is_proxy_command(cmdline: Sequence[str]) -> bool:
    """Whether a process's command line runs configurable-http-proxy: the program itself, or
    node (nodejs) running its script, which is what the script's `#!/usr/bin/env node` makes of
    it. Only the program and the script count, so a process that merely names the proxy in its
    arguments (an editor, a `grep`) is not taken for it."""
    if not cmdline:
        return False
    program, *rest = cmdline
    if Path(program).name == PROXY_PROGRAM:
        return True
    script = next((word for word in rest if not word.startswith("-")), "")
    return Path(program).name.startswith("node") and Path(script).name == PROXY_PROGRAM


def tcp_ports(*urls: str) -> frozenset[int]:
    """The TCP ports of http(s) URLs; a Unix socket (http+unix) has none."""
    ports = set()
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            ports.add(parsed.port or (443 if parsed.scheme == "https" else 80))
    return frozenset(ports)


def leftover_proxies(
    proxies: Iterable[ProxyProcess], ports: frozenset[int], token: str
) -> tuple[list[ProxyProcess], list[ProxyProcess]]:
    """Of the proxies that hold one of `ports`: those of this deployment (started with `token`),
    to be stopped, and those of someone else, never to be touched."""
    holding = [p for p in proxies if p.ports & ports]
    ours = [p for p in holding if token and p.token == token]
    return ours, [p for p in holding if p not in ours]


def running_proxies() -> list[tuple[ProxyProcess, psutil.Process]]:
    """Every configurable-http-proxy this process may inspect, with its psutil handle (which
    refuses to signal a pid reused since). Reads /proc: run it in a thread."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if not is_proxy_command(process.info["cmdline"] or ()):
            continue
        try:
            ports = frozenset(
                c.laddr.port
                for c in process.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN
            )
            token = process.environ().get(TOKEN_ENV)
        except psutil.Error:  # gone meanwhile, or another user's: not one of ours
            continue
        found.append((ProxyProcess(process.pid, ports, token), process))
    return found


def stop_processes(processes: list[psutil.Process], grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL what has not ended after `grace` seconds; return once all have
    ended or the second grace is over. A zombie has ended: its ports are closed, and a dead
    hub's proxy waits for init to reap it, which may take a while."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in processes if not ended(p)]
        if not alive:
            return
        for process in alive:
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + grace
        while not all(ended(p) for p in alive) and time.monotonic() < deadline:
            time.sleep(0.1)


def ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class SlicehubProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy, started and watched by the hub; a proxy left by a crashed hub
    is stopped first (see the module docstring)."""

    async def start(self):
        await asyncio.to_thread(self.stop_leftover_proxies)
        await super().start()

    def stop_leftover_proxies(self) -> None:
        """Stop this deployment's proxies that hold our ports; refuse to start beside a foreign
        one. Blocks (reads /proc, waits for the processes): `start` runs it in a thread."""
        ports = tcp_ports(self.public_url, self.api_url)
        found = running_proxies()
        ours, foreign = leftover_proxies((p for p, _ in found), ports, self.auth_token)
        if foreign:
            pids = ", ".join(str(p.pid) for p in foreign)
            raise RuntimeError(
                f"configurable-http-proxy (pid {pids}) listens on a port this hub's proxy needs "
                f"({', '.join(map(str, sorted(ports)))}) and was not started with this "
                "deployment's proxy token (proxy_auth_token in the data dir). Fix: stop that "
                "proxy, or give this hub other ports (bind_url, ConfigurableHTTPProxy.api_url)"
            )
        if not ours:
            return
        handles = {p.pid: handle for p, handle in found}
        for p in ours:
            self.log.warning(
                "configurable-http-proxy pid %s, left by a hub that did not stop it, still "
                "listens on %s; stopping it so a fresh proxy can take the ports and every "
                "running server's route",
                p.pid,
                ", ".join(map(str, sorted(p.ports))),
            )
        stop_processes([handles[p.pid] for p in ours])

    def _check_pid(self, pid):
        """Raise ProcessLookupError unless `pid` is a live configurable-http-proxy: JupyterHub
        stops whatever lives at the pid in its pid file, and after a crash the system may have
        given that pid to another program."""
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:  # gone, a zombie, or another user's: not a proxy of ours
            raise ProcessLookupError(pid) from None
        if not is_proxy_command(cmdline):
            raise ProcessLookupError(pid)
