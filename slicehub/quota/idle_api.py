"""The quota service's parking API, for the culler service (`custom:quota:parking`).

- `POST api/sessions/{id}/activity` `{"user", "server_name", "reading"}`: what the culler read
  from that user's server (its extension's `slicehub/api/activity` answer, as it came). The
  service decides (`Idleness.observe`) and answers `{"action": "keep"|"warn"|"park",
  "idle_seconds", "park_at", "project", "opted_out"}`. The latest reading of every running
  session is kept in memory for the staff page and the metrics (`Readings`).
- `POST api/sessions/{id}/park` `{"user", "server_name"}`: release the session as parked, now,
  while its warning stands; `{"id", "charged_list_cents", "returned_subsidy_cents", ...}`.

`user` and `server_name` are the hub's, as the culler found the server in the hub's API; the
ledger checks the session is that server's, so nothing a server says can park another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tornado import web

from slicehub.common import clock
from slicehub.common.names import USERNAME

from .api import QuotaHandler
from .parking import Reading

PARKING = "custom:quota:parking"
MAX_BUSY = 50  # things working at once that a reading may list
MAX_TEXT = 300  # characters of each


@dataclass(frozen=True)
class Seen:
    """A running session's latest reading, for the staff page and the metrics."""

    at: datetime
    user: str
    server_name: str
    project: str
    idle: timedelta  # 0 while anything works
    busy: tuple[str, ...]
    gpu: str  # "active", "idle" or "none"
    gpu_detail: str
    action: str
    park_at: datetime | None
    opted_out: bool


def parse_reading(raw) -> tuple[Reading, str, str]:
    """The extension's reading: idle time and what works now; the GPU signal and its sentence.
    Anything malformed is a 400 with a sentence (the culler logs it and keeps the server)."""
    if not isinstance(raw, dict):
        raise web.HTTPError(400, "reading must be the server's activity reading (an object).")
    idle = raw.get("idle_seconds")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0 <= idle < 10**9:
        raise web.HTTPError(400, "reading.idle_seconds must be a number of seconds, 0 or more.")
    busy = raw.get("busy", [])
    if (
        not isinstance(busy, list)
        or len(busy) > MAX_BUSY
        or not all(isinstance(b, str) for b in busy)
    ):
        raise web.HTTPError(400, f"reading.busy must be a list of at most {MAX_BUSY} sentences.")
    gpu = raw.get("gpu") or {}
    signal = gpu.get("signal", "none") if isinstance(gpu, dict) else None
    if signal not in ("active", "idle", "none"):
        raise web.HTTPError(400, "reading.gpu.signal must be active, idle or none.")
    detail = gpu.get("detail", "")
    if not isinstance(detail, str):
        raise web.HTTPError(400, "reading.gpu.detail must be a sentence.")
    reading = Reading(timedelta(seconds=idle), tuple(b[:MAX_TEXT] for b in busy))
    return reading, signal, detail[:MAX_TEXT]


class ParkingHandler(QuotaHandler):
    def server(self, allowed: set[str]) -> tuple[dict, str, str]:
        self.require(PARKING)
        data = self.body(allowed | {"user", "server_name"})
        user, server_name = data.get("user"), data.get("server_name", "")
        if not isinstance(user, str) or not USERNAME.fullmatch(user):
            raise web.HTTPError(400, "user must be the server's hub user name.")
        if not isinstance(server_name, str) or len(server_name) > 255:
            raise web.HTTPError(400, "server_name must be the server's name ('' by default).")
        return data, user, server_name


class ActivityHandler(ParkingHandler):
    @web.authenticated
    async def post(self, session_id):
        data, user, server_name = self.server({"reading"})
        reading, signal, detail = parse_reading(data.get("reading"))
        now = clock.utcnow()
        o = await self.in_db(
            self.ledger.observe,
            int(session_id),
            user,
            server_name,
            reading,
            self.settings["site_parking"],
            now,
        )
        d = o.decision
        readings = self.settings["readings"]
        stale = now - 3 * self.settings["site_parking"].check  # read no more: ended elsewhere
        for sid in [sid for sid, seen in readings.items() if seen.at < stale]:
            del readings[sid]
        readings[o.session_id] = Seen(
            now,
            user,
            server_name,
            o.project,
            d.idle,
            reading.busy,
            signal,
            detail,
            d.action,
            d.park_at,
            o.opted_out,
        )
        self.write_json(
            {
                "action": d.action,
                "idle_seconds": int(d.idle.total_seconds()),
                "park_at": d.park_at.isoformat() if d.park_at else None,
                "project": o.project,
                "opted_out": o.opted_out,
            }
        )


class ParkHandler(ParkingHandler):
    @web.authenticated
    async def post(self, session_id):
        _, user, server_name = self.server(set())
        s = await self.in_db(self.ledger.park, int(session_id), user, server_name, clock.utcnow())
        self.settings["readings"].pop(s.id, None)
        self.write_json(
            {
                "id": s.id,
                "status": s.status,
                "stopped_at": s.stopped_at.isoformat(),
                "charged_list_cents": s.charged_list_cents,
                "charged_subsidy_cents": s.charged_subsidy_cents,
                "returned_subsidy_cents": s.hold_subsidy_cents - s.charged_subsidy_cents,
                "idle_seconds": s.idle_seconds,
            }
        )
