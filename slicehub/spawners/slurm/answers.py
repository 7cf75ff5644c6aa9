"""What Slurm's commands answer, as plain data: a submitted job's id, job states and queue
positions (squeue), free GRES counts per type and each node's free CPUs, memory and slices
(sinfo), accounted usage per job (sacct).

Pure: text in, data out; no subprocess, no I/O. The formats are those `commands` asks for; the
parsers were written against the output of Debian's slurm-wlm 22.05.8 (recorded in
tests/fixtures/slurm/). Times from Slurm are the controller's local time, returned as naive
datetimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from .commands import (
    DELIMITER,
    GRES_NAME,
    NO_VALUE,
    SACCT_FIELDS,
    SINFO_FIELDS,
    SINFO_NODE_FIELDS,
    SLURM_TIME_FORMAT,
    SQUEUE_FIELDS,
)

# squeue/sacct states after which a job never runs again.
FINISHED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)


# Node states (sinfo's StateLong, without a flag suffix) whose free GRES a new job can get.
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


def parse_sbatch(stdout: str) -> str:
    """The job id that ``sbatch --parsable`` printed: ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = re.fullmatch(r"([1-9][0-9]{0,9})(?:;[A-Za-z0-9_-]+)?", lines[-1]) if lines else None
    if match is None:
        raise ValueError(f"sbatch printed no job id: {stdout[:200]!r}")
    return match.group(1)


@dataclass(frozen=True)
class QueuedJob:
    """One line of ``squeue``: a job the controller still knows (MinJobAge after it ends)."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, CONFIGURING, SUSPENDED, COMPLETED, CANCELLED, ...
    reason: str | None  # why it waits: Resources, Priority, AssocMaxJobsLimit, ...; None when none
    partition: str
    account: str | None
    user: str
    gres: Mapping[str, int]  # requested slices per type, e.g. {"1g.10gb": 1}
    nodes: str | None  # Slurm hostlist, e.g. "gpu[01-02]"; None while pending
    start: datetime | None  # actual start, or the scheduler's estimate while pending
    submit: datetime | None
    priority: int | None
    name: str

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


def squeue_unknown_job(stderr: str) -> bool:
    """Did squeue fail because it does not know the (single) job asked for? It then exits 1
    with "Invalid job id specified"; with several ids it leaves unknown ones out instead."""
    return "Invalid job id specified" in stderr


def parse_squeue(stdout: str) -> list[QueuedJob]:
    """The jobs in squeue's output, in its order."""
    jobs = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = line.split(DELIMITER, len(SQUEUE_FIELDS) - 1)
        if len(values) != len(SQUEUE_FIELDS):
            raise ValueError(
                f"squeue line has {len(values)} fields, expected {len(SQUEUE_FIELDS)}: {line!r}"
            )
        row = dict(zip((name for name, _ in SQUEUE_FIELDS), values, strict=True))
        jobs.append(
            QueuedJob(
                job_id=row["job_id"].strip(),
                state=row["state"].strip(),
                reason=_optional(row["reason"]),
                partition=row["partition"].strip(),
                account=_optional(row["account"]),
                user=row["user"].strip(),
                gres=_gres_counts(row["tres_per_node"]),
                nodes=_optional(row["nodes"]),
                start=_parse_time(row["start"]),
                submit=_parse_time(row["submit"]),
                priority=int(row["priority"]) if row["priority"].strip().isdigit() else None,
                name=row["name"],
            )
        )
    return jobs


