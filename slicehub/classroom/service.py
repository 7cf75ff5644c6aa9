"""The classroom service: a hub-managed service that gets classes ready before they start.

Every `interval` seconds it asks the quota service for the plan of the pre-warming courses'
class windows (`GET api/classes`) and the hub for its users' servers, and for each window:

- on a Slurm site, keeps the window's advance reservation in step (`.reservations`), from a
  week ahead;
- from the window's pre-warm lead, starts each rostered student's own server on the course's
  slice type through the hub's API, as the student's hub user (made first if the student never
  signed in), with `prewarm_window`: the spawner accepts that option from this service only,
  and the ledger holds it on the course's pre-warm payer until the student claims it;
- once the claim time is over, releases every server nobody claimed in the ledger as
  "unclaimed" and asks the hub to stop it, freeing its slice.

Starts go out `concurrency` at a time (JupyterHub spawns each in the background; a class of 200
is asked for in a few seconds, and the hub's `concurrent_spawn_limit` still applies). It stops
on SIGTERM and SIGINT and when the hub that started it is gone, as the culler does. A tick that
fails is logged and the next one starts afresh from what the two services say.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import datetime

from tornado import web
from traitlets import Float, Integer, Unicode, default
from traitlets.config import Application

from slicehub.common import clock
from slicehub.common.hub_client import HubClient
from slicehub.common.hub_watch import hub_gone, hub_pid
from slicehub.common.quota_client import QuotaClient
from slicehub.spawners.site import load_site
from slicehub.spawners.site_model import Site
from slicehub.spawners.slurm.client import SlurmClient

from .plan import CLOSING, ClassWindow, decide, server_options
from .reservations import ClassReservations

log = logging.getLogger("slicehub.classroom")


class Classroom:
    """One tick's work (`tick`), against the quota service and the hub."""

    def __init__(
        self,
        quota: QuotaClient,
        hub: HubClient,
        site: Site,
        reservations: ClassReservations | None = None,
        concurrency: int = 8,
    ):
        self.quota = quota
        self.hub = hub
        self.site = site
        self.reservations = reservations
        self.limit = asyncio.Semaphore(concurrency)
        self._refused: set[tuple[int, str]] = set()  # (window, user) starts refused, logged once

    async def tick(self) -> None:
        now = clock.utcnow()
        windows = [ClassWindow.from_plan(raw) for raw in await self.quota.classes()]
        if self.reservations is not None and windows:
            await self.reservations.sync(windows, now)
        acting = [w for w in windows if w.phase in ("warming", "claimable", CLOSING)]
        if not acting:
            return
        users = await self.hub.users()
        if users is None:
            return  # the hub could not say who runs what: nothing is concluded from silence
        for w in acting:
            moves = decide(w, users)
            for name in moves.add_users:
                await self.hub.ensure_user(name)
            options = server_options(
                w, now, self.site.sessions.min_minutes, self.site.sessions.max_minutes
            )
            await asyncio.gather(*(self._start(w, name, options) for name in moves.start))
            for server in moves.stop:
                await self._stop_unclaimed(w, server)

    async def _start(self, w: ClassWindow, name: str, options: dict) -> None:
        async with self.limit:
            why = await self.hub.start_server(name, options)
        if not why:
            log.info("Pre-warming %s's server for class window %s of %s", name, w.window, w.course)
        elif (w.window, name) not in self._refused:
            self._refused.add((w.window, name))
            log.warning(
                "Could not pre-warm %s's server for class window %s of %s: %s",
                name,
                w.window,
                w.course,
                why,
            )

    async def _stop_unclaimed(self, w: ClassWindow, server) -> None:
        try:
            released = await self.quota.release_unclaimed(server.session)
        except web.HTTPError as e:
            log.warning("Could not release pre-warmed session %s: %s", server.session, e)
            return
        if released.get("stop_reason") != "unclaimed":
            return  # claimed meanwhile, or stopped for another reason: the server is not ours
        log.info(
            "Nobody claimed %s's pre-warmed server of class window %s of %s; stopping it",
            server.user,
            w.window,
            w.course,
        )
        await self.hub.stop_server(server.user, server.server_name)


class ClassroomService(Application):
    """`python -m slicehub.classroom`: the loop around `Classroom.tick`."""

    name = "slicehub-classroom"
    description = "Gets classes ready before they start: pre-warmed servers, Slurm reservations."

    interval = Float(
        15.0,
        config=True,
        help="""Seconds between ticks. Default: 15 ($SLICEHUB_CLASSROOM_INTERVAL). A server is
        started within one tick of its window's lead and stopped within one tick of its claim
        time.""",
    )
    concurrency = Integer(8, config=True, help="""Starts asked of the hub at once. Default: 8.""")
    quota_url = Unicode(
        config=True, help="""The quota service's root URL. Default: $SLICEHUB_QUOTA_URL."""
    )
    site = Unicode(config=True, help="""The site file. Default: $SLICEHUB_SITE.""")
    aliases = {
        "interval": "ClassroomService.interval",
        "concurrency": "ClassroomService.concurrency",
        "quota-url": "ClassroomService.quota_url",
        "site": "ClassroomService.site",
    }

    @default("interval")
    def _interval_default(self) -> float:
        return float(os.environ.get("SLICEHUB_CLASSROOM_INTERVAL") or 15)

    @default("quota_url")
    def _quota_url_default(self) -> str:
        return os.environ.get("SLICEHUB_QUOTA_URL", "")

    @default("site")
    def _site_default(self) -> str:
        return os.environ.get("SLICEHUB_SITE", "")

    def classroom(self) -> Classroom:
        token = os.environ["JUPYTERHUB_API_TOKEN"]
        site = load_site(self.site)
        reservations = None
        if site.slurm is not None:
            client = SlurmClient.for_commands(site.slurm.commands)
            reservations = ClassReservations(site, client)
        return Classroom(
            QuotaClient(self.quota_url, token, timeout=30),
            HubClient(os.environ["JUPYTERHUB_API_URL"], token),
            site,
            reservations,
            self.concurrency,
        )

    async def run(self) -> None:
        hub = hub_pid()
        classroom = self.classroom()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)

        async def watch_hub() -> None:
            await hub_gone(hub)
            log.warning("The hub (pid %s) that started this service is gone; stopping", hub)
            done.set()

        watcher = asyncio.ensure_future(watch_hub())
        log.info("Classroom service: a tick every %s s", self.interval)
        while not done.is_set():
            started = datetime.now()
            try:
                await classroom.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("The classroom tick failed; the next one starts afresh")
            spent = (datetime.now() - started).total_seconds()
            try:
                await asyncio.wait_for(done.wait(), max(self.interval - spent, 0.1))
            except TimeoutError:
                pass
        watcher.cancel()

    def start(self) -> None:
        asyncio.run(self.run())


def main(argv=None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )
    app = ClassroomService()
    app.initialize(argv)
    app.start()
    sys.exit(0)
