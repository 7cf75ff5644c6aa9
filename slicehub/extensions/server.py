"""Slicehub's Jupyter server extension: what the JupyterLab status bar shows, and Extend.

Endpoints under the server's base URL, for whoever may access this server (its user; the
culler service with `access:servers`):

- GET `slicehub/api/status`: the slice (from the environment), the session's time and money
  and the project's balance (from the quota service), the session's warnings, its parking (the
  quota service's warning and park time, and whether this server was asked to park), the
  server's clock. Money in integer cents. A poll marks its front end as connected.
- POST `slicehub/api/extend` {"minutes": N}: asks the quota service for N more minutes; the
  session with its new end, or the service's refusal (its status and sentence).
- GET `slicehub/api/activity`: the activity reading idle parking decides on
  (`slicehub.extensions.activity`); POST {"keep": bool}: the browser's activity, answered with
  the same reading.
- POST `slicehub/api/park` {"wait_seconds": 1..60}: the culler, before it parks: asks every
  connected front end to save all, waits for their acknowledgements (POST `slicehub/api/park/saved`
  {"saved": N, "failed": N}).

A front end names itself with a random client id, `?client=` or the `X-Slicehub-Client` header,
on status and park/saved. None of these requests counts as activity for
jupyter_server (`_track_activity = False`): a status bar polling every 10 s must not keep an idle
server alive. Bodies are checked here: a JSON object with only the named fields, or a 400 with a
sentence.

The quota service is asked with the server's own token (`JUPYTERHUB_API_TOKEN`; the hub's
`server` role lets it read and extend its user's sessions) at `SLICEHUB_QUOTA_URL`. When the
service cannot be reached, status says so (`"quota": "unreachable"`) rather than failing.
The JupyterLab side is `labextension/` (`@slicehub/status`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import ioloop, web

from slicehub.common import clock
from slicehub.common.environment import PREWARM
from slicehub.common.quota_client import QuotaClient

from . import port_report
from .activity import ANONYMOUS, SAMPLE_S, Activity
from .claim import WAITING, Claim, watch_requests
from .session import SessionMoney
from .slice_env import read

QUOTA_TIMEOUT_S = 5.0
UNREACHABLE = "The quota service cannot be reached just now; try again in a minute."
ACTIVITY = "slicehub_activity"  # the web app's setting that holds this server's Activity
CLAIM = "slicehub_claim"  # ... and its Claim (a pre-warmed class server's)
CLIENT_HEADER = "X-Slicehub-Client"
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_DOCUMENTS = 100_000


class BodyError(ValueError):
    """A request body this server refuses; the message is the 400's sentence."""


def json_object(raw: bytes, allowed: tuple[str, ...]) -> dict:
    """The body as a JSON object holding no field outside `allowed`."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BodyError("The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise BodyError("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BodyError(
            f"Unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"this request takes {', '.join(map(repr, allowed))}."
        )
    return body


def whole_number(body: dict, name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BodyError(f"{name!r} must be a whole number from {low} to {high}; got {value!r}.")
    return value


def parse_activity(raw: bytes) -> bool:
    """{"keep": bool} -> keep ("Keep working" pressed)."""
    keep = json_object(raw, ("keep",)).get("keep", False)
    if not isinstance(keep, bool):
        raise BodyError(f"'keep' must be true or false; got {keep!r}.")
    return keep


def parse_park(raw: bytes) -> int:
    """{"wait_seconds": 1..60} -> how long to wait for the front ends (default 20)."""
    return whole_number(json_object(raw, ("wait_seconds",)), "wait_seconds", 1, 60, 20)


def parse_saved(raw: bytes) -> tuple[int, int]:
    """{"saved": N, "failed": N} -> (documents saved, documents that could not be saved)."""
    body = json_object(raw, ("saved", "failed"))
    return (
        whole_number(body, "saved", 0, MAX_DOCUMENTS, 0),
        whole_number(body, "failed", 0, MAX_DOCUMENTS, 0),
    )


def parking_shape(view: dict | None, requested: bool) -> dict | None:
    """The status bar's parking: the quota service's warning (its session view's `parking`),
    and whether this server was asked to park; None when neither. `idle_seconds` is filled in
    from this server's own reading (fresher than the service's: "Keep working" shows at once)."""
    parked = (view or {}).get("parking")
    if not parked and not requested:
        return None
    parked = parked or {}
    return {
        "warned_at": parked.get("warned_at"),
        "park_at": parked.get("park_at"),
        "idle_seconds": None,
        "project": (view or {}).get("project"),
        "requested": requested,
    }


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
    auth_resource = "slicehub"
    _track_activity = False  # reading or polling this server is not working in it

    @property
    def slice(self):
        return read(os.environ)

    @property
    def activity(self) -> Activity:
        return self.settings[ACTIVITY]

    @property
    def client_id(self) -> str:
        """The front end's client id (`?client=` or the header); ANONYMOUS when it sends none."""
        raw = self.get_query_argument("client", None) or self.request.headers.get(CLIENT_HEADER)
        if raw is None:
            return ANONYMOUS
        if not CLIENT_ID.fullmatch(raw):
            raise web.HTTPError(400, "The client id must be 1 to 64 letters, digits, - or _.")
        return raw

    def body(self, parse):
        try:
            return parse(self.request.body)
        except BodyError as e:
            raise web.HTTPError(400, str(e)) from None

    async def reading(self) -> dict:
        return await self.activity.read(
            self.kernel_manager, self.session_manager, self.settings.get("terminal_manager")
        )

    @property
    def quota(self) -> QuotaClient | None:
        """The quota service as this server's user (None: not configured)."""
        return _server_quota()


