"""A real Slurm for the tests, several nodes on this one machine (n1, n2: one slurmd each): have
scripts/slurm.sh install and start it (or find it running) and tell the tests how to reach it.

Decides: how the script is run (at most once per process and accounting mode; a failure is
remembered), what a test's subprocesses get (SLURM_CONF and the commands' paths), and that a
machine which cannot install or start Slurm (script exit 3: not root, no apt-get) skips the test
outside CI and fails it in CI (``CI`` set). Any other failure fails.

Accounting (slurmdbd + MariaDB) is sticky in the script: ``ensure_slurm(accounting=False)``
takes the cluster as it is, with or without accounting; ``accounting=True`` turns it on.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm.sh"
SCRIPT_TIMEOUT_S = 600  # a cold apt-get install of slurm-wlm, munge, slurmdbd and mariadb-server
CANNOT_INSTALL_STATUS = 3  # scripts/slurm.sh: cannot be installed or started here
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct", "sacctmgr")

_lock = threading.Lock()
_clusters: dict[bool, SlurmCluster] = {}
_failures: dict[bool, SlurmUnavailable] = {}


class SlurmUnavailable(RuntimeError):
    """No usable Slurm. ``skippable``: this machine cannot install or start one (exit 3)."""

    def __init__(self, reason: str, *, skippable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skippable = skippable


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster, as scripts/slurm.sh reported it."""

    env: Mapping[str, str]  # os.environ plus SLURM_CONF (and the script's facts): for subprocesses
    slurm_conf: str
    nodes: tuple[str, ...]  # ("n1", "n2")
    accounting: bool
    cgroup: bool  # jobs see their slices as 0..n-1 (task/cgroup) rather than node-wide numbers
    gres: Mapping[str, int]  # slice type -> count on the cluster (every node), e.g. {"1g.10gb": 40}
    gres_per_node: Mapping[str, int]  # slice type -> count on each node, e.g. {"1g.10gb": 20}
    commands: Mapping[str, str] = field(default_factory=dict)  # "sbatch" -> "/usr/bin/sbatch"

    @property
    def sbatch(self) -> str:
        return self.commands["sbatch"]

    @property
    def squeue(self) -> str:
        return self.commands["squeue"]

    @property
    def scancel(self) -> str:
        return self.commands["scancel"]

    @property
    def sinfo(self) -> str:
        return self.commands["sinfo"]

    @property
    def scontrol(self) -> str:
        return self.commands["scontrol"]

    @property
    def sacct(self) -> str:
        return self.commands["sacct"]

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command with this cluster's environment; output captured, not checked."""
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(self.env),
            timeout=timeout,
            check=False,
        )

    def ensure_account(self, account: str, *users: str) -> None:
        """A Slurm account with these users' associations (accounting must be on)."""
        _script(["ensure-account", account], accounting=self.accounting)
        for user in users:
            _script(["ensure-user", user, account], accounting=self.accounting)


def ensure_slurm(accounting: bool = False) -> SlurmCluster:
    """The running test cluster (with accounting if asked), installing and starting it if needed.

    Skips the calling test when this machine cannot install or start Slurm, except in CI,
    where that fails the test like any other problem.
    """
    try:
        return _ensure(accounting)
    except SlurmUnavailable as e:
        if os.environ.get("CI") or not e.skippable:
            pytest.fail(f"Slurm unavailable: {e.reason}", pytrace=False)
        pytest.skip(f"Slurm unavailable: {e.reason}")


def _ensure(accounting: bool) -> SlurmCluster:
    with _lock:
        if accounting in _clusters:
            return _clusters[accounting]
        if accounting in _failures:
            raise _failures[accounting]
        try:
            cluster = _start(accounting)
        except SlurmUnavailable as e:
            _failures[accounting] = e
            raise
        _clusters[accounting] = cluster
        return cluster


def _script(args: Sequence[str], *, accounting: bool) -> str:
    """Run scripts/slurm.sh; its stdout, or SlurmUnavailable with its stderr."""
    if shutil.which("bash") is None:
        raise SlurmUnavailable("no bash to run scripts/slurm.sh", skippable=True)
    env = {k: v for k, v in os.environ.items() if k != "SLICEHUB_SLURM_ACCOUNTING"}
    if accounting:
        env["SLICEHUB_SLURM_ACCOUNTING"] = "1"
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise SlurmUnavailable(
            f"scripts/slurm.sh {shlex.join(args)} did not finish in {SCRIPT_TIMEOUT_S} s",
            skippable=False,
        ) from e
    if done.returncode != 0:
        raise SlurmUnavailable(
            f"scripts/slurm.sh {shlex.join(args)} exited {done.returncode} after "
            f"{time.monotonic() - started:.1f} s:\n{done.stderr.strip()}",
            skippable=done.returncode == CANNOT_INSTALL_STATUS,
        )
    return done.stdout


def parse_exports(stdout: str) -> dict[str, str]:
    """``export NAME='value'`` lines (what the script prints) -> {NAME: value}."""
    exports = {}
    for line in stdout.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            exports[name] = value
    return exports


def _start(accounting: bool) -> SlurmCluster:
    exports = parse_exports(_script(["start"], accounting=accounting))
    missing = {"SLURM_CONF", "SLICEHUB_SLURM_NODE_NAMES", "SLICEHUB_SLURM_GRES"} - exports.keys()
    if missing:
        raise SlurmUnavailable(
            f"scripts/slurm.sh succeeded but printed no {', '.join(sorted(missing))}",
            skippable=False,
        )
    commands = {}
    for name in COMMANDS:
        path = shutil.which(name)
        if path is None:
            raise SlurmUnavailable(f"{name} is not on PATH after scripts/slurm.sh", skippable=False)
        commands[name] = path
    nodes = tuple(exports["SLICEHUB_SLURM_NODE_NAMES"].split(","))
    per_node = {}
    for entry in exports["SLICEHUB_SLURM_GRES"].split(","):  # the same on every node
        slice_type, _, count = entry.rpartition(":")
        per_node[slice_type] = int(count)
    return SlurmCluster(
        env={**os.environ, **exports},
        slurm_conf=exports["SLURM_CONF"],
        nodes=nodes,
        accounting=exports.get("SLICEHUB_SLURM_ACCOUNTING") == "1",
        cgroup=exports.get("SLICEHUB_SLURM_CGROUP") == "1",
        gres={t: n * len(nodes) for t, n in per_node.items()},
        gres_per_node=per_node,
        commands=commands,
    )
