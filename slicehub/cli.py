"""The `slicehub` command: run the demo hub, check a site file, show the slices.

    slicehub demo [--config FILE]        start the hub on the embedded default (127.0.0.1:8000)
                                         with the installed hub_config (slicehub.settings)
    slicehub check-site FILE             check a site file; say what it offers
    slicehub slices [--site F] [--db U]  the inventory and who holds what
    slicehub slurm-reconcile [--since D]  Slurm's accounting (sacct) against the ledger, per job
    slicehub doctor                      is this deployment ready? each check, OK or the fix
    slicehub admin|statement|report …    the subsidy ledger (slicehub.quota.cli)

Errors in what the operator typed or wrote go to stderr as one sentence, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slicehub.common.money import format_money
from slicehub.config_file import ConfigFileError
from slicehub.hub import check_site_or_exit
from slicehub.quota.cli import add_commands as add_ledger_commands
from slicehub.settings import Settings, deployment_dir
from slicehub.spawners.site import Site, load_site
from slicehub.spawners.slurm.reconcile import DEFAULT_TOLERANCE_S


def _demo(args) -> int:
    """The embedded demo: its own deployment file (demo.toml), unless one is named."""
    os.environ.setdefault("SLICEHUB_DEPLOYMENT", str(deployment_dir() / "demo.toml"))
    password = os.environ.get("SLICEHUB_DEMO_PASSWORD", "slicehub-demo")
    site = check_site_or_exit(Settings().site_file)
    print(
        "\nSlicehub demo: http://127.0.0.1:8000\n"
        f"  users:    alice, bob (researchers), staff (admin)\n"
        f"  password: {password}\n"
        f"  site:     {site.path} ({len(site.slice_types)} slice types)\n"
        "  stop with Ctrl-C\n",
        flush=True,
    )
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    os.execv(str(jupyterhub), [str(jupyterhub), "-f", str(args.config)])
    return 0  # not reached


def _check_site(args) -> int:
    from slicehub.spawners.local.allocator import Allocator
    from slicehub.spawners.local.manager import request_for, resolve_inventory

    site = check_site_or_exit(args.file)
    if site.slurm is not None:
        return _check_slurm_site(site)
    inventory = resolve_inventory(site)
    allocator = Allocator(inventory)
    kind = "declared in the site file" if inventory.declared else "discovered through NVML"
    print(f"{site.path}: OK. {len(inventory.nodes)} node(s), {len(inventory.gpus)} GPU(s), {kind}.")
    print(f"{'slice type':<16} {'CPUs':>5} {'memory':>9} {'price/h':>11} {'capacity':>9}")
    for st in site.slice_types.values():
        cap = allocator.capacity(request_for(st))
        gib = st.memory_bytes / 1024**3
        price = format_money(st.price_cents, site.currency)
        print(f"{st.name:<16} {st.cpus:>5} {gib:>7.0f}Gi {price:>11} {cap:>9}")
    return 0


def _check_slurm_site(site: Site) -> int:
    from slicehub.spawners.slurm.offer import availability, check_cluster

    nodes = check_cluster(site)
    state = "Slurm did not answer" if nodes is None else f"{len(nodes)} Slurm node(s)"
    print(f"{site.path}: OK. Servers run as Slurm jobs; {state}.")
    free = {av.slice_type.name: av for av in availability(site, nodes)} if nodes else {}
    print(
        f"{'slice type':<16} {'partition':<10} {'GRES':<16} {'account map':<12} {'free/total':>10}"
    )
    accounts = f"{len(site.slurm.accounts)} project(s)"
    for name, where in site.slurm.slice_types.items():
        gres = f"gpu:{where.gres_type}:{where.gres_count}" if where.gres_type else "-"
        av = free.get(name)
        counts = f"{av.free}/{av.capacity}" if av else "?"
        print(f"{name:<16} {where.partition:<10} {gres:<16} {accounts:<12} {counts:>10}")
    return 0


def _slices(args) -> int:
    from slicehub.spawners.local.manager import SliceManager

    settings = Settings()
    manager = SliceManager(
        check_site_or_exit(args.site or settings.site_file), args.db or settings.slices_url
    )
    try:
        for av in manager.availability():
            print(f"{av.slice_type.name:<16} {av.free:>4} free of {av.capacity}")
        rows = manager.store.all()
        print(f"\n{len(rows)} reservation(s)")
        for r in rows:
            a = r.assignment
            tag = " (declared)" if a.declared and a.devices else ""
            print(f"  {r.holder:<24} {a.slice_type:<14} {a.node} {','.join(a.devices)}{tag}")
    finally:
        manager.close()
    return 0


def _slurm_reconcile(args) -> int:
    import subprocess
    from datetime import UTC, datetime, timedelta

    from slicehub.quota.ledger import Ledger
    from slicehub.quota.reader import LedgerReader
    from slicehub.spawners.slurm import answers as sa
    from slicehub.spawners.slurm import commands as sc
    from slicehub.spawners.slurm import reconcile as rec

    site = load_site(args.site) if args.site else None
    sacct = site.slurm.command("sacct") if site and site.slurm else "sacct"
    since = args.since or datetime.now(UTC) - timedelta(days=7)
    if since.tzinfo is None:
        since = since.astimezone()  # as typed: this host's local time, like Slurm's
    argv = sc.sacct_argv(since=since.astimezone().replace(tzinfo=None), executable=sacct)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"slicehub: sacct did not answer: {e}", file=sys.stderr)
        return 2
    if done.returncode != 0:
        print(
            f"slicehub: sacct failed ({done.stderr.strip()[:300]}). The reconcile needs Slurm "
            "accounting (slurmdbd).",
            file=sys.stderr,
        )
        return 2
    jobs = sa.parse_sacct(done.stdout)
    ids = [named[0] for j in jobs if (named := rec.session_of_job(j.name)) is not None]
    ledger = Ledger(args.ledger or Settings().ledger_url)
    try:
        views = LedgerReader(ledger).sessions_for_reconcile(ids, since.astimezone(UTC))
    finally:
        ledger.dispose()
    sessions = rec.ledger_sessions(views)
    rows = rec.compare(jobs, sessions, args.tolerance, site)
    print(rec.report(rows, args.tolerance))
    return 1 if any(r.problem for r in rows) else 0


def _window_capacity(course, slice_type, seats, starts_at, ends_at) -> str:
    """Can this deployment's site hold a class window? (`slicehub admin course add|window`)"""
    from slicehub.spawners.class_capacity import check_window_capacity

    return check_window_capacity(
        Settings().site_file, course, slice_type, seats, starts_at, ends_at
    )


