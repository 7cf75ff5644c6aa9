"""What the classroom service does about one class window now. Pure.

The quota service says where each pre-warming course's windows stand (`GET api/classes`: the
phase, the students to pre-warm, each pre-warmed server's state); the hub says which servers
run. From the two, `decide` gives the moves of one tick:

- while the window is warming or claimable: start a server for every student to pre-warm who
  has none in this window yet and no server of their own running or starting (a student who
  started their own is left alone; one whose pre-warmed server has stopped is not started
  again: the ledger then knows why it stopped, and a second pre-warm would be charged again);
- once the window is closing (its claim time is over): stop every server still pre-warmed
  (nobody claimed it: the course has paid for it long enough);
- a user the hub does not know yet (a student who never signed in) is added to the hub first:
  the server is theirs, under their own account, reachable by them alone.

Each tick decides afresh from what the two services say, so a service restarted mid-class, a
start that failed, or a student who claimed meanwhile are all handled by the next tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

WARMING, CLAIMABLE, CLOSING = "warming", "claimable", "closing"


@dataclass(frozen=True)
class WarmServer:
    user: str
    server_name: str
    session: int
    state: str  # pre-warmed | claimed | stopped


@dataclass(frozen=True)
class ClassWindow:
    """One window of a pre-warming course, as the quota service's plan gives it."""

    course: str
    window: int
    starts_at: datetime
    ends_at: datetime
    prewarm_from: datetime
    phase: str
    slice_type: str
    students: tuple[str, ...]
    servers: tuple[WarmServer, ...]

    @classmethod
    def from_plan(cls, raw: Mapping) -> ClassWindow:
        """From one entry of `GET api/classes` (a KeyError or ValueError when malformed)."""
        return cls(
            course=str(raw["course"]),
            window=int(raw["window"]),
            starts_at=datetime.fromisoformat(raw["starts_at"]),
            ends_at=datetime.fromisoformat(raw["ends_at"]),
            prewarm_from=datetime.fromisoformat(raw["prewarm_from"]),
            phase=str(raw["phase"]),
            slice_type=str(raw["slice_type"]),
            students=tuple(str(s) for s in raw["students"]),
            servers=tuple(
                WarmServer(
                    str(s["user"]), str(s["server_name"]), int(s["session"]), str(s["state"])
                )
                for s in raw["servers"]
            ),
        )


@dataclass(frozen=True)
class Moves:
    add_users: tuple[str, ...] = ()  # hub users to make first
    start: tuple[str, ...] = ()  # students whose server to pre-warm
    stop: tuple[WarmServer, ...] = ()  # pre-warmed servers nobody claimed in time


def decide(w: ClassWindow, hub: Mapping[str, Mapping[str, str]]) -> Moves:
    """The moves for window `w`, given the hub's users and their servers' states
    ({user: {server name: ready|pending|stopped}}; a user absent from it is not a hub user)."""
    if w.phase in (WARMING, CLAIMABLE):
        warmed = {s.user for s in w.servers}
        start = tuple(
            u for u in w.students if u not in warmed and not _running(hub.get(u, {}).get(""))
        )
        return Moves(add_users=tuple(u for u in start if u not in hub), start=start)
    if w.phase == CLOSING:
        return Moves(stop=tuple(s for s in w.servers if s.state == "pre-warmed"))
    return Moves()


def _running(state: str | None) -> bool:
    return state in ("ready", "pending")


def server_options(w: ClassWindow, now: datetime, min_minutes: int, max_minutes: int) -> dict:
    """The options of a pre-warmed server's start: the course, its slice type, the window. The
    ledger ends the session with the window; the length asked is only what the site's session
    limits let any start ask for: up to the window's end, within [min_minutes, max_minutes]."""
    minutes = -(-int((w.ends_at - now).total_seconds()) // 60)
    minutes = min(max(minutes, min_minutes), max_minutes)
    return {
        "project": w.course,
        "slice_type": w.slice_type,
        "duration_hours": minutes / 60,
        "prewarm_window": w.window,
    }
