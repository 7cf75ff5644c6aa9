"""Parking: when an idle session is warned, and when it is parked. Pure: no clock, no database,
no network; the quota service applies the decision (`slicehub.quota.idle`), the culler service
carries readings to it and stops what it parks (`slicehub.culler`), the benchmark replays a
week through it (bench/idle_parking.py).

A session is *idle* from the last moment anything worked or anyone was there, as its server's
extension reads it (`slicehub.extensions.activity`): a kernel's last message, a terminal's last
byte, the browser's last key or click (and "Keep working"), the last GPU activity on the slice's
devices. While anything works *now* (a busy kernel, even a silent one; a running Dask task; the
GPU busy) it is not idle at all. The server's reading gives how long it has been idle by its own
clock (`Reading.idle`), so a compute node's clock never skews the decision.

The rules, with the policy's window W, warning lead L and check interval C (L >= C, checked when
the policy is made):
- idle < W - L: keep;
- idle >= W - L and no warning in this idle stretch: warn (it would be parked at idle-start + W,
  or one check from now if the warning comes late);
- idle >= W, warned in this idle stretch at an earlier check: park;
- a project that opted out (`enabled` False) is never parked: its idle time is still reported.
So a session with any activity in the last W is never parked, and one idle past W + C is parked
by the first check after (property-tested in tests/unit/test_parking_rules.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

KEEP, WARN, PARK = "keep", "warn", "park"

_ZERO = timedelta(0)


class PolicyError(ValueError):
    """A parking policy that cannot work; the message says which value and why."""


@dataclass(frozen=True)
class ParkingPolicy:
    window: timedelta  # idle this long: parked
    warning: timedelta  # warned this long before
    check: timedelta  # how often every server is read
    enabled: bool = True  # False: never parked (the site parks nothing, or the project opted out)

    def __post_init__(self):
        if self.check <= _ZERO:
            raise PolicyError("the check interval must be longer than 0 seconds")
        if self.warning < self.check:
            raise PolicyError(
                f"the warning lead ({_minutes(self.warning)}) must be at least the check "
                f"interval ({_minutes(self.check)}): a warning must come at least one check "
                "before the session is parked"
            )
        if self.window <= self.warning:
            raise PolicyError(
                f"the idle window ({_minutes(self.window)}) must be longer than the warning "
                f"lead ({_minutes(self.warning)})"
            )


@dataclass(frozen=True)
class Reading:
    """What a server's extension read: how long nothing has worked and nobody was there (by the
    server's own clock), and what works now (empty: nothing)."""

    idle: timedelta
    busy: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    action: str  # KEEP, WARN or PARK
    idle: timedelta  # idle so far (0 while anything works)
    idle_since: datetime | None  # None while anything works
    park_at: datetime | None  # when it is parked if it stays idle (None: never, or working)
    warned: bool  # a warning of this idle stretch stands (after a WARN, until activity)


def decide(
    policy: ParkingPolicy,
    reading: Reading,
    started_at: datetime,
    warned_at: datetime | None,
    now: datetime,
) -> Decision:
    """What to do with a session started at `started_at`, warned at `warned_at` (None: not
    warned, or the service forgot), read as `reading` now."""
    if reading.busy:
        return Decision(KEEP, _ZERO, None, None, False)
    idle_since = max(now - max(reading.idle, _ZERO), started_at)
    idle = now - idle_since if now > idle_since else _ZERO
    if not policy.enabled:
        return Decision(KEEP, idle, idle_since, None, False)
    warned = warned_at is not None and warned_at >= idle_since
    park_at = idle_since + policy.window
    if warned:
        if idle >= policy.window and warned_at < now:
            return Decision(PARK, idle, idle_since, now, True)
        return Decision(KEEP, idle, idle_since, max(park_at, warned_at + policy.check), True)
    if idle >= policy.window - policy.warning:
        return Decision(WARN, idle, idle_since, max(park_at, now + policy.check), True)
    return Decision(KEEP, idle, idle_since, park_at, False)


def _minutes(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 60} min" if s % 60 == 0 and s >= 60 else f"{s} s"
