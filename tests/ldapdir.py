"""A real OpenLDAP directory for the sign-in tests: have scripts/ldap.sh install, load and start
it (or find it running) and tell the tests how to reach it.

Decides: how the script is run (``start``, at most once per process; a failure is remembered and
raised again) and what the tests learn from it (its ``export SLICEHUB_LDAP_...`` lines, read into
one LdapDirectory). It does not decide whether a test skips or fails when there is no directory:
that is the ``ldap_directory`` fixture's job in conftest.py.

The directory's layout (DNs, people, groups) is the script's; the passwords are its test-only
values, printed by it, never kept here.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from slurmcluster import parse_exports

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ldap.sh"
SCRIPT_TIMEOUT_S = 600  # a cold apt-get install of slapd and ldap-utils on a slow mirror
CANNOT_INSTALL_STATUS = 3  # scripts/ldap.sh: cannot be installed or started here
PREFIX = "SLICEHUB_LDAP_"

_lock = threading.Lock()
_directory: LdapDirectory | None = None
_failure: LdapUnavailable | None = None


class LdapUnavailable(RuntimeError):
    """No usable directory. ``skippable``: this machine cannot install or start one (exit 3)."""

    def __init__(self, reason: str, *, skippable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skippable = skippable


@dataclass(frozen=True)
class LdapDirectory:
    """The running test directory, as scripts/ldap.sh reported it."""

    url: str  # ldap://127.0.0.1:3389 (plain LDAP, loopback only: no StartTLS)
    host: str
    port: int
    base_dn: str  # dc=slicehub,dc=test
    people_dn: str  # ou=people,<base>
    groups_dn: str  # ou=groups,<base>
    bind_dn_template: str  # uid={username},ou=people,<base>: LDAPAuthenticator's own format
    admin_dn: str  # the rootdn, for a test that changes the directory (start loads it afresh)
    admin_password: str  # test-only
    staff_group_dn: str  # groupOfNames cn=slicehub-staff
    project_group_dn: str  # groupOfNames cn=proj-vision
    staff_members: tuple[str, ...]  # user names, e.g. ("ldap-ben",)
    project_members: tuple[str, ...]  # e.g. ("ldap-ann",)
    users: Mapping[str, str]  # user name -> test-only password, every person in the directory

    def user_dn(self, username: str) -> str:
        return self.bind_dn_template.format(username=username)

    @property
    def in_no_group(self) -> tuple[str, ...]:
        """The users in neither group (e.g. ("ldap-cat",)): signed in by nothing but a bind."""
        grouped = {*self.staff_members, *self.project_members}
        return tuple(name for name in self.users if name not in grouped)


def ensure_ldap() -> LdapDirectory:
    """The running test directory, installing, loading and starting it if needed.

    Runs ``scripts/ldap.sh start`` (a warm run only checks, ~0.1 s) at most once per process.
    """
    global _directory, _failure
    with _lock:
        if _directory is not None:
            return _directory
        if _failure is not None:
            raise _failure
        try:
            _directory = _read(_run_script())
        except LdapUnavailable as e:
            _failure = e
            raise
        return _directory


def _run_script() -> str:
    if shutil.which("bash") is None:
        raise LdapUnavailable("no bash to run scripts/ldap.sh", skippable=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LdapUnavailable(
            f"scripts/ldap.sh start did not finish in {SCRIPT_TIMEOUT_S} s", skippable=False
        ) from e
    if done.returncode != 0:
        raise LdapUnavailable(
            f"scripts/ldap.sh start exited {done.returncode} after "
            f"{time.monotonic() - started:.1f} s:\n{done.stderr.strip()}",
            skippable=done.returncode == CANNOT_INSTALL_STATUS,
        )
    return done.stdout


def _read(stdout: str) -> LdapDirectory:
    """The script's exports -> LdapDirectory; a missing one is the script's bug, not a skip."""
    exports = {
        name.removeprefix(PREFIX).lower(): value
        for name, value in parse_exports(stdout).items()
        if name.startswith(PREFIX)
    }
    try:
        users = dict(pair.split(":", 1) for pair in exports["test_users"].split())
        return LdapDirectory(
            url=exports["url"],
            host=exports["host"],
            port=int(exports["port"]),
            base_dn=exports["base_dn"],
            people_dn=exports["people_dn"],
            groups_dn=exports["groups_dn"],
            bind_dn_template=exports["bind_dn_template"],
            admin_dn=exports["admin_dn"],
            admin_password=exports["admin_test_password"],
            staff_group_dn=exports["staff_group_dn"],
            project_group_dn=exports["project_group_dn"],
            staff_members=tuple(exports["staff_members"].split()),
            project_members=tuple(exports["project_members"].split()),
            users=users,
        )
    except (KeyError, ValueError) as e:
        raise LdapUnavailable(
            f"scripts/ldap.sh start succeeded but its exports are incomplete ({e!r}):\n{stdout}",
            skippable=False,
        ) from e
