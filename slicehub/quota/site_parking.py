"""The site's parking policy: the `[parking]` table of the site file, and a project's own.

    [parking]
    enabled = true               # park idle sessions (false: never; idle time is still shown)
    idle = "30 min"              # idle this long: parked
    warning = "5 min"            # warned this long before, with "Keep working"
    check = "1 min"              # how often every running server is read
    projects_may_opt_out = false # whether staff may exempt a project from parking

A project (a course too) may have its own idle window and warning lead (`slicehub admin project
parking`), and, where the site allows it, be exempt. The values are checked when the hub and
the quota service start: a problem names the file, the key and the fix, and nothing starts.
The rules themselves are `slicehub.quota.parking`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from slicehub.config_file import (
    ConfigFileError,
    check_bool,
    check_duration,
    check_known,
    check_table,
)

from .parking import ParkingPolicy, PolicyError

KEYS = {"enabled", "idle", "warning", "check", "projects_may_opt_out"}


@dataclass(frozen=True)
class SiteParking:
    enabled: bool = True
    idle: timedelta = timedelta(minutes=30)
    warning: timedelta = timedelta(minutes=5)
    check: timedelta = timedelta(minutes=1)
    projects_may_opt_out: bool = False

    def policy(
        self,
        idle_minutes: int | None = None,
        warning_minutes: int | None = None,
        opted_out: bool = False,
    ) -> ParkingPolicy:
        """The policy of a project with these settings (None: the site's). A project's window
        too short for the site's warning lead gets the lead shortened to fit, never below one
        check: a project setting never makes a policy that cannot work."""
        idle = self.idle if idle_minutes is None else timedelta(minutes=idle_minutes)
        warning = self.warning if warning_minutes is None else timedelta(minutes=warning_minutes)
        warning = max(min(warning, idle - self.check), self.check)
        idle = max(idle, warning + self.check)
        enabled = self.enabled and not (opted_out and self.projects_may_opt_out)
        return ParkingPolicy(idle, warning, self.check, enabled)


def read_site_parking(path: Path | str) -> SiteParking:
    """The `[parking]` table of the site file at `path` (the defaults where it has none)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigFileError(path, "(file)", f"cannot be read ({e})", "check the file") from None
    return parse_site_parking(path, raw.get("parking", {}))


def parse_site_parking(path, table) -> SiteParking:
    table = check_table(path, "parking", table)
    check_known(path, "parking", table, KEYS)
    out = SiteParking(
        enabled=check_bool(path, "parking.enabled", table.get("enabled", True)),
        idle=timedelta(seconds=check_duration(path, "parking.idle", table.get("idle", "30 min"))),
        warning=timedelta(
            seconds=check_duration(path, "parking.warning", table.get("warning", "5 min"))
        ),
        check=timedelta(
            seconds=check_duration(path, "parking.check", table.get("check", "1 min"), 1, 3600)
        ),
        projects_may_opt_out=check_bool(
            path, "parking.projects_may_opt_out", table.get("projects_may_opt_out", False)
        ),
    )
    try:
        ParkingPolicy(out.idle, out.warning, out.check)
    except PolicyError as e:
        raise ConfigFileError(
            path, "parking", str(e), "lengthen idle or warning, or shorten check"
        ) from None
    return out
