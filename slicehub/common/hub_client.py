"""The hub's REST API as Slicehub's hub-managed services call it, each with its own token: the
quota service (stop a server whose session ended, list what runs) and the classroom service
(make a rostered student's hub user, start and stop their server, read their servers' states).

Decides which calls there are and how their answers read; who may make them is the token's
role (hub_config, `slicehub.hub`). Every call has a timeout; an answer the caller cannot act on
is logged and reported as "could not say" (None or False), never as a fact.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

log = logging.getLogger("slicehub.hub_client")

READY, PENDING, STOPPED = "ready", "pending", "stopped"


class HubClient:
    """The hub API at `api_url` (…/hub/api), with `token`."""

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.http = AsyncHTTPClient()

    async def request(self, method: str, path: str, headers: dict | None = None, body=None):
        req = HTTPRequest(
            self.api_url + "/" + path.lstrip("/"),
            method=method,
            headers={"Authorization": f"token {self.token}", **(headers or {})},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        return await self.http.fetch(req, raise_error=False)

    async def stop_server(self, user: str, server_name: str) -> bool:
        path = _server_path(user, server_name)
        r = await self.request("DELETE", path)
        if r.code in (202, 204, 404):
            return True
        if r.code == 400 and b"not running" in (r.body or b""):
            return True
        log.warning("Hub answered %s when asked to stop %s/%s", r.code, user, server_name)
        return False

    async def start_server(self, user: str, options: dict, server_name: str = "") -> str:
        """Ask the hub to start `user`'s server with `options`: "" when it is starting or
        running, else the hub's reason (its message, e.g. the spawner's refusal)."""
        r = await self.request("POST", _server_path(user, server_name), body=options)
        if r.code in (201, 202):
            return ""
        message = _message(r)
        if r.code == 400 and "already running" in message:
            return ""
        return f"{r.code}: {message}"

    async def ensure_user(self, user: str) -> bool:
        """Make `user` a hub user unless they are one already (True), or say why not."""
        r = await self.request("POST", f"/users/{quote(user, safe='')}")
        if r.code in (201, 409):
            return True
        log.warning("Hub answered %s when asked to add user %s: %s", r.code, user, _message(r))
        return False

    async def users(self) -> dict[str, dict[str, str]] | None:
        """Every hub user's servers and their state: {user: {server name: ready|pending|
        stopped}} (a user without a server maps to {}); None when the hub could not say."""
        found: dict[str, dict[str, str]] = {}
        async for user in self._users(""):
            if user is None:
                return None
            found[user["name"]] = {
                name: READY if s.get("ready") else PENDING if s.get("pending") else STOPPED
                for name, s in (user.get("servers") or {}).items()
            }
        return found

    async def active_servers(self) -> set[tuple[str, str]] | None:
        """(user, server name) of every server the hub has running or starting; None when the
        hub could not say (then nothing may be concluded from it)."""
        found: set[tuple[str, str]] = set()
        async for user in self._users("state=active&"):
            if user is None:
                return None
            found.update((user["name"], name) for name in user.get("servers", {}))
        return found

    async def _users(self, query: str):
        """Every user the hub lists (with `query`), page by page; a None when a page failed."""
        offset = 0
        while True:
            r = await self.request(
                "GET",
                f"/users?{query}offset={offset}&limit=200",
                {"Accept": "application/jupyterhub-pagination+json"},
            )
            if r.code != 200:
                log.warning("Hub answered %s when asked for its users", r.code)
                yield None
                return
            page = json.loads(r.body)
            for user in page["items"]:
                yield user
            following = page["_pagination"].get("next")
            if not following:
                return
            offset = following["offset"]


def _server_path(user: str, server_name: str) -> str:
    user = quote(user, safe="")
    return (
        f"/users/{user}/servers/{quote(server_name, safe='')}"
        if server_name
        else f"/users/{user}/server"
    )


def _message(r) -> str:
    try:
        return str(json.loads(r.body or b"{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return (r.body or b"")[:300].decode(errors="replace")
