"""`slicehub admin project add|group`: a project from a terminal, and what `course add` shares
with it (a course is a project with a roster, `slicehub.quota.cli_course`).

Decides how the typed project becomes `Ledger.add_project`: its slice types must have a list
price first, a credit limit goes only with the full-price policy, and its dates are parsed
before the ledger opens. Errors are `CliError` sentences (`slicehub.quota.cli`).
"""

from __future__ import annotations

from datetime import datetime

from . import statement
from .cli_input import CliError, parse_period
from .ledger import Ledger
from .statement_render import hkt


def check_priced(ledger: Ledger, types: list[str]) -> None:
    if types == ["*"]:
        return
    priced = statement.priced_slice_types(ledger)
    missing = [t for t in types if t not in priced]
    if missing:
        raise CliError(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no list price; "
            "set one first with: slicehub admin price set TYPE --per-hour HK$ --from WHEN."
        )


def check_project(args, now: datetime) -> None:
    args.period = parse_period(args.valid_from, args.valid_until, "project")
    if args.credit_limit and args.policy != "full_price":
        raise CliError("A credit limit applies only with --policy full_price.")


def add_project(args, ledger, now, types, max_sessions, member_cap, is_course=False) -> None:
    """`project add` and `course add` alike: the slice types must be priced first; a project
    may name its member group (`--group`), a course may not."""
    start, until = args.period
    check_priced(ledger, types)
    ledger.add_project(
        args.actor,
        args.slug,
        scheme=args.scheme,
        name=args.name,
        organisation=args.org,
        pi=args.pi,
        valid_from=start,
        valid_until=until,
        allowed_slice_types=types,
        max_concurrent_sessions=max_sessions,
        policy=args.policy,
        credit_limit_cents=args.credit_limit or 0,
        member_cap_cents=member_cap,
        is_course=is_course,
        member_group=getattr(args, "group", None),
        now=now,
    )


def project_add(args, ledger: Ledger, now: datetime) -> None:
    start, until = args.period
    with ledger.transaction():
        add_project(args, ledger, now, args.types, args.max_sessions, args.member_cap)
    group = f"; the members of hub group {args.group} are its members too" if args.group else ""
    print(
        f"Added project {args.slug} ({args.name}, {args.org}) under {args.scheme}, "
        f"valid {hkt(start)} to {hkt(until)} HKT{group}."
    )


def check_project_group(args, now: datetime) -> None:
    if args.group is None and not args.clear:
        raise CliError("Give the hub group's name, or --clear for no group.")
    if args.group is not None and args.clear:
        raise CliError("Give the hub group's name or --clear, not both.")


def project_group(args, ledger: Ledger, now: datetime) -> None:
    before = ledger.set_member_group(args.actor, args.slug, args.group, now)
    was = f" (it was {before})" if before else ""
    if args.group is None:
        print(f"{args.slug} takes members from no group now{was}; its member rows stay.")
    else:
        print(
            f"The members of hub group {args.group} are members of {args.slug} now{was}, "
            "with the project's member cap; its member rows stay as they are."
        )
