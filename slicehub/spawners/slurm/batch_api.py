"""The one thing a starting server may tell the hub about itself: the port it listens on.

batchspawner registers `POST /hub/api/batchspawner`, where `batchspawner-singleuser` reports the
port it picked on the compute node (Slicehub's servers report there too, once they listen:
slicehub.extensions.port_report). batchspawner's handler sets *any* attribute the JSON names on the
spawner (`{"job_id": "...", "req_gres": "...", "cmd": [...]}`), for anyone holding the server's
token, and that token is in the user's own environment. This module replaces that handler with
one that accepts exactly `{"port": <1-65535>}`, only from the server's own token, only while that
server is starting and before it has reported a port. Nothing else can be set.

`close_batchspawner_api()` makes the swap; the hub's config calls it before JupyterHub builds its
routes (nothing happens at import time), and SlurmSliceSpawner refuses to start without it.
"""

from __future__ import annotations

import hmac
import json

from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web

ROUTE = r"/api/batchspawner"


class PortReportHandler(APIHandler):
    """POST {"port": N} with the starting server's own token."""

    @web.authenticated
    def post(self):
        user = self.current_user
        token = self.get_auth_token() or ""
        spawner = None
        for candidate in getattr(user, "spawners", {}).values():
            own = candidate.api_token or ""
            if own and hmac.compare_digest(own.encode(), token.encode()):
                spawner = candidate
                break
        if spawner is None:
            raise web.HTTPError(403, "Only a starting server may report its port, with its token.")
        body = self.get_json_body()
        if not isinstance(body, dict) or set(body) != {"port"}:
            raise web.HTTPError(400, 'A server reports its port and nothing else: {"port": N}.')
        port = body["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise web.HTTPError(400, "port must be a whole number from 1 to 65535.")
        if spawner.pending != "spawn" or spawner.port:
            raise web.HTTPError(409, "This server is not starting, or has reported its port.")
        report = getattr(spawner, "report_port", None)
        if report is not None:
            report(port)
        else:  # batchspawner's own spawners only read .port
            spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


def close_batchspawner_api(handlers: list | None = None) -> None:
    """Put PortReportHandler where batchspawner's handler is (or add it). Idempotent."""
    handlers = apihandlers.default_handlers if handlers is None else handlers
    import batchspawner  # noqa: F401  (registers its handler, which is then replaced)

    handlers[:] = [h for h in handlers if h[0] != ROUTE]
    handlers.append((ROUTE, PortReportHandler))


def batchspawner_api_closed(handlers: list | None = None) -> bool:
    handlers = apihandlers.default_handlers if handlers is None else handlers
    return [h[1] for h in handlers if h[0] == ROUTE] == [PortReportHandler]