def queue_positions(jobs: Iterable[QueuedJob]) -> dict[str, int]:
    """1-based place of each pending job among the pending jobs of its partition that ask for
    the same slices, highest priority first, then earliest submitted, then lowest id.

    Give it the whole pending queue (``squeue_argv(pending_only=True)``): jobs that ask for other
    slice types are not ahead, since a free 1g.10gb slice does not wait for an h100 job.
    """
    groups: dict[tuple[str, tuple[tuple[str, int], ...]], list[QueuedJob]] = {}
    for job in jobs:
        if job.pending:
            groups.setdefault((job.partition, tuple(sorted(job.gres.items()))), []).append(job)
    positions = {}
    for group in groups.values():
        group.sort(key=lambda j: (-(j.priority or 0), j.submit or datetime.max, int(j.job_id)))
        for place, job in enumerate(group, start=1):
            positions[job.job_id] = place
    return positions


@dataclass(frozen=True)
class GresAvailability:
    """Slices of one type: configured on all nodes, in use, and free on nodes taking jobs."""

    total: int
    used: int
    free: int


@dataclass
class _Tally:
    total: int = 0
    used: int = 0
    free: int = 0
    nodes: set[str] = field(default_factory=set)


def parse_sinfo_gres(stdout: str) -> dict[str, GresAvailability]:
    """Per slice type (GRES ``gpu`` type): total, used, and free on nodes that take jobs now.

    A node in several partitions is listed once per partition; it is counted once. A drained,
    down or not responding node's slices count in ``total`` and ``used``, never in ``free``.
    """
    tallies: dict[str, _Tally] = {}
    seen: set[str] = set()
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(DELIMITER)]
        if len(values) != len(SINFO_FIELDS):
            raise ValueError(
                f"sinfo line has {len(values)} fields, expected {len(SINFO_FIELDS)}: {line!r}"
            )
        node, state, configured, used = values
        if node in seen:
            continue
        seen.add(node)
        usable = state in USABLE_NODE_STATES  # "idle*", "drained", "down~": not usable
        in_use = _gres_counts(used)
        for slice_type, count in _gres_counts(configured).items():
            tally = tallies.setdefault(slice_type, _Tally())
            tally.total += count
            tally.used += in_use.get(slice_type, 0)
            if usable:
                tally.free += max(count - in_use.get(slice_type, 0), 0)
    return {t: GresAvailability(v.total, v.used, v.free) for t, v in sorted(tallies.items())}


@dataclass(frozen=True)
class NodeResources:
    """One node as ``sinfo --Node`` sees it: where it is, which partitions it serves, and what
    of its CPUs, memory and slices (GRES ``gpu`` per type) is configured and in use."""

    name: str
    address: str
    partitions: frozenset[str]
    state: str  # sinfo's StateLong: "idle", "mixed", "drained", "down*", ...
    cpus_idle: int
    cpus_total: int
    memory_mb: int
    memory_alloc_mb: int
    gres: Mapping[str, int]
    gres_used: Mapping[str, int]

    @property
    def usable(self) -> bool:
        """Takes new jobs now (not drained, down, or not responding)."""
        return self.state in USABLE_NODE_STATES


def parse_sinfo_nodes(stdout: str) -> dict[str, NodeResources]:
    """Nodes by name; a node listed once per partition becomes one entry with every partition
    (the default partition's trailing ``*`` removed)."""
    nodes: dict[str, NodeResources] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(DELIMITER)]
        if len(values) != len(SINFO_NODE_FIELDS):
            raise ValueError(
                f"sinfo line has {len(values)} fields, expected {len(SINFO_NODE_FIELDS)}: {line!r}"
            )
        row = dict(zip(SINFO_NODE_FIELDS, values, strict=True))
        name = row["NodeList"]
        partition = row["Partition"].rstrip("*")
        if name in nodes:
            old = nodes[name]
            nodes[name] = replace(old, partitions=old.partitions | {partition})
            continue
        cpus = row["CPUsState"].split("/")
        if len(cpus) != 4 or not all(c.isdigit() for c in cpus):
            raise ValueError(f"sinfo CPUsState {row['CPUsState']!r} is not A/I/O/T")
        nodes[name] = NodeResources(
            name=name,
            address=row["NodeAddr"] or name,
            partitions=frozenset({partition}),
            state=row["StateLong"],
            cpus_idle=int(cpus[1]),
            cpus_total=int(cpus[3]),
            memory_mb=_int_or_zero(row["Memory"]),
            memory_alloc_mb=_int_or_zero(row["AllocMem"]),
            gres=_gres_counts(row["Gres"]),
            gres_used=_gres_counts(row["GresUsed"]),
        )
    return nodes


