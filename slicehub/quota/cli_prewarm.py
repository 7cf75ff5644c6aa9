"""`slicehub admin course prewarm SLUG`: a course's pre-warming, from a terminal.

    slicehub admin course prewarm ml101 --lead 5 --claim 15
    slicehub admin course prewarm ml101 --lead 10 --claim 20 --seats 40 --paid-by centre-classes
    slicehub admin course prewarm ml101 --off

Decides how what staff type becomes `Ledger.set_prewarm` / `clear_prewarm` (the rules and their
refusals are `slicehub.quota.prewarm`); nothing is written when a value is refused. It then says
what will happen at the course's next class window, in Hong Kong time as staff read it.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from .cli_input import CliError, parse_minutes, parse_slice_type
from .ledger import Ledger
from .statement_render import hkt


def add_prewarm_options(p: argparse.ArgumentParser, typed) -> None:
    """The verb's arguments; `typed` makes an argparse type from a `cli_input` parser."""
    p.add_argument("slug", help="the course")
    p.add_argument(
        "--lead",
        type=typed(parse_minutes, "pre-warm lead"),
        metavar="MINUTES",
        help="start the students' servers this many minutes before each class window (1-120)",
    )
    p.add_argument(
        "--claim",
        type=typed(parse_minutes, "claim time"),
        metavar="MINUTES",
        default=15,
        help="stop servers not claimed this many minutes into the window (default 15)",
    )
    p.add_argument(
        "--seats",
        type=typed(_seats),
        metavar="N",
        help="pre-warm this many servers, for the first N students on the roster (default: all)",
    )
    p.add_argument(
        "--slice-type",
        type=typed(parse_slice_type),
        help="the slice type to pre-warm (default: the course's only one)",
    )
    p.add_argument(
        "--paid-by",
        metavar="PROJECT",
        help="the project that pays for pre-warmed time before students claim their servers "
        "(default: the course itself; e.g. a project of the centre's)",
    )
    p.add_argument("--off", action="store_true", help="stop pre-warming this course")


def check_prewarm(args, _now: datetime) -> None:
    if args.off and (args.lead is not None or args.seats is not None or args.paid_by):
        raise CliError("--off takes no other setting.")
    if not args.off and args.lead is None:
        raise CliError("Say how long before each class window to pre-warm (--lead), or --off.")


def course_prewarm(args, ledger: Ledger, now: datetime) -> None:
    if args.off:
        ledger.clear_prewarm(args.actor, args.slug, now)
        print(f"{args.slug} no longer pre-warms its servers.")
        return
    row = ledger.set_prewarm(
        args.actor,
        args.slug,
        now,
        args.lead,
        args.claim,
        args.seats,
        args.slice_type,
        args.paid_by,
    )
    seats = "every student on the roster" if row.seats is None else f"{row.seats} students"
    plan = [w for w in ledger.class_plan(now) if w["course"] == args.slug]
    nxt = (
        f" Next: from {hkt(datetime.fromisoformat(plan[0]['prewarm_from']))} HKT."
        if plan
        else " No class window in the next week."
    )
    print(
        f"{args.slug} pre-warms {row.slice_type} servers for {seats}, {row.lead_minutes} min "
        f"before each class window, paid by {args.paid_by or args.slug}; servers not claimed "
        f"{row.claim_minutes} min into the window are stopped.{nxt}"
    )


def _seats(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise CliError(f"--seats takes a number of servers from 1 to 10,000, not {text[:20]!r}.")
    return int(text)
