"""`slicehub admin project parking SLUG`: a project's (or a course's) own parking, from a terminal.

    slicehub admin project parking ml101 --idle 15 --warning 3
    slicehub admin project parking ai-lab --exempt
    slicehub admin project parking ai-lab --site-default
    slicehub admin project parking ai-lab            # only says what applies

Decides how what staff type becomes `Ledger.set_parking`: the options given change only what
they name (the project's other settings stay), `--site-default` goes back to the site's window
and lead without exemption, and nothing is written when a value is refused (here, or by the
ledger's rules). It then says what applies under the site's `[parking]` (the site file: --site,
else the deployment's), including when an exemption has no effect because the site does not let
projects opt out, or when the site parks nothing. The rules are `slicehub.quota.site_parking`.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from slicehub.settings import Settings

from . import statement
from .cli_input import CliError, parse_minutes
from .ledger import Ledger
from .site_parking import SiteParking, read_site_parking


def add_parking_options(p: argparse.ArgumentParser, typed) -> None:
    """The verb's arguments; `typed` makes an argparse type from a `cli_input` parser."""
    p.add_argument("slug", help="the project or course")
    p.add_argument(
        "--idle",
        type=typed(parse_minutes, "idle window"),
        metavar="MINUTES",
        help="park its sessions after this many idle minutes (1 to 1440)",
    )
    p.add_argument(
        "--warning",
        type=typed(parse_minutes, "warning lead"),
        metavar="MINUTES",
        help="warn this many minutes before parking, shorter than the idle window",
    )
    exempt = p.add_mutually_exclusive_group()
    exempt.add_argument(
        "--exempt",
        dest="exempt",
        action="store_true",
        default=None,
        help="never park its sessions (only where the site's projects_may_opt_out is true)",
    )
    exempt.add_argument(
        "--not-exempt", dest="exempt", action="store_false", help="park its sessions again"
    )
    p.add_argument(
        "--site-default",
        action="store_true",
        help="the site's idle window and warning lead, not exempt",
    )
    p.add_argument(
        "--site",
        metavar="FILE",
        help="the site file whose [parking] applies (default: the deployment's)",
    )


def check_parking(args, now: datetime) -> None:
    changes = args.idle is not None or args.warning is not None or args.exempt is not None
    if args.site_default and changes:
        raise CliError(
            "--site-default means the site's idle window and warning lead, not exempt; "
            "give it alone, or give --idle, --warning or --exempt without it."
        )
    if args.idle is not None and args.warning is not None and args.warning >= args.idle:
        raise CliError(
            f"The warning lead ({args.warning} min) must be shorter than the idle window "
            f"({args.idle} min)."
        )
    args.site_path = args.site or Settings().site_file
    args.site_parking = read_site_parking(args.site_path)  # a bad file: its sentence, exit 2


def project_parking(args, ledger: Ledger, now: datetime) -> None:
    with ledger.transaction():
        [(p, _scheme)] = statement.project_overview(ledger, args.slug)
        before = (p.idle_minutes, p.idle_warning_minutes, p.parking_opt_out)
        idle, warning, opt_out = before
        if args.site_default:
            idle, warning, opt_out = None, None, False
        else:
            idle = idle if args.idle is None else args.idle
            warning = warning if args.warning is None else args.warning
            opt_out = opt_out if args.exempt is None else args.exempt
        if (idle, warning, opt_out) != before:
            ledger.set_parking(
                args.actor,
                args.slug,
                now,
                idle_minutes=idle,
                warning_minutes=warning,
                opt_out=opt_out,
            )
    now_text = settings_text(idle, warning, opt_out)
    was = settings_text(*before)
    was = f" (was: {was})" if was != now_text else ""
    print(f"{args.slug}'s parking: {now_text}{was}.")
    for line in effect(args.slug, idle, warning, opt_out, args.site_parking, args.site_path):
        print(line)


def settings_text(idle: int | None, warning: int | None, opt_out: bool) -> str:
    """A project's own parking settings (None: the site's), e.g. "idle window 15 min, warning
    lead the site's, exempt where the site lets projects opt out"."""
    if idle is None and warning is None and not opt_out:
        return "the site's"
    window = f"{idle} min" if idle is not None else "the site's"
    lead = f"{warning} min" if warning is not None else "the site's"
    exempt = ", exempt where the site lets projects opt out" if opt_out else ""
    return f"idle window {window}, warning lead {lead}{exempt}"


def effect(slug: str, idle, warning, opt_out: bool, site: SiteParking, site_path) -> list[str]:
    """What applies to `slug`'s sessions under the site's [parking], in sentences."""
    out = []
    if opt_out and not site.projects_may_opt_out:
        out.append(
            f"The exemption has no effect: the site file {site_path} does not let projects opt "
            "out ([parking] projects_may_opt_out = false)."
        )
    if not site.enabled:
        out.append(
            f"The site parks no session ([parking] enabled = false in {site_path}); "
            f"{slug}'s settings apply once it does."
        )
        return out
    policy = site.policy(idle, warning, opt_out)
    if not policy.enabled:
        out.append(f"{slug}'s sessions are never parked; their idle time is still shown.")
    else:
        out.append(
            f"{slug}'s sessions are parked after {_duration(policy.window)} idle, with a warning "
            f"{_duration(policy.warning)} before (the site reads every server every "
            f"{_duration(policy.check)})."
        )
    return out


def _duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 60} min" if s % 60 == 0 else f"{s} s"
