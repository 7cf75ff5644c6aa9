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

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from slicehub.common import clock
from slicehub.common.quota_client import QuotaClient

from .session import SessionMoney
from .slice_env import read

QUOTA_TIMEOUT_S = 5.0
UNREACHABLE = "The quota service cannot be reached just now; try again in a minute."


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
        return read(os.environ)

    @property
    def quota(self) -> QuotaClient | None:
        """The quota service as this server's user (None: not configured)."""
        url, token = os.environ.get("SLICEHUB_QUOTA_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
        if not (url and token):
            return None
        return QuotaClient(url, token, QUOTA_TIMEOUT_S, down=UNREACHABLE)


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
        if q is not None and s.ledger_session:
            user = os.environ.get("JUPYTERHUB_USER", "")
            try:
                view, warnings = await asyncio.gather(
                    q.session(s.ledger_session, user), q.warnings()
                )
                if view is not None:
                    out["session"] = session_shape(view)
                    out["project"] = project_shape(await q.project(view["project"]))
                out["warnings"] = [
                    {k: w[k] for k in ("id", "level", "message", "created_at")}
                    for w in warnings
                    if w["session"] == s.ledger_session
                ]
                out["quota"] = "ok"
            except (web.HTTPError, KeyError, ValueError) as e:
                self.log.warning("Slicehub status: the quota service did not answer: %s", e)
                out["quota"] = "unreachable"
        self.finish(json.dumps(out))


class ExtendHandler(SlicehubHandler):
    """POST {"minutes": N}: forwarded to the quota service, which judges the body (the one
    validator: its 400 and sentence come back as they are) and whether the project can pay."""

    @web.authenticated
    async def post(self):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "The request body is not JSON.") from None
        s, q = self.slice, self.quota
        if q is None or not s.ledger_session:
            raise web.HTTPError(409, "This server has no Slicehub session to extend.")
        # a refusal (its status and sentence) or UNREACHABLE (503) goes back as it is
        view = await q.extend(s.ledger_session, body)
        self.finish(json.dumps({"session": session_shape(view)}))


def _jupyter_server_extension_points():
    return [{"module": "slicehub.extensions.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "slicehub/api/status"), StatusHandler),
            (url_path_join(base, "slicehub/api/extend"), ExtendHandler),
        ],
    )
