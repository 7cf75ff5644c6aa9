"""What the spawn form offers each project: prices, the subsidy's share, the hours a project's
allocation buys, and why a slice cannot be chosen. Pure; the form template renders it.

Inputs are the site's slice types with their free counts
(`slicehub.spawners.source.Availability`) and the quota service's view of the user's projects
(`GET api/projects?user=`, with the user's membership: role, what their cap leaves, a course's class
windows). The ledger decides the hold (slicehub.quota.hold); this module only mirrors its rules so
the form does not offer what the ledger would refuse:

- a project may use only its allowed slice types: the others are not shown;
- the subsidy pays `rate` of the list price; a `stop` project can pay while the subsidy left
  covers it, a `full_price` one while subsidy plus credit does; a member's cap bounds what
  they draw. `hours` is how long that lasts at a type's price (None: no limit, rate 0);
- a course student outside a class window cannot start; the form says when the next opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from slicehub.common.durations import hours_text
from slicehub.common.money import BASIS_POINTS, subsidy_of


@dataclass(frozen=True)
class SliceQuote:
    name: str
    price_cents: int  # list price per hour
    subsidy_cents: int  # the scheme's share of an hour, rounded down as the ledger does
    copay_cents: int  # the project's share of an hour
    hours: float | None  # hours the project (and the member's cap) can pay; None: no limit
    free: int | None
    capacity: int | None
    queues: bool  # a start may wait in a batch queue when none is free
    unavailable: str = ""  # why none can be had now, whatever the length ("" when one can)

    def affordable(self, duration_hours: float) -> bool:
        return self.hours is None or self.hours + 1e-9 >= duration_hours

    def reason(self, duration_hours: float) -> str:
        """Why it cannot be chosen for a session of `duration_hours` ("" when it can)."""
        if self.unavailable:
            return self.unavailable
        if not self.affordable(duration_hours):
            return (
                f"The allocation can pay {hours_text(self.hours)} of it; shorten the session or "
                "choose a smaller slice."
            )
        return ""


@dataclass(frozen=True)
class ProjectOffer:
    id: str
    name: str
    rate_bp: int
    policy: str
    subsidy_left_cents: int
    credit_left_cents: int
    cap_left_cents: int | None
    blocked: str = ""  # why nothing can start in this project now
    next_window: str | None = None  # ISO time the next class window opens (a student)
    window_ends: str | None = None  # ISO end of the class window a student is in now
    quotes: list[SliceQuote] = field(default_factory=list)

    @property
    def share(self) -> str:
        return f"{self.rate_bp / 100:g}%"


def hours_affordable(price_cents: int, p: dict, cap_left: int | None, rate_bp: int) -> float | None:
    """Hours of a type priced `price_cents` an hour that project view `p` can pay now."""
    per_hour = price_cents * rate_bp / BASIS_POINTS  # subsidy an hour draws
    if per_hour <= 0:
        return None
    budget = max(p["subsidy_left_cents"], 0)
    if p["policy"] == "full_price":
        budget += max(p["credit_left_cents"], 0)
    if cap_left is not None:
        budget = min(budget, cap_left)
    return budget / per_hour


def offer(projects: list[dict], availability, queues: bool, now: datetime) -> list[ProjectOffer]:
    """Per project the user belongs to, the slice types it may use, quoted."""
    out = []
    for p in projects:
        member = p.get("member") or {}
        rate = p["subsidy_rate_bp"]
        allowed = p["allowed_slice_types"]
        cap_left = member.get("cap_left_cents")
        blocked, next_window, window_ends = _window(p, member, now)
        quotes = []
        for av in availability:
            st = av.slice_type
            if "*" not in allowed and st.name not in allowed:
                continue
            subsidy = subsidy_of(st.price_cents, rate)
            hours = hours_affordable(st.price_cents, p, cap_left, rate)
            quotes.append(
                SliceQuote(
                    st.name,
                    st.price_cents,
                    subsidy,
                    st.price_cents - subsidy,
                    hours,
                    av.free,
                    av.capacity,
                    queues,
                    _unavailable(av.free, av.capacity, queues),
                )
            )
        out.append(
            ProjectOffer(
                p["project"],
                p["name"],
                rate,
                p["policy"],
                p["subsidy_left_cents"],
                p["credit_left_cents"],
                cap_left,
                blocked,
                next_window,
                window_ends,
                quotes,
            )
        )
    return out


def _unavailable(free: int | None, capacity: int | None, queues: bool) -> str:
    if capacity == 0:
        return "Not available on this cluster right now."
    if free == 0 and not queues:
        return f"None free right now (all {capacity} in use)."
    return ""


def _window(p: dict, member: dict, now: datetime) -> tuple[str, str | None, str | None]:
    """(why a student cannot start now, when the next window opens, when the current ends)."""
    if not p.get("is_course") or member.get("role") != "student":
        return "", None, None
    for w in member.get("class_windows", []):
        start, end = datetime.fromisoformat(w["starts_at"]), datetime.fromisoformat(w["ends_at"])
        if start <= now < end:
            return "", None, w["ends_at"]
        if start > now:
            return f"Course {p['project']} is outside its class windows now.", w["starts_at"], None
    return (
        f"Course {p['project']} is outside its class windows now; no further window is scheduled.",
        None,
        None,
    )
