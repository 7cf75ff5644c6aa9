"""Slicehub's Jupyter server extension: what the JupyterLab status bar shows, and Extend.

Two endpoints under the server's base URL, for the logged-in user of this server only:

- GET `slicehub/api/status`: the slice (from the environment), the session's time and money
  and the project's balance (from the quota service), the session's warnings, the server's
  clock. Money in integer cents.
- POST `slicehub/api/extend` {"minutes": N}: asks the quota service for N more minutes; the
  session with its new end, or the service's refusal (its status and sentence).

The quota service is asked with the server's own token (`JUPYTERHUB_API_TOKEN`; the hub's
`server` role lets it read and extend its user's sessions) at `SLICEHUB_QUOTA_URL`. When the
service cannot be reached, status says so (`"quota": "unreachable"`) rather than failing.
The JupyterLab side is `labextension/` (`@slicehub/status`).
"""

from __future__ import annotations

import asyncio
import json
import os

import psutil
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from quota import clock

from .session import SessionMoney
from .slice_env import parse

QUOTA_TIMEOUT_S = 5.0
EXTEND_CHOICES = range(1, 24 * 60 + 1)  # minutes; the ledger says the same


class QuotaUnreachable(Exception):
    pass


class Quota:
    """The quota service's API, as this server's user."""

    def __init__(self, env):
        self.base = env.get("SLICEHUB_QUOTA_URL", "").rstrip("/")
        self.token = env.get("JUPYTERHUB_API_TOKEN", "")

    @property
    def configured(self) -> bool:
        return bool(self.base and self.token)

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """The JSON answer; HTTPClientError for a refusal (4xx with the service's sentence),
        QuotaUnreachable when there is no answer."""
        request = HTTPRequest(
            f"{self.base}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            request_timeout=QUOTA_TIMEOUT_S,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.code >= 500 or e.code == 599 or e.response is None:
                raise QuotaUnreachable(str(e)) from None
            raise
        except OSError as e:
            raise QuotaUnreachable(str(e)) from None
        return json.loads(response.body)


def session_shape(v: dict) -> dict:
    """The quota service's session view as the status bar reads it (cents)."""
    m = SessionMoney.from_view(v)
    return {
        "id": v["id"],
        "project": v["project"],
        "status": v["status"],
        "started_at": v["started_at"],
        "end_at": v["end_at"],
        "held": {
            "list": m.held_list,
            "subsidy": v["hold_subsidy_cents"],
            "copay": m.held_list - v["hold_subsidy_cents"],
        },
        "spent": {"list": m.spent_list, "subsidy": m.spent_subsidy, "copay": m.spent_copay},
        "left": {"subsidy": m.subsidy_left, "copay": m.copay_left},
    }


def project_shape(p: dict) -> dict:
    return {
        "slug": p["project"],
        "subsidy_left": p["subsidy_left_cents"],
        "credit_left": p["credit_left_cents"],
        "policy": p["policy"],
    }


class SlicehubHandler(APIHandler):
    @property
    def slice(self):
        return parse(os.environ, psutil.cpu_count() or 1, psutil.virtual_memory().total)

    @property
    def quota(self) -> Quota:
        return Quota(os.environ)


class StatusHandler(SlicehubHandler):
    @web.authenticated
    async def get(self):
        s = self.slice
        out = {
            "slice": (
                {"type": s.slice_type, "description": s.description, "declared": s.declared}
                if s.slice_type
                else None
            ),
            "session": None,
            "project": None,
            "warnings": [],
            "now": clock.isoformat(clock.utcnow()),
            "quota": "none",
        }
        q = self.quota
        if q.configured and s.ledger_session:
            try:
                sessions, warnings = await asyncio.gather(
                    q.call("GET", "sessions?active=1"), q.call("GET", "warnings")
                )
                view = next((v for v in sessions["sessions"] if v["id"] == s.ledger_session), None)
                if view is not None:
                    out["session"] = session_shape(view)
                    project = await q.call("GET", f"projects/{view['project']}")
                    out["project"] = project_shape(project)
                out["warnings"] = [
                    {k: w[k] for k in ("id", "level", "message", "created_at")}
                    for w in warnings["warnings"]
                    if w["session"] == s.ledger_session
                ]
                out["quota"] = "ok"
            except (QuotaUnreachable, HTTPClientError, KeyError, ValueError) as e:
                self.log.warning("Slicehub status: the quota service did not answer: %s", e)
                out["quota"] = "unreachable"
        self.finish(json.dumps(out))


class ExtendHandler(SlicehubHandler):
    @web.authenticated
    async def post(self):
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "The request body is not JSON.") from None
        if not isinstance(data, dict) or set(data) != {"minutes"}:
            raise web.HTTPError(400, 'Send {"minutes": N}.')
        minutes = data["minutes"]
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int)
            or minutes not in EXTEND_CHOICES
        ):
            raise web.HTTPError(400, "minutes must be a whole number from 1 to 1440.")
        s, q = self.slice, self.quota
        if not (q.configured and s.ledger_session):
            raise web.HTTPError(409, "This server has no Slicehub session to extend.")
        try:
            view = await q.call("POST", f"sessions/{s.ledger_session}/extend", {"minutes": minutes})
        except HTTPClientError as e:
            raise web.HTTPError(e.code, _message(e)) from None
        except QuotaUnreachable:
            raise web.HTTPError(
                503, "The quota service cannot be reached just now; try again in a minute."
            ) from None
        self.finish(json.dumps({"session": session_shape(view)}))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) else None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message or self._reason}))


def _message(e: HTTPClientError) -> str:
    try:
        return json.loads(e.response.body)["message"]
    except (AttributeError, ValueError, KeyError, TypeError):
        return f"The quota service refused ({e.code})."


def _jupyter_server_extension_points():
    return [{"module": "extensions.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "slicehub/api/status"), StatusHandler),
            (url_path_join(base, "slicehub/api/extend"), ExtendHandler),
        ],
    )
