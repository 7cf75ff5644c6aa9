"""The port a server in a Slurm job listens on, told to the hub once it listens.

batchspawner's `batchspawner-singleuser` picks a port (binds port 0, reads it, closes it),
reports it to the hub, and only then starts the server, seconds later (imports, extensions,
a warm kernel). In that gap any process on the node that binds port 0 may be handed the same
port: a kernel's ZMQ sockets, a Dask scheduler or worker, another student's server. The server
then exits with "port … is not available" and the hub waits its whole `http_timeout` for an
answer that never comes. Measured here: one class server of 40 on one machine; reported by a
centre with 30 students on 8-GPU nodes (batchspawner#58) and as jupyterhub#3005.

So a Slicehub server in a Slurm job (`SLICEHUB_REPORT_PORT=1`, set by the Slurm spawner) asks
the OS for a port when it binds (`ServerApp.port = 0`), and reports that port once it accepts
connections: `POST $JUPYTERHUB_API_URL/batchspawner {"port": N}` with its own token, the one
report the hub's handler takes per start (slicehub.spawners.slurm.batch_api). A hub that does not
answer is asked again with backoff; a refusal (the start was cancelled) is logged and ends it.
What is left of the race is jupyter_server's own: it binds port 0, closes, and binds that port
again a moment later, within the same start-up step, not seconds apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from slicehub.common.environment import REPORT_PORT

log = logging.getLogger("slicehub.port_report")

LISTEN_TIMEOUT_S = 120.0  # the server's own start-up, on a loaded node
REPORT_TIMEOUT_S = 300.0  # a hub restarting meanwhile: its spawn times out before this
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 10.0


def wanted(env=os.environ) -> bool:
    """Whether this server must bind a port of the OS's choosing and report it."""
    return env.get(REPORT_PORT) == "1"


def bind_any_port(serverapp) -> None:
    """Before jupyter_server binds (a server extension loads first): let the OS pick the port."""
    serverapp.port = 0


def connect_host(ip: str) -> str:
    """Where this machine reaches a server bound to `ip` ("" and 0.0.0.0: every interface)."""
    if ip in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if ip == "::":
        return "::1"
    return ip


async def wait_listening(host: str, port: int, timeout: float = LISTEN_TIMEOUT_S) -> None:
    """Until a connection to host:port is accepted (TimeoutError after `timeout` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


def _ssl_options(env) -> dict:
    """The hub's internal TLS (JupyterHub's internal_ssl), as the server's own HubAuth has it."""
    options = {}
    if env.get("JUPYTERHUB_SSL_CERTFILE") and env.get("JUPYTERHUB_SSL_KEYFILE"):
        options["client_cert"] = env["JUPYTERHUB_SSL_CERTFILE"]
        options["client_key"] = env["JUPYTERHUB_SSL_KEYFILE"]
    if env.get("JUPYTERHUB_SSL_CLIENT_CA"):
        options["ca_certs"] = env["JUPYTERHUB_SSL_CLIENT_CA"]
    return options


async def send(
    port: int, env=os.environ, timeout: float = REPORT_TIMEOUT_S, log: logging.Logger = log
) -> bool:
    """Report `port` to the hub; True once it took it, False when it refused (or never answered
    within `timeout`). Connection failures and 5xx are asked again, with backoff."""
    request = HTTPRequest(
        url_path_join(env["JUPYTERHUB_API_URL"], "batchspawner"),
        method="POST",
        headers={
            "Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
        body=json.dumps({"port": port}),
        request_timeout=30,
        **_ssl_options(env),
    )
    client = AsyncHTTPClient()
    loop = asyncio.get_running_loop()
    deadline, wait = loop.time() + timeout, FIRST_RETRY_S
    while True:
        try:
            await client.fetch(request)
            return True
        except HTTPClientError as e:
            if e.code < 500 and e.code != 599:  # 599: tornado's own, no answer at all
                body = e.response.body.decode(errors="replace")[:300] if e.response else ""
                log.error("The hub refused this server's port %s (%s): %s", port, e.code, body)
                return False
            why = str(e)
        except OSError as e:
            why = str(e)
        if loop.time() + wait > deadline:
            log.error("Could not tell the hub this server's port %s: %s", port, why)
            return False
        log.warning("The hub did not take this server's port %s yet (%s); again in %.1f s",
                    port, why, wait)  # fmt: skip
        await asyncio.sleep(wait)
        wait = min(wait * 2, MAX_RETRY_S)


async def report_when_listening(serverapp, env=os.environ) -> None:
    """Once the server accepts connections on the port the OS gave it, tell the hub."""
    log = serverapp.log
    try:
        # jupyter_server picked the port at its initialisation; it binds on the loop's first turn
        await wait_listening(connect_host(serverapp.ip), serverapp.port)
    except TimeoutError as e:
        log.error("This server does not listen, so its port is not reported: %s", e)
        return
    # JUPYTERHUB_SERVICE_URL keeps the spawner's port 0: a warm kernel is handed to a notebook
    # only when their environments match (.warm_kernel), and nothing reads the port from it
    # after jupyterhub-singleuser's start-up (which ServerApp.port = 0 has overridden)
    if await send(serverapp.port, env, log=log):
        log.info("Told the hub this server listens on port %s", serverapp.port)


def start(serverapp, env=os.environ) -> bool:
    """At the server extension's load: when the Slurm spawner asked for it, bind a port of the
    OS's choosing and report it once the loop runs (True); otherwise nothing (False)."""
    if not wanted(env):
        return False
    bind_any_port(serverapp)
    serverapp.io_loop.add_callback(report_when_listening, serverapp, env)
    return True
