"""The quota service's pre-warming API (`slicehub.quota.prewarm`).

- `POST api/sessions/{id}/claim`: a student claims their pre-warmed server (their server's own
  token, or their own): 200 with the student's own session (`claimed_from`: the pre-warmed
  one); 425 with the time when the class has not started; 402/403 with the ledger's sentence
  when the student may not have it, and then the pre-warmed session is released and the hub
  asked to stop the server (the course does not pay for a server its student works on).
- `GET api/classes` (`custom:quota:classes`, the classroom service): the plan of every class
  window of a pre-warming course ahead (`Prewarming.class_plan`).
- `POST api/sessions/{id}/unclaimed` (`custom:quota:classes`): release a pre-warmed session
  nobody claimed in time as "unclaimed"; the classroom service then stops its server.
"""

from __future__ import annotations

import logging

from tornado import web

from slicehub.common import clock

from .api import QuotaHandler

CLASSES = "custom:quota:classes"

log = logging.getLogger("slicehub.quota")


class ClaimHandler(QuotaHandler):
    @web.authenticated
    async def post(self, session_id):
        self.body(set())
        who = self.username()
        groups = await self.groups_of(who)
        try:
            mine = await self.in_db(self.ledger.claim, int(session_id), who, clock.utcnow(), groups)
        except web.HTTPError as e:
            if e.status_code in (402, 403):
                await self._stop_server(who, int(session_id))
            raise
        view = await self.in_db(self.reader.session_view_of, mine.id)
        self.write_json(view)

    async def _stop_server(self, user: str, session_id: int) -> None:
        hub = self.settings.get("hub")
        owner = await self.in_db(self.reader.session_server, session_id)
        if hub is None or owner is None:
            return
        try:
            await hub.stop_server(*owner)
        except Exception:
            log.exception("Could not stop %s's refused pre-warmed server", user)


class ClassesHandler(QuotaHandler):
    @web.authenticated
    async def get(self):
        self.require(CLASSES)
        self.write_json({"classes": await self.in_db(self.ledger.class_plan, clock.utcnow())})


class UnclaimedHandler(QuotaHandler):
    @web.authenticated
    async def post(self, session_id):
        self.require(CLASSES)
        self.body(set())
        s = await self.in_db(self.ledger.stop_unclaimed, int(session_id), clock.utcnow())
        self.write_json(
            {
                "id": s.id,
                "status": s.status,
                "stop_reason": s.stop_reason,
                "charged_list_cents": s.charged_list_cents,
            }
        )


def prewarm_routes(route) -> list:
    return [
        (route(r"api/sessions/(\d+)/claim"), ClaimHandler),
        (route(r"api/sessions/(\d+)/unclaimed"), UnclaimedHandler),
        (route("api/classes"), ClassesHandler),
    ]
