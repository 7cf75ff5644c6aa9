"""The read-only verbs of `slicehub admin`, `slicehub statement` and `slicehub report`: what
staff see (projects, a balance, the audit log) and the statements and reports they write out.

Decides how these read in a terminal (columns, HK$, Hong Kong time) and that a file is written in
full or not at all. It only reads the ledger; the verbs that change it are in
`slicehub.quota.cli`, which mounts these too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from slicehub.common.money import format_money

from . import statement, statement_render
from .cli_input import parse_month, parse_out
from .cli_parking import settings_text
from .ledger import Ledger
from .statement_render import hkt, rate_text


def show_projects(args, ledger: Ledger, now: datetime) -> None:
    rows = statement.project_overview(ledger)
    if not rows:
        print("No projects yet.")
        return
    print(
        f"{'project':<24} {'scheme':<16} {'policy':<10} {'valid (HKT)':<23} "
        f"{'slice types':<28} {'subsidy left':>16}"
    )
    for p, scheme in rows:
        bal = ledger.balance(p.slug, now)
        types = ",".join(json.loads(p.allowed_slice_types))
        slug = p.slug + (" (course)" if p.is_course else "")
        valid = f"{hkt(p.valid_from, '%Y-%m-%d')}..{hkt(p.valid_until, '%Y-%m-%d')}"
        print(
            f"{slug:<24} {scheme.name:<16} {p.policy:<10} {valid:<23} "
            f"{types:<28} {format_money(bal.subsidy_left_cents):>16}"
        )


def show_balance(args, ledger: Ledger, now: datetime) -> None:
    [(p, scheme)] = statement.project_overview(ledger, args.project)
    usage = statement.member_usage(ledger, args.project, args.member) if args.member else None
    b = ledger.balance(args.project, now)
    lines = [
        ("grants in force", b.grants_cents),
        ("subsidy charged", b.subsidy_charged_cents),
        ("subsidy held", b.subsidy_held_cents),
        ("subsidy left", b.subsidy_left_cents),
        ("co-pay charged", b.copay_charged_cents),
    ]
    if p.policy == "full_price":
        lines += [("credit limit", b.credit_limit_cents), ("credit left", b.credit_left_cents)]
    print(
        f"{p.slug}: {p.name} ({p.organisation}, PI {p.pi}); scheme {scheme.name} at "
        f"{rate_text(scheme.subsidy_rate_bp)}; policy {p.policy}; as of {hkt(now)} HKT"
    )
    if p.member_group:
        print(f"  members: by row, and the members of hub group {p.member_group}")
    print(f"  parking: {settings_text(p.idle_minutes, p.idle_warning_minutes, p.parking_opt_out)}")
    for label, cents in lines:
        print(f"  {label:<18} {format_money(cents):>18}")
    if usage is not None:
        cap = format_money(usage.cap_cents) if usage.cap_cents is not None else "no cap"
        print(
            f"  {usage.username} ({usage.role}): {format_money(usage.used_cents)} of subsidy "
            f"used or held; cap {cap}"
        )


def show_audit(args, ledger: Ledger, now: datetime) -> None:
    for e in statement.recent_audit(ledger, args.limit):
        at = hkt(e.at, "%Y-%m-%d %H:%M:%S")
        print(f"{at}  {e.actor:<16} {e.action:<16} {e.subject}  {e.detail}")


def write_out(text: str, out: Path | None) -> None:
    """To stdout, or to `out` in full or not at all (written beside it, then renamed)."""
    if out is None:
        sys.stdout.write(text)
        return
    folder = parse_out(str(out)).resolve().parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"Wrote {out}.", file=sys.stderr)


def check_output(args, now: datetime) -> None:
    if getattr(args, "month", None) is not None:
        args.month = parse_month(args.month)
    if args.out is not None:
        args.out = parse_out(args.out)


def write_statement(args, ledger: Ledger, now: datetime) -> None:
    st = statement.monthly_statement(ledger, args.project, args.month, now)
    text = (
        statement_render.statement_html(st)
        if args.format == "html"
        else statement_render.statement_csv(st)
    )
    write_out(text, args.out)


def write_scheme_report(args, ledger: Ledger, now: datetime) -> None:
    names = [args.scheme] if args.scheme else statement.scheme_names(ledger)
    reports = [statement.scheme_report(ledger, n, now) for n in names]
    if args.format == "html":
        text = statement_render.scheme_report_html(reports, now)
    else:
        text = statement_render.scheme_report_csv(reports)
    write_out(text, args.out)
