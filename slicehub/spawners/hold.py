"""One server's session in the ledger, as a spawner holds it: the hold before the server starts,
the start of metering (deferred: when a batch job leaves its queue), the release when it ends,
with why. Both spawners use it the same way; only the quota service decides (through
`slicehub.common.quota_client`), and every refusal reaches the user as its sentence.

Without a quota service (`quota_url` unset, tests of the allocator alone) it holds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from tornado import web

from slicehub.common import clock
from slicehub.common.money import format_money
from slicehub.common.quota_client import QuotaClient

from .options import SliceOptions


class LedgerHold:
    """`session` is the quota service's view of the hold (None: nothing held); `end` is when
    the session ends (the hold's end, or the options' length without a ledger)."""

    def __init__(
        self,
        quota: QuotaClient | None,
        username: str,
        server_name: str,
        log: logging.Logger,
        progress: Callable[[int, str], None] = lambda p, m: None,
    ):
        self.quota = quota
        self.username = username
        self.server_name = server_name
        self.log = log
        self.progress = progress
        self.session: dict | None = None
        self.end: datetime | None = None

    @property
    def holder(self) -> str:
        return f"{self.username}/{self.server_name}"

    @property
    def project(self) -> str:
        return (self.session or {}).get("project", "")

    @property
    def session_id(self) -> int | None:
        return (self.session or {}).get("id")

    async def project_for(self, options: SliceOptions, groups: Sequence[str] = ()) -> str:
        """The project to charge: the one the options name, or the user's only project (by
        member row, or through a project's member group among the user's hub `groups`)."""
        if options.project:
            return options.project
        projects = await self.quota.projects(self.username, groups)
        if len(projects) == 1:
            return projects[0]["project"]
        if not projects:
            raise web.HTTPError(
                403,
                f"{self.username} is not a member of any project, so no session can be paid "
                "for. Ask your PI or the centre's staff to add you.",
            )
        names = ", ".join(p["project"] for p in projects)
        raise web.HTTPError(400, f"Choose the project to charge (project): one of {names}.")

    async def open(
        self,
        options: SliceOptions,
        project: str,
        deferred: bool = False,
        groups: Sequence[str] = (),
    ) -> datetime:
        """Hold the cost of `options` for `project`; the session's end. Refusals are HTTP
        errors with the ledger's sentence. `deferred`: the server waits in a batch queue first,
        and metering starts with `begin`, so the queue is not charged. `groups`: the user's hub
        groups (they may be a member through the project's member group)."""
        st = options.slice_type
        self.end = clock.utcnow() + timedelta(minutes=options.duration_minutes)
        if self.quota is None:
            return self.end
        window = options.prewarm_window
        if window is None:
            self.progress(5, f"Holding the cost of {st.name} for project {project}")
        else:
            self.progress(5, f"Pre-warming a {st.name} server for course {project}")
        hold = (project, self.username, self.server_name, st.name, options.duration_minutes)
        try:
            self.session = await self.quota.hold(*hold, deferred, groups, window)
        except web.HTTPError as e:
            # a hold from an earlier start whose answer never arrived: release it, once
            if e.status_code != 409 or not await self.quota.release_stale(
                self.username, self.server_name
            ):
                raise
            self.session = await self.quota.hold(*hold, deferred, groups, window)
        self.end = datetime.fromisoformat(self.session["end_at"])
        self.progress(
            10,
            f"Held {format_money(self.session['hold_list_cents'])} at list price "
            f"for project {project}; the session ends at {self.end:%H:%M} UTC",
        )
        return self.end

    async def begin(self) -> None:
        """A deferred hold's server has started: metering starts now, for the length held; the
        session's end moves with it."""
        held = self.session
        if not held or self.quota is None or held.get("begun", True):
            return
        begun = await self.quota.begin(held["id"])
        self.session = {**held, **begun}
        self.end = datetime.fromisoformat(begun["end_at"])

    async def release(self, reason: str, stopped_at: datetime | None = None) -> None:
        """Release the hold (charged up to `stopped_at`, default now), saying why; safe to call
        twice. A quota service that stays away is logged: it closes the session at its end."""
        held, self.session = self.session, None
        if not held or self.quota is None:
            return
        try:
            await self.quota.release(held["id"], stopped_at, reason=reason)
            self.log.info("Released ledger session %s of %s (%s)", held["id"], self.holder, reason)
        except Exception:
            self.log.exception(
                "Could not release ledger session %s of %s; the quota service closes it when "
                "the session ends",
                held["id"],
                self.holder,
            )

    async def extended_end(self) -> datetime | None:
        """The session's end as the ledger has it now (an Extend moves it); None when the quota
        service cannot say."""
        if not self.session or self.quota is None:
            return None
        try:
            view = await self.quota.session(self.session["id"], self.username)
        except Exception as e:  # the quota service is away: the next poll asks again
            self.log.debug("Could not read ledger session of %s: %s", self.holder, e)
            return None
        return None if view is None else datetime.fromisoformat(view["end_at"])

    def quota_url_for_server(self, server_quota_url: str) -> str:
        """Where the server's kernels reach the quota service ("" when nothing is held)."""
        return server_quota_url if self.session else ""

    # -- state (the spawner saves it with its own) ------------------------------------------

    def to_state(self) -> dict:
        return {
            "ledger_session": self.session,
            "session_end": clock.isoformat(self.end) if self.end else None,
        }

    def load_state(self, saved: dict) -> None:
        self.session = saved.get("ledger_session")
        end = saved.get("session_end")
        self.end = datetime.fromisoformat(end) if end else None