def _doctor(args) -> int:
    from slicehub.doctor import report

    text, ok = report()
    print(text)
    return 0 if ok else 1


def _since(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-11-01 or 2026-11-01T08:00)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="slicehub", description="Slicehub: GPU slices for JupyterHub"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the hub on the embedded default at 127.0.0.1:8000")
    p.add_argument("--config", type=Path, default=deployment_dir() / "jupyterhub_config.py")
    p.set_defaults(run=_demo)
    p = sub.add_parser("check-site", help="check a site file and show what it offers")
    p.add_argument("file", type=Path)
    p.set_defaults(run=_check_site)
    p = sub.add_parser("slices", help="show free slices and who holds what")
    p.add_argument(
        "--site", type=Path, help="the site file (default: the deployment's, slicehub.settings)"
    )
    p.add_argument("--db", help="the reservations' database (default: the deployment's)")
    p.set_defaults(run=_slices)
    p = sub.add_parser(
        "slurm-reconcile",
        help="compare Slurm's accounting (sacct) with the ledger's charges, per job",
    )
    p.add_argument("--ledger", help="the ledger's database URL (default: the deployment's)")
    p.add_argument("--site", type=Path, help="the Slurm site file: also check each job's slices")
    p.add_argument("--since", type=_since, help="jobs since this date (default: 7 days ago)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_S,
        help="seconds two sides may differ: the metering tick (default: %(default)s)",
    )
    p.set_defaults(run=_slurm_reconcile)
    p = sub.add_parser(
        "doctor",
        help="check this deployment (deployment file, site, ledger, prices, sign-in, Slurm); "
        "change nothing",
    )
    p.set_defaults(run=_doctor)
    add_ledger_commands(sub, _window_capacity)  # admin, statement, report
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigFileError as e:  # the deployment or site file: one sentence, as everywhere
        print(f"slicehub: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
