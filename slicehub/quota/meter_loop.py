"""The quota service's metering loop: tick, warn, enforce, and close what no server carries.

Every tick charges running sessions up to now (`Ledger.meter`), records warnings (80%, 95% of the
held budget, 10 minutes before the end) and asks the hub to stop servers whose session has
ended, with backoff; the spawner then releases the session. A session whose server the hub no
longer runs (or never ran: a start that failed before its spawner could release) is closed by the
loop itself, after a grace. After a crash the first tick charges exactly the time that passed
(metering is idempotent), so a restart loses nothing and doubles nothing.

Decides when to act and what to ask the hub (`HubClient`, with the service's own token); what a
session costs and when it ends is the ledger's. A failing tick is logged and retried with
backoff, never in a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from slicehub.common import clock
from slicehub.common.hub_client import HubClient

from .ledger import Ledger
from .models import Session as LedgerSession

log = logging.getLogger("slicehub.quota")


class Meter:
    """The metering loop: tick, warn, enforce; never dies of one bad tick."""

    def __init__(
        self, ledger: Ledger, hub: HubClient | None, interval: float, orphan_grace: float = 120
    ):
        self.ledger = ledger
        self.hub = hub
        self.interval = interval
        self.orphan_grace = timedelta(seconds=orphan_grace)
        self._stopping: dict[int, float] = {}  # session id -> next attempt (monotonic)
        self._next_reconcile = 0.0

    async def run(self) -> None:
        delay = self.interval
        while True:
            try:
                await self.tick()
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Metering tick failed; retrying in %.0f s", delay)
                delay = min(delay * 2, 300)  # backoff, never a tight loop
            await asyncio.sleep(delay)

    async def tick(self):
        result = await asyncio.to_thread(self.ledger.meter, clock.utcnow())
        for session_id, level, message in result.warnings:
            log.info("Warning %s for session %s: %s", level, session_id, message)
        for session_id in result.due:
            await self.enforce(session_id)
        loop = asyncio.get_running_loop()
        if self.hub is not None and loop.time() >= self._next_reconcile:
            period = min(60.0, self.orphan_grace.total_seconds())  # no need to look more often
            self._next_reconcile = loop.time() + max(self.interval, period)
            await self.reconcile()
        return result

    async def reconcile(self) -> list[int]:
        """Close sessions that no server of the hub's carries any more: a start that failed
        before its spawner could release, a release lost with its spawner. Each is charged up
        to now (at most the grace and one reconcile period more than it ran), never longer.
        A session younger than the grace is left alone: its server may be starting."""
        servers = await self.hub.active_servers()
        if servers is None:
            return []
        now = clock.utcnow()
        orphans = [
            s.id
            for s in await asyncio.to_thread(self.ledger.active_sessions)
            if (s.username, s.server_name) not in servers
            and s.started_at <= now - self.orphan_grace
        ]
        for session_id in orphans:
            log.warning("Session %s has no server on the hub; closing it", session_id)
            await asyncio.to_thread(self.ledger.close_session, session_id, now, "orphaned")
        return orphans

    async def enforce(self, session_id: int) -> None:
        """The session's end has come: stop the server through the hub, gracefully."""
        loop = asyncio.get_running_loop()
        if self._stopping.get(session_id, 0) > loop.time():
            return
        s = await asyncio.to_thread(self._session, session_id)
        if s is None or s.status != "active":
            self._stopping.pop(session_id, None)
            return
        stopped = self.hub is not None and await self.hub.stop_server(s.username, s.server_name)
        if stopped:
            log.info("Session %s of %s reached its end; server stopped", session_id, s.username)
            # the spawner releases on stop; close here too in case it could not reach us
            await asyncio.to_thread(self.ledger.close_session, session_id, s.end_at, "ended")
            self._stopping.pop(session_id, None)
        else:
            self._stopping[session_id] = loop.time() + 30

    def _session(self, session_id):
        with self.ledger.session() as db:
            return db.get(LedgerSession, session_id)
