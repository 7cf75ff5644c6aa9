"""`slicehub doctor`: is this deployment ready to serve? Each check says OK, or what is wrong
and the fix, and nothing is changed: no migration, no seed, no file written.

The checks, in the order a hub meets them at start-up: the deployment file, the data dir, the
site file (against the cluster, for a Slurm site), the ledger (reachable, its schema current,
a list price for every offered slice type), the proxy's token, sign-in (the authenticator
importable; the LDAP server answering), Slurm's commands (a Slurm site), the SMTP server (when
[smtp] names one: connected, greeted, TLS and sign-in as configured; no mail is sent).
"""

from __future__ import annotations

import importlib
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config_file import ConfigFileError
from .db import schema_behind, unreachable
from .settings import Settings
from .sign_in import AUTHENTICATORS


@dataclass(frozen=True)
class Finding:
    check: str
    problem: str = ""  # "" when all is well
    fix: str = ""
    note: str = ""  # what was found, when all is well

    @property
    def ok(self) -> bool:
        return not self.problem

    def line(self) -> str:
        if self.ok:
            return f"OK    {self.check}" + (f": {self.note}" if self.note else "")
        return f"FAIL  {self.check}: {self.problem}. Fix: {self.fix}"


def examine(settings: Settings | None = None) -> Iterator[Finding]:
    """Every check's finding; a check that cannot run because an earlier one failed is left
    out (the earlier one says why)."""
    settings = settings or Settings()
    try:
        deployment = settings.deployment
    except ConfigFileError as e:
        yield Finding("deployment file", f"{e.path}: {e.key}: {e.problem}", e.fix)
        return
    where = str(deployment.path) if deployment.path else "none: a lab server (PAM)"
    yield Finding("deployment file", note=f"{where}, mode {deployment.mode}")
    yield _data_dir(Path(settings.data_dir))
    site = None
    for finding, found in _site(settings.site_file):
        site = found
        yield finding
    yield from _ledger(settings.ledger_url, site, deployment.demo)
    yield _proxy_token(Path(settings.data_dir) / "proxy_auth_token")
    yield from _sign_in(deployment)
    if deployment.smtp is not None:
        yield _smtp(deployment.smtp)


def _data_dir(path: Path) -> Finding:
    if not path.is_dir():
        return Finding(
            "data dir",
            f"{path} does not exist",
            f"create it for the hub's account: mkdir -m 0700 {path}",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return Finding(
            "data dir", f"{path} is not writable by this user", "chown it to the hub's account"
        )
    return Finding("data dir", note=str(path))


def _site(path: str):
    from .quota.site_parking import read_site_parking
    from .spawners.site import SiteError, check_site

    try:
        site = check_site(path)
        read_site_parking(path)  # the culler's [parking], which the hub checks at start too
    except SiteError as e:  # the same ConfigFileError as the parking table's
        yield Finding("site file", f"{e.key}: {e.problem}", e.fix), None
        return
    kind = "Slurm jobs" if site.slurm is not None else "this machine's nodes"
    yield Finding("site file", note=f"{path}: {len(site.slice_types)} slice types on {kind}"), site
    if site.slurm is not None:
        from .spawners.slurm.offer import check_cluster

        nodes = check_cluster(site)
        if nodes is None:
            yield (
                Finding(
                    "Slurm",
                    "sinfo did not answer",
                    "start slurmctld, or point [slurm.commands] at the cluster's commands",
                ),
                site,
            )
        else:
            yield Finding("Slurm", note=f"{len(nodes)} node(s) answer"), site


def _ledger(url: str, site, demo: bool) -> Iterator[Finding]:
    problem = unreachable(url)
    if problem:
        yield Finding(
            "ledger",
            f"{url} cannot be reached ({problem})",
            "start the database, or correct the URL",
        )
        return
    missing = _sqlite_file_missing(url)
    if missing and demo:
        yield Finding("ledger", note=f"{missing} is made and seeded at the demo's first start")
        return
    if missing:
        yield Finding(
            "ledger",
            f"{missing} does not exist yet, so no slice type has a list price",
            "set the prices: slicehub admin price set <type> --per-hour <HK$> --from <date> "
            "(it makes the ledger)",
        )
        return
    from .quota.demo import missing_prices
    from .quota.ledger import Ledger
    from .quota.store import MIGRATIONS, VERSION_TABLE

    ledger = Ledger(url)
    try:
        behind = schema_behind(ledger.engine, MIGRATIONS, VERSION_TABLE)
        if behind:
            yield Finding(
                "ledger schema",
                f"migrations {', '.join(behind)} are not applied",
                "start the hub (its quota service migrates), or run any `slicehub admin` command",
            )
            return
        yield Finding("ledger", note=f"{ledger.engine.url.render_as_string()}, schema current")
        if site is not None:
            unpriced = missing_prices(ledger, site.slice_types)
            if unpriced:
                verb = "has" if len(unpriced) == 1 else "have"
                yield Finding(
                    "list prices",
                    f"{', '.join(unpriced)} {verb} no list price",
                    "slicehub admin price set <type> --per-hour <HK$> --from <date>",
                )
            else:
                yield Finding("list prices", note="every offered slice type has one")
    finally:
        ledger.dispose()


def _sqlite_file_missing(url: str) -> str:
    """The file of an SQLite ledger not made yet ("" otherwise): opening it would make it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        if not Path(parsed.database).exists():
            return parsed.database
    return ""


def _proxy_token(path: Path) -> Finding:
    if not path.exists():
        return Finding("proxy token", note="made at the hub's first start")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Finding(
            "proxy token", f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}"
        )
    return Finding("proxy token", note=f"{path} (0600)")


def _sign_in(deployment) -> Iterator[Finding]:
    sign_in = deployment.sign_in
    if deployment.demo:
        yield Finding("sign-in", note="the demo's users (demo mode)")
        return
    name = sign_in.authenticator_class or AUTHENTICATORS[sign_in.method]
    module, _, attr = name.rpartition(".")
    try:
        getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        yield Finding(
            "sign-in", f"{name} cannot be imported ({e})", "install it in the hub's environment"
        )
        return
    yield Finding("sign-in", note=f"{sign_in.method} ({name})")
    if sign_in.ldap is not None:
        yield _answers("LDAP server", sign_in.ldap.server, sign_in.ldap.port)


def _answers(check: str, host: str, port: int, connect: Callable = socket.create_connection):
    try:
        connect((host, port), timeout=5).close()
    except OSError as e:
        return Finding(
            check, f"{host}:{port} does not answer ({e})", "start it, or correct [sign_in.ldap]"
        )
    return Finding(check, note=f"{host}:{port} answers")


def _smtp(smtp) -> Finding:
    from .quota.scheme.mailer import check_server, describe

    try:
        return Finding("SMTP server", note=check_server(smtp))
    except Exception as e:
        return Finding(
            "SMTP server",
            describe(e, smtp),
            "start it or correct [smtp]; until it answers the scheme's e-mails wait in the outbox",
        )


def report(settings: Settings | None = None) -> tuple[str, bool]:
    """The findings as lines, and whether all is well."""
    findings = list(examine(settings))
    return "\n".join(f.line() for f in findings), all(f.ok for f in findings)
