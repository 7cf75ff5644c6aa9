"""The quota service's routes served in-process for the API tests: `serve(app)` puts them on a
local port; `call(port, method, path, body)` is one JSON request to `/services/quota/api/…`."""

import json

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port


def serve(app) -> tuple[HTTPServer, int]:
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    return server, port


async def call(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    """(status, answer) of one request; a GET has no body, anything else `body` (default {})."""
    url = f"http://127.0.0.1:{port}/services/quota/api/{path}"
    data = None if method == "GET" else json.dumps(body if body is not None else {})
    r = await AsyncHTTPClient().fetch(HTTPRequest(url, method=method, body=data), raise_error=False)
    return r.code, json.loads(r.body)
