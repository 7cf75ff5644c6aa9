"""The quota service's REST API, under /services/quota/api/, authenticated by the hub.

Who may do what is decided by JupyterHub scopes (see docs/quota.md and hub_config):
- any hub user with access to the service reads *their own* projects, sessions and warnings;
- `custom:quota:staff` reads everything (centre staff);
- `custom:quota:holds` opens and releases holds (the hub's spawners, through their own token).
A project the caller is not a member of answers 403, whatever its id.

A user is a member of a project by a member row, or through the project's member group when
that hub group is among theirs (`slicehub.quota.hold.membership`). The spawners say which groups
a user is in (`groups` in a hold, `?groups=` with `?user=` in the form's project list); for a
request made with the user's own token the service asks the hub (`hub_groups.UserGroups`), and
only when some project names a member group. Nobody else may say which groups a user is in.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from slicehub.common import clock
from slicehub.common.names import GROUP_NAME
from slicehub.common.quota_client import RELEASE_REASONS

from .errors import LedgerError
from .hold import HoldRequest
from .reader import LedgerReader, session_view

STAFF = "custom:quota:staff"
HOLDS = "custom:quota:holds"
METRICS = "custom:quota:metrics"
HOLD_KEYS = {
    "project",
    "user",
    "server_name",
    "slice_type",
    "duration_minutes",
    "deferred",
    "groups",
    "prewarm_window",  # a pre-warmed class server (slicehub.quota.prewarm)
}
MAX_GROUPS = 1000  # a user's hub groups in one request: far above a directory's usual few dozen


def parse_groups(value) -> frozenset[str]:
    """A user's hub groups as a request gives them: a list of group names (`GROUP_NAME`), at
    most MAX_GROUPS; anything else is a 400 with a sentence."""
    if not isinstance(value, list):
        raise web.HTTPError(400, "groups must be a list of hub group names.")
    if len(value) > MAX_GROUPS:
        raise web.HTTPError(400, f"groups lists {len(value)} groups; at most {MAX_GROUPS}.")
    for g in value:
        if not isinstance(g, str) or not GROUP_NAME.fullmatch(g):
            raise web.HTTPError(
                400,
                f"groups: {str(g)[:100]!r} is not a group name (letters, digits, '.', '_', "
                "'-', at most 100 characters).",
            )
    return frozenset(value)


class QuotaHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def ledger(self):
        return self.settings["ledger"]

    @property
    def reader(self) -> LedgerReader:
        return self.settings["reader"]

    def scopes(self) -> set[str]:
        return set((self.current_user or {}).get("scopes", ()))

    def is_staff(self) -> bool:
        return STAFF in self.scopes()

    def require(self, scope: str) -> None:
        if scope not in self.scopes():
            raise web.HTTPError(403, f"This needs the {scope} permission.")

    def username(self) -> str:
        user = self.current_user
        if user.get("kind", "user") != "user":
            raise web.HTTPError(403, "Only users have projects of their own.")
        return user["name"]

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = None
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args  # tornado doubles a '%' of a message alone
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message or self._reason}))

    def body(self, allowed: set[str]) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError:
            raise web.HTTPError(400, "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "The request body must be a JSON object.")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise web.HTTPError(
                400, f"Unknown field {unknown[0]!r}; fields: {', '.join(sorted(allowed))}."
            )
        return data

    async def in_db(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except LedgerError as e:
            raise web.HTTPError(e.status, str(e)) from None

    async def groups_of(self, username: str) -> frozenset[str]:
        """`username`'s hub groups that some project names as its member group, asked of the
        hub only when a project names one (none: membership is by rows alone)."""
        named = await self.in_db(self.reader.member_groups)
        if not named:
            return frozenset()
        return await self.settings["groups"].of(username) & named

    async def is_member(self, username: str, project: str) -> bool:
        groups = await self.groups_of(username)
        return await self.in_db(self.reader.is_member, username, project, groups)


class ProjectsHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        asked_groups = self.get_argument("groups", None)
        groups: frozenset[str] = frozenset()
        if HOLDS in self.scopes() and self.get_argument("user", None):
            who = self.get_argument("user")  # the spawner asks on a user's behalf
            if asked_groups:  # and says which groups the user is in
                groups = parse_groups(asked_groups.split(","))
        elif asked_groups is not None:
            if HOLDS in self.scopes():
                raise web.HTTPError(400, "groups are the groups of a user: give user too.")
            raise web.HTTPError(
                403,
                "Only the hub's spawners may say which groups a user is in; yours come from "
                "the hub.",
            )
        else:
            who = None if self.is_staff() else self.username()
            if who is not None:
                groups = await self.groups_of(who)
        projects = await self.in_db(self.reader.projects, who, clock.utcnow(), None, groups)
        self.write_json({"projects": projects})


class ProjectHandler(QuotaHandler):
    @web.authenticated
    async def get(self, slug):
        if not self.is_staff():
            if not await self.is_member(self.username(), slug):
                raise web.HTTPError(403, f"You are not a member of project {slug}.")
        rows = await self.in_db(self.reader.projects, None, clock.utcnow(), slug)
        if not rows:
            raise web.HTTPError(404, f"There is no project {slug}.")
        self.write_json(rows[0])


class SessionsHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        project = self.get_argument("project", None)
        active = self.get_argument("active", "0") == "1"
        if self.is_staff() or HOLDS in self.scopes():
            who = self.get_argument("user", None)
        else:
            who = self.username()
            if project and not await self.is_member(who, project):
                raise web.HTTPError(403, f"You are not a member of project {project}.")
        sessions = await self.in_db(self.reader.sessions, who, project, active)
        self.write_json({"sessions": sessions})


class WarningsHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        try:
            since = int(self.get_argument("since", "0"))
        except ValueError:
            raise web.HTTPError(400, "since must be a warning id (a whole number).") from None
        who = None if self.is_staff() else self.username()
        self.write_json({"warnings": await self.in_db(self.reader.warnings, who, since)})


class HoldsHandler(QuotaHandler):
    """POST: the hub's spawner asks to start a session: hold its cost, or refuse with why."""

    @web.authenticated
    async def post(self):
        self.require(HOLDS)
        data = self.body(HOLD_KEYS)
        for key in ("project", "user", "slice_type"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise web.HTTPError(400, f"{key} must be a non-empty string.")
        server_name = data.get("server_name", "")
        if not isinstance(server_name, str):
            raise web.HTTPError(400, "server_name must be a string.")
        minutes = data.get("duration_minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 44640:
            raise web.HTTPError(400, "duration_minutes must be a whole number from 1 to 44640.")
        deferred = data.get("deferred", False)
        if not isinstance(deferred, bool):
            raise web.HTTPError(400, "deferred must be true or false.")
        groups = parse_groups(data.get("groups", []))
        window = data.get("prewarm_window")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise web.HTTPError(400, "prewarm_window must be a class window's id (a number).")
        request = HoldRequest(
            data["project"],
            data["user"],
            server_name,
            data["slice_type"],
            timedelta(minutes=minutes),
            clock.utcnow(),
            deferred,
            groups,
            window,
        )
        try:
            session = await self.settings["holds"].hold(request)
        except LedgerError as e:
            raise web.HTTPError(e.status, str(e)) from None
        self.write_json(session_view(session, data["project"]), status=201)


class BeginHandler(QuotaHandler):
    """POST: a deferred hold's server has started (its batch job left the queue): meter from
    now, for the length that was held."""

    @web.authenticated
    async def post(self, session_id):
        self.require(HOLDS)
        self.body(set())
        s = await self.in_db(self.ledger.begin, int(session_id), clock.utcnow())
        self.write_json(
            {
                "id": s.id,
                "begun": s.begun,
                "started_at": s.started_at.isoformat(),
                "end_at": s.end_at.isoformat(),
            }
        )


class ExtendHandler(QuotaHandler):
    """POST {"minutes": N}: hold N more minutes for one of the caller's own active sessions
    (staff and the spawners: anyone's). 200 with the session (its new end), or the refusal's
    sentence (402 when the project cannot pay) and nothing changed."""

    @web.authenticated
    async def post(self, session_id):
        data = self.body({"minutes"})
        minutes = data.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise web.HTTPError(400, "minutes must be a whole number of minutes.")
        who = None if self.is_staff() or HOLDS in self.scopes() else self.username()
        # the session's user may be a member through a project's member group: their groups
        owner = who or await self.in_db(self.reader.session_owner, int(session_id))
        groups = await self.groups_of(owner) if owner else frozenset()
        s, project = await self.in_db(
            self.ledger.extend,
            int(session_id),
            who,
            timedelta(minutes=minutes),
            clock.utcnow(),
            groups,
        )
        self.write_json(session_view(s, project))


class ReleaseHandler(QuotaHandler):
    """POST: the server stopped; charge to when it stopped (`stopped_at`, when the spawner
    knows it, e.g. from the batch system's accounting; never later than now) and release the
    rest of the hold. `reason` (one of RELEASE_REASONS; default "stopped") says why, and is
    kept as the session's stop reason."""

    @web.authenticated
    async def post(self, session_id):
        self.require(HOLDS)
        data = self.body({"stopped_at", "reason"})
        reason = data.get("reason", "stopped")
        if reason not in RELEASE_REASONS:
            raise web.HTTPError(
                400, f"reason must be one of {', '.join(RELEASE_REASONS)}, not {reason!r:.40}."
            )
        now = clock.utcnow()
        at = now
        if data.get("stopped_at") is not None:
            try:
                at = datetime.fromisoformat(data["stopped_at"])
            except (TypeError, ValueError):
                raise web.HTTPError(400, "stopped_at must be an ISO 8601 time.") from None
            if at.tzinfo is None:
                raise web.HTTPError(400, "stopped_at needs a time zone.")
            at = min(at, now)
        s = await self.in_db(self.ledger.close_session, int(session_id), at, reason)
        self.write_json(
            {"id": s.id, "status": s.status, "charged_list_cents": s.charged_list_cents}
        )


class HealthHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "ok"}))
