"""How Slicehub talks to the quota service's REST API: the spawners (hold before a start,
begin, release after a stop) and the notebook side (a session's time and money, Extend).

Every failure becomes a sentence for the user. A refusal from the ledger is passed on with its
status ("Project ai-lab has HK$41.20 of subsidy left; …"); a quota service that does not answer
refuses new starts (nothing can be paid for) but never touches running servers.

One client, two faces: its calls are coroutines; `client.blocking` makes the same calls from
synchronous code (a kernel's `%slicehub`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import quote

from jupyterhub.utils import exponential_backoff, url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .names import GROUP_NAME

log = logging.getLogger("slicehub.quota_client")

# Why a session is released, as the spawner knows it: its server was stopped (by the user, the
# hub, an admin or the quota service at the session's end), found gone without a stop (a crash,
# a kill behind the hub's back), or never started (a start that failed or was cancelled).
RELEASE_REASONS = ("stopped", "crashed", "start-failed")

DOWN = (
    "The quota service is not answering, so no new session can start right now; running "
    "sessions are not affected. Please try again in a minute."
)


def group_names(groups: Iterable[str]) -> list[str]:
    """The user's hub groups that a project could name as its member group (`GROUP_NAME`),
    sorted, once each. A group named otherwise (a directory's "Domain Users") can make nobody a
    member, and the quota service would refuse the whole request for it."""
    return sorted({g for g in groups if GROUP_NAME.fullmatch(g)})


class QuotaClient:
    """`down`: the sentence a caller's user reads when the service does not answer (a 503)."""

    def __init__(self, url: str, token: str, timeout: float = 10, down: str = DOWN):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.down = down

    @property
    def blocking(self) -> Blocking:
        """This client's calls for synchronous code: `client.blocking.session(7, "ann")`."""
        return Blocking(self)

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        req = HTTPRequest(
            url_path_join(self.url, path),
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if method == "GET" else json.dumps(body),
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            r = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            if e.response is None or (e.code >= 500 and e.code != 503):
                raise web.HTTPError(503, self.down) from None
            try:
                message = json.loads(e.response.body)["message"]
            except (ValueError, KeyError, TypeError):
                message = f"The quota service refused the request ({e.code})."
            raise web.HTTPError(e.code, message) from None
        except OSError:
            raise web.HTTPError(503, self.down) from None
        return json.loads(r.body) if r.body else {}

    async def projects(self, user: str, groups: Iterable[str] = ()) -> list[dict]:
        """`user`'s projects (the spawners' token), by member row or through a project's
        member group among `groups`, the user's hub groups."""
        names = group_names(groups)
        query = f"user={quote(user)}" + (f"&groups={quote(','.join(names))}" if names else "")
        return (await self._call("GET", f"api/projects?{query}"))["projects"]

    async def session(self, session_id: int, user: str) -> dict | None:
        """The ledger's view of `user`'s active session `session_id` (None: not active): for a
        pre-warmed server its student claimed, the student's session it was handed to."""
        found = await self._call("GET", f"api/sessions?user={quote(user)}&active=1")
        return next(
            (s for s in found["sessions"] if session_id in (s["id"], s.get("claimed_from"))),
            None,
        )

    async def last_session(self, user: str, server_name: str) -> dict | None:
        """The newest session of `user`'s server `server_name`, active or ended (None: none)."""
        found = await self._call("GET", f"api/sessions?user={quote(user)}")
        return next((s for s in found["sessions"] if s["server_name"] == server_name), None)

    async def extend(self, session_id: int, body) -> dict:
        """Ask for more time for a session; `body` ({"minutes": N}) is the quota service's to
        judge, and its refusal comes back as an HTTPError with its status and sentence."""
        return await self._call("POST", f"api/sessions/{int(session_id)}/extend", body)

    async def warnings(self) -> list[dict]:
        return (await self._call("GET", "api/warnings"))["warnings"]

    async def project(self, slug: str) -> dict:
        return await self._call("GET", f"api/projects/{quote(slug)}")

    async def observe(self, session_id: int, user: str, server_name: str, reading: dict) -> dict:
        """The culler's reading of `user`'s server `server_name` (its extension's answer, as
        it came): the quota service's decision, `{"action": "keep"|"warn"|"park", ...}`."""
        body = {"user": user, "server_name": server_name, "reading": reading}
        return await self._call("POST", f"api/sessions/{int(session_id)}/activity", body)

    async def park(self, session_id: int, user: str, server_name: str) -> dict:
        """Release the session as parked, now (only while its idle warning stands)."""
        body = {"user": user, "server_name": server_name}
        return await self._call("POST", f"api/sessions/{int(session_id)}/park", body)

    async def hold(
        self,
        project,
        user,
        server_name,
        slice_type,
        minutes,
        deferred: bool = False,
        groups: Iterable[str] = (),
        prewarm_window: int | None = None,
    ) -> dict:
        """Hold the cost of `minutes` on `slice_type`. `deferred`: the server waits in a
        batch queue first; metering starts with `begin`, so queued time is not charged.
        `groups`: the user's hub groups (they may be a member through a project's group).
        `prewarm_window`: a server pre-warmed for that class window of course `project`
        (held on the course's pre-warm payer until its student claims it)."""
        body = {
            "project": project,
            "user": user,
            "server_name": server_name,
            "slice_type": slice_type,
            "duration_minutes": minutes,
            "deferred": deferred,
            "groups": group_names(groups),
        }
        if prewarm_window is not None:
            body["prewarm_window"] = prewarm_window
        return await self._call("POST", "api/holds", body)

    async def classes(self) -> list[dict]:
        """The plan of every class window of a pre-warming course ahead (the classroom
        service's token: `custom:quota:classes`)."""
        return (await self._call("GET", "api/classes"))["classes"]

    async def release_unclaimed(self, session_id: int) -> dict:
        """Release a pre-warmed session nobody claimed in time, as "unclaimed" (a claimed one
        is left as it is: its `stop_reason` says so)."""
        return await self._call("POST", f"api/sessions/{int(session_id)}/unclaimed", {})

    async def claim(self, session_id: int) -> dict:
        """The server's own user claims its pre-warmed session (the server's token): the
        student's own session, or the refusal (425: the class has not started yet)."""
        return await self._call("POST", f"api/sessions/{int(session_id)}/claim", {})

    async def begin(self, session_id: int) -> dict:
        """The deferred session's server has started: metering starts now."""
        return await self._call("POST", f"api/sessions/{int(session_id)}/begin", {})

    async def release_stale(self, user: str, server_name: str) -> bool:
        """Release any session the ledger still has active for this server; True if one was.

        The hub starts a server only when it is not running, so such a session is stale: its
        hold answered after the spawner had given up waiting (a timeout, a restart)."""
        sessions = (await self._call("GET", f"api/sessions?user={quote(user)}&active=1"))[
            "sessions"
        ]
        stale = [s for s in sessions if s["server_name"] == server_name]
        for s in stale:
            log.warning("Releasing stale ledger session %s of %s/%s", s["id"], user, server_name)
            await self.release(s["id"])
        return bool(stale)

    async def release(
        self,
        session_id: int,
        stopped_at: datetime | None = None,
        attempts_timeout: float = 60,
        reason: str = "stopped",
    ) -> None:
        """Release with retries: a stopped server must stop being charged. `stopped_at`: when
        it stopped, if known (default: now); `reason`: one of RELEASE_REASONS."""
        if reason not in RELEASE_REASONS:
            raise ValueError(f"release reason {reason!r} is not one of {RELEASE_REASONS}")
        body = {"reason": reason}
        if stopped_at:
            body["stopped_at"] = stopped_at.isoformat()

        async def attempt():
            try:
                await self._call("POST", f"api/sessions/{int(session_id)}/release", body)
                return True
            except web.HTTPError as e:
                if e.status_code == 503:
                    log.warning(
                        "Releasing ledger session %s: quota service down; retrying", session_id
                    )
                    return False
                raise

        await exponential_backoff(
            attempt, f"could not release ledger session {session_id}", timeout=attempts_timeout
        )


class Blocking:
    """A QuotaClient's calls, for callers that cannot await. A kernel's magic runs inside the
    kernel's own event loop, where waiting on it would deadlock: each call runs to its end on a
    private thread with an event loop of its own, with the same requests, answers and errors."""

    def __init__(self, client: QuotaClient):
        self._client = client

    def __getattr__(self, name: str):
        call = getattr(self._client, name)
        if not inspect.iscoroutinefunction(call):
            raise AttributeError(f"QuotaClient.{name} is not a call to the quota service")

        def run(*args, **kwargs):
            with ThreadPoolExecutor(1, thread_name_prefix="slicehub-quota") as pool:
                return pool.submit(asyncio.run, call(*args, **kwargs)).result()

        return run