def _server_quota() -> QuotaClient | None:
    """The quota service as this server's user, with its own token (None: not configured)."""
    url, token = os.environ.get("SLICEHUB_QUOTA_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not (url and token):
        return None
    return QuotaClient(url, token, QUOTA_TIMEOUT_S, down=UNREACHABLE)


class StatusHandler(SlicehubHandler):
    @web.authenticated
    @authorized
    async def get(self):
        client, now = self.client_id, clock.utcnow()
        self.activity.front_end_seen(client, now)
        requested = self.activity.park_requested(client, now)
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
            "now": clock.isoformat(now),
            "quota": "none",
            "parking": parking_shape(None, requested),
            "claim": self.settings[CLAIM].view(),  # a pre-warmed class server's
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
                    out["parking"] = parking_shape(view, requested)
                    out["project"] = project_shape(await q.project(view["project"]))
                # the session now: a claimed pre-warmed server's is the student's own
                current = view["id"] if view is not None else s.ledger_session
                out["warnings"] = [
                    {k: w[k] for k in ("id", "level", "message", "created_at")}
                    for w in warnings
                    if w["session"] == current
                ]
                out["quota"] = "ok"
            except (web.HTTPError, KeyError, ValueError) as e:
                self.log.warning("Slicehub status: the quota service did not answer: %s", e)
                out["quota"] = "unreachable"
        if out["parking"] is not None:
            out["parking"]["idle_seconds"] = (await self.reading())["idle_seconds"]
        self.finish(json.dumps(out))


class ExtendHandler(SlicehubHandler):
    """POST {"minutes": N}: forwarded to the quota service, which judges the body (the one
    validator: its 400 and sentence come back as they are) and whether the project can pay."""

    @web.authenticated
    @authorized
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


class ActivityHandler(SlicehubHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.finish(json.dumps(await self.reading()))

    @web.authenticated
    @authorized
    async def post(self):
        self.body(parse_activity)  # keep or not, it is the same activity
        self.activity.browser_activity(clock.utcnow())
        self.finish(json.dumps(await self.reading()))


class ParkHandler(SlicehubHandler):
    @web.authenticated
    @authorized
    async def post(self):
        wait = self.body(parse_park)
        self.finish(json.dumps(await self.activity.request_park(wait)))


class ParkSavedHandler(SlicehubHandler):
    @web.authenticated
    @authorized
    async def post(self):
        saved, failed = self.body(parse_saved)
        await self.activity.saved(self.client_id, saved, failed)
        self.finish(json.dumps({}))


def _jupyter_server_extension_points():
    return [{"module": "slicehub.extensions.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    # in a Slurm job: the port is the OS's choice, told to the hub once the server listens
    port_report.start(serverapp)
    settings = serverapp.web_app.settings
    s = read(os.environ)
    activity = Activity(
        started=settings["started"],
        runtime_dir=Path(jupyter_runtime_dir()),  # where the kernels write their heartbeats
        devices=s.devices,
        declared=s.declared,
        session=s.ledger_session,
    )
    settings[ACTIVITY] = activity
    # a server pre-warmed for a class is claimed by its student's first request (.claim)
    claim = Claim(
        os.environ.get("JUPYTERHUB_USER", ""),
        s.ledger_session,
        _server_quota(),
        os.environ.get(PREWARM) == "1",
    )
    settings[CLAIM] = claim
    if claim.state == WAITING:
        watch_requests(serverapp.web_app, claim)
    sampler = ioloop.PeriodicCallback(activity.sample, SAMPLE_S * 1000)
    sampler.start()
    base = settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "slicehub/api/status"), StatusHandler),
            (url_path_join(base, "slicehub/api/extend"), ExtendHandler),
            (url_path_join(base, "slicehub/api/activity"), ActivityHandler),
            (url_path_join(base, "slicehub/api/park"), ParkHandler),
            (url_path_join(base, "slicehub/api/park/saved"), ParkSavedHandler),
        ],
    )