def _int_or_zero(text: str) -> int:
    text = text.strip().rstrip("+")
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class AccountedJob:
    """One job's line in ``sacct --allocations``: what it held, from when to when."""

    job_id: str
    state: str  # first word: "CANCELLED by 1000" -> "CANCELLED"
    partition: str
    account: str | None
    user: str
    submit: datetime | None
    start: datetime | None  # None: never started
    end: datetime | None  # None: still running (or never started and not ended)
    elapsed_s: int
    gres: Mapping[str, int]  # allocated slices per type, from AllocTRES gres/gpu:TYPE=N
    exit_code: str  # "0:0" = exit status : signal
    name: str


def parse_sacct(stdout: str) -> list[AccountedJob]:
    """The jobs in ``sacct --parsable2`` output made by ``sacct_argv``, in its order."""
    jobs = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        values = line.split(DELIMITER, len(SACCT_FIELDS) - 1)
        if len(values) != len(SACCT_FIELDS):
            raise ValueError(
                f"sacct line has {len(values)} fields, expected {len(SACCT_FIELDS)}: {line!r}"
            )
        row = dict(zip(SACCT_FIELDS, values, strict=True))
        elapsed = row["ElapsedRaw"].strip()
        jobs.append(
            AccountedJob(
                job_id=row["JobID"].strip(),
                state=row["State"].split(" ", 1)[0].strip(),
                partition=row["Partition"].strip(),
                account=_optional(row["Account"]),
                user=row["User"].strip(),
                submit=_parse_time(row["Submit"]),
                start=_parse_time(row["Start"]),
                end=_parse_time(row["End"]),
                elapsed_s=int(elapsed) if elapsed.isdigit() else 0,
                gres=_tres_gres(row["AllocTRES"]),
                exit_code=row["ExitCode"].strip(),
                name=row["JobName"],
            )
        )
    return jobs


# "gpu:1g.10gb:2", "gpu:h100:2(IDX:0,3)", "gres:gpu:h100:1", "gpu:2(S:0-1)": name, type, count.
_GRES_ITEM = re.compile(
    r"(?:gres[:/])?(?P<name>[A-Za-z0-9_-]+):(?:(?P<type>[A-Za-z0-9._-]+):)?(?P<count>[0-9]+)"
    r"(?:\([^)]*\))?"
)


_TRES_GRES = re.compile(rf"gres/{GRES_NAME}:(?P<type>[A-Za-z0-9._-]+)=(?P<count>[0-9]+)")


def _gres_counts(text: str) -> dict[str, int]:
    """Typed ``gpu`` counts in a GRES list (sinfo Gres/GresUsed, squeue %b); other GRES and
    untyped gpu entries are left out."""
    counts: dict[str, int] = {}
    for match in _GRES_ITEM.finditer(text):
        if match.group("name") == GRES_NAME and match.group("type"):
            counts[match.group("type")] = counts.get(match.group("type"), 0) + int(match["count"])
    return counts


def _tres_gres(text: str) -> dict[str, int]:
    """Typed gpu counts in a TRES list: "cpu=1,gres/gpu:1g.10gb=2,gres/gpu=2" -> {"1g.10gb": 2}."""
    return {m["type"]: int(m["count"]) for m in _TRES_GRES.finditer(text)}


def _optional(text: str) -> str | None:
    text = text.strip()
    return None if text in NO_VALUE else text


def _parse_time(text: str) -> datetime | None:
    text = text.strip()
    if text in NO_VALUE:
        return None
    return datetime.strptime(text, SLURM_TIME_FORMAT)
