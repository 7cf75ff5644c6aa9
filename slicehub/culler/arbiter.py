"""Slicehub's `cull_arbiter_hook` for jupyterhub-idle-culler: read the server, ask the quota
service, and on "park" have the front ends save, release the session as parked, then let the
culler stop the server.

For each ready server, every check:
1. read `slicehub/api/activity` from the server, through the proxy, with the culler's token
   (`access:servers`); a server that does not answer, or is not a Slicehub server (no ledger
   session), is kept and the log says why: nothing is parked on a guess;
2. send the reading to the quota service (`custom:quota:parking`), with the user and server
   name as the hub gave them; it answers keep, warn or park (the warning reaches the user's
   JupyterLab through the session's status);
3. on park: `slicehub/api/park` asks the server's open JupyterLab tabs to save every document
   and waits for them (at most `save_wait` seconds); then the quota service releases the
   session as parked (charged to this moment, the rest of the hold back to the project; refused
   if activity withdrew the warning meanwhile); then True, and the culler stops the server,
   which frees the slice (the spawner's own release finds the session already closed).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta

from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from slicehub.common.money import format_money
from slicehub.common.quota_client import QuotaClient

log = logging.getLogger("slicehub.culler")

READ_TIMEOUT_S = 10.0
SAVE_WAIT_S = 20


class Arbiter:
    """`servers_url`: where the proxy serves the users' servers (the hub's own URL), `token`:
    the culler's, `quota`: the quota service as the culler."""

    def __init__(self, servers_url: str, token: str, quota: QuotaClient, save_wait=SAVE_WAIT_S):
        self.servers_url = servers_url.rstrip("/")
        self.token = token
        self.quota = quota
        self.save_wait = save_wait

    @classmethod
    def from_environment(cls, env=os.environ) -> Arbiter:
        token = env["JUPYTERHUB_API_TOKEN"]
        quota = QuotaClient(env["SLICEHUB_QUOTA_URL"], token, READ_TIMEOUT_S)
        wait = int(env.get("SLICEHUB_PARK_SAVE_WAIT", SAVE_WAIT_S))
        return cls(env["SLICEHUB_SERVERS_URL"], token, quota, wait)

    async def __call__(self, *, inactive: timedelta, inactive_limit: int, server: dict, **_):
        user, _, name = server["full_name"].partition("/")
        where = f"{user}/{name}" if name else user
        base = self.servers_url + server["url"]
        reading = await self.request("GET", url_path_join(base, "slicehub/api/activity"))
        if reading is None:
            return False
        session = reading.get("session")
        if isinstance(session, bool) or not isinstance(session, int):
            log.info("Keeping %s: its server has no Slicehub session to judge", where)
            return False
        try:
            decision = await self.quota.observe(session, user, name, reading)
        except web.HTTPError as e:
            log.warning("Keeping %s: the quota service did not decide (%s)", where, e.log_message)
            return False
        if decision.get("action") == "warn":
            log.info(
                "Warned %s: idle %s s, parked at %s unless there is activity",
                where,
                decision.get("idle_seconds"),
                decision.get("park_at"),
            )
        if decision.get("action") != "park":
            return False
        saved = await self.request(
            "POST",
            url_path_join(base, "slicehub/api/park"),
            {"wait_seconds": self.save_wait},
            timeout=self.save_wait + READ_TIMEOUT_S,
        )
        try:
            parked = await self.quota.park(session, user, name)
        except web.HTTPError as e:
            log.info("Not parking %s after all: %s", where, e.log_message)
            return False
        log.info(
            "Parking %s: idle %s s; documents saved by %s of %s open tabs; charged %s, %s of "
            "subsidy returned to the project",
            where,
            parked.get("idle_seconds"),
            (saved or {}).get("saved", 0),
            (saved or {}).get("front_ends", 0),
            format_money(parked.get("charged_list_cents", 0)),
            format_money(parked.get("returned_subsidy_cents", 0)),
        )
        return True

    async def request(self, method: str, url: str, body=None, timeout=READ_TIMEOUT_S):
        """The server extension's JSON answer; None when it does not give one (logged)."""
        req = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if method == "GET" else json.dumps(body),
            request_timeout=timeout,
            connect_timeout=READ_TIMEOUT_S,
            follow_redirects=False,
        )
        try:
            r = await AsyncHTTPClient().fetch(req)
            out = json.loads(r.body)
        except (HTTPClientError, OSError, ValueError) as e:
            log.warning("Keeping the server at %s: it did not answer %s (%s)", url, method, e)
            return None
        return out if isinstance(out, dict) else None
