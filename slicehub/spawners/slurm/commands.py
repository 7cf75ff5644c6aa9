"""The Slurm command lines Slicehub runs, and what their output means.

Decides: the exact argv of ``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol`` and
``sacct`` (argv lists for ``create_subprocess_exec``, never shell strings), which values may reach
them (each one checked against a strict pattern or range; a bad one raises ValueError naming the
field), and how their machine-readable output becomes plain data (job states, queue positions,
free GRES counts per type, each node's free CPUs, memory and slices, accounted usage per job).

Does not decide: which slice, partition or account a user gets (the caller passes values it has
already chosen and validated), nor run anything: no subprocess, no I/O. The batch script goes to
``sbatch`` on stdin, written by the caller; nothing here is merged into it, so no value can add an
``#SBATCH`` line.

GPU slices are GRES of name ``gpu`` with a type (``gpu:1g.10gb:1``). Times from Slurm are the
controller's local time, returned as naive datetimes. Parsers were written against the output of
Debian's slurm-wlm 22.05.8 (recorded in tests/fixtures/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

GRES_NAME = "gpu"
DELIMITER = "|"  # no field below can contain it, except job names: always the last field
SLURM_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
NO_VALUE = frozenset({"", "N/A", "None", "Unknown", "(null)"})

MAX_CPUS = 256
MAX_MEM_MB = 4 * 1024 * 1024  # 4 TiB
MAX_TIME_MINUTES = 366 * 24 * 60
MAX_GRES_COUNT = 64
MAX_PATH_LENGTH = 1024

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PARTITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ACCOUNT = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}")
# Lower case only: sacct prints TRES names lower-cased (H100-7g.80gb -> gres/gpu:h100-7g.80gb).
_GRES_TYPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_JOB_ID = re.compile(r"[1-9][0-9]{0,9}")
_EXECUTABLE = re.compile(r"[a-z]+|/[A-Za-z0-9._/-]{1,255}")
_PATH_COMPONENT = re.compile(r"[A-Za-z0-9._@+-]+")
# sbatch replaces these in --output: job id, job name, user, array master id and index, node.
_OUTPUT_COMPONENT = re.compile(r"(?:[A-Za-z0-9._@+-]|%[jxuAaNn%])+")

# squeue fields, in order (name last: another user's job name may hold the delimiter).
SQUEUE_FIELDS = (
    ("job_id", "%i"),
    ("state", "%T"),
    ("reason", "%r"),
    ("partition", "%P"),
    ("account", "%a"),
    ("user", "%u"),
    ("tres_per_node", "%b"),
    ("nodes", "%N"),
    ("start", "%S"),
    ("submit", "%V"),
    ("priority", "%Q"),
    ("name", "%j"),
)
SQUEUE_FORMAT = DELIMITER.join(code for _, code in SQUEUE_FIELDS)

SINFO_FIELDS = ("NodeList", "StateLong", "Gres", "GresUsed")
SINFO_FORMAT = ",".join(f"{f}:{DELIMITER}" for f in SINFO_FIELDS[:-1]) + f",{SINFO_FIELDS[-1]}:"

SACCT_FIELDS = (
    "JobID",
    "State",
    "Partition",
    "Account",
    "User",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
    "ExitCode",
    "JobName",
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


# ---- checks ----------------------------------------------------------------------------------


def _check_text(field_name: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{field_name} {value!r} is not allowed: {rule}.")
    return value


def _check_int(field_name: str, value: object, low: int, high: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"{field_name} {value!r} is not allowed: give a whole number from {low} to {high}"
            f"{unit}."
        )
    return value


def _check_path(field_name: str, value: object, component: re.Pattern[str], rule: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > MAX_PATH_LENGTH
        or any(
            part in ("", ".", "..") or component.fullmatch(part) is None
            for part in value[1:].split("/")
        )
    ):
        raise ValueError(
            f"{field_name} {value!r} is not allowed: give an absolute path of at most "
            f"{MAX_PATH_LENGTH} characters, {rule}, without empty, '.' or '..' parts."
        )
    return value


def check_job_id(value: object) -> str:
    """A Slurm job id as a string of digits (int or str accepted); ValueError otherwise."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return _check_text("job id", text, _JOB_ID, "a Slurm job id is a positive whole number")


def _check_executable(value: object) -> str:
    return _check_text(
        "executable",
        value,
        _EXECUTABLE,
        "give the command's plain name (sbatch) or an absolute path of [A-Za-z0-9._/-]",
    )


def _job_id_list(job_ids: Iterable[object]) -> str:
    ids = [check_job_id(job_id) for job_id in job_ids]
    if not ids:
        raise ValueError("job ids: give at least one job id.")
    return ",".join(ids)


def check_partition(value: object) -> str:
    """A partition name as sbatch gets it; ValueError naming the rule otherwise."""
    return _check_text(
        "partition",
        value,
        _PARTITION,
        "use 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit",
    )


def check_account(value: object) -> str:
    """A Slurm account name; ValueError naming the rule otherwise."""
    return _check_text(
        "account",
        value,
        _ACCOUNT,
        "a Slurm account is 1-64 characters of a-z 0-9 _ . -, not starting with . or -",
    )


def check_gres_type(value: object) -> str:
    """A GRES type of ``gpu`` (lower case, as sacct reports it); ValueError otherwise."""
    return _check_text(
        "slice type",
        value,
        _GRES_TYPE,
        "use 1-32 characters of a-z 0-9 . _ -, starting with a letter or digit",
    )


def check_executable(value: object) -> str:
    """A command: its plain name (looked up on PATH) or an absolute path."""
    return _check_executable(value)


def check_job_name(value: object) -> str:
    return _check_text(
        "job name",
        value,
        _JOB_NAME,
        "use 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    )


def _slurm_time(field_name: str, value: object) -> str:
    if not isinstance(value, datetime) or value.tzinfo is not None:
        raise ValueError(
            f"{field_name} {value!r} is not allowed: give a naive datetime in the controller's "
            "local time."
        )
    return value.strftime(SLURM_TIME_FORMAT)


# ---- sbatch ----------------------------------------------------------------------------------


def sbatch_argv(
    *,
    job_name: str,
    partition: str,
    cpus: int,
    mem_mb: int,
    time_minutes: int,
    output: str,
    chdir: str,
    gres: Sequence[tuple[str, int]] = (),
    account: str | None = None,
    requeue: bool = False,
    executable: str = "sbatch",
) -> list[str]:
    """argv for ``sbatch --parsable``; the batch script is the caller's, on stdin.

    ``gres`` holds (slice type, count) pairs, e.g. ``[("1g.10gb", 1)]`` -> ``--gres=gpu:1g.10gb:1``.
    ``output`` may use sbatch's ``%j`` (job id), ``%x`` (job name), ``%u`` (user). A job is not
    requeued after a node failure unless ``requeue``: a notebook server restarted behind the
    hub's back would hold a slice nobody uses.
    """
    argv = [
        _check_executable(executable),
        "--parsable",
        "--job-name=" + check_job_name(job_name),
        "--partition=" + check_partition(partition),
    ]
    if account is not None:
        argv.append("--account=" + check_account(account))
    if gres:
        argv.append("--gres=" + ",".join(_gres_items(gres)))
    argv += [
        f"--cpus-per-task={_check_int('cpus', cpus, 1, MAX_CPUS)}",
        f"--mem={_check_int('memory', mem_mb, 1, MAX_MEM_MB, ' MB')}M",
        f"--time={_check_int('time limit', time_minutes, 1, MAX_TIME_MINUTES, ' minutes')}",
        "--output="
        + _check_path(
            "output path",
            output,
            _OUTPUT_COMPONENT,
            "of A-Z a-z 0-9 . _ @ + - and sbatch's %j %x %u %A %a %N %n %%",
        ),
        "--chdir="
        + _check_path("working directory", chdir, _PATH_COMPONENT, "of A-Z a-z 0-9 . _ @ + -"),
        "--requeue" if requeue else "--no-requeue",
    ]
    return argv


def _gres_items(gres: Sequence[tuple[str, int]]) -> list[str]:
    items, seen = [], set()
    for entry in gres:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise ValueError(f"gres entry {entry!r} is not allowed: give (slice type, count).")
        slice_type, count = entry
        check_gres_type(slice_type)
        if slice_type in seen:
            raise ValueError(f"slice type {slice_type!r} is given twice: give each type once.")
        seen.add(slice_type)
        _check_int(f"count of slice type {slice_type}", count, 1, MAX_GRES_COUNT)
        items.append(f"{GRES_NAME}:{slice_type}:{count}")
    return items


def parse_sbatch(stdout: str) -> str:
    """The job id that ``sbatch --parsable`` printed: ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = re.fullmatch(r"([1-9][0-9]{0,9})(?:;[A-Za-z0-9_-]+)?", lines[-1]) if lines else None
    if match is None:
        raise ValueError(f"sbatch printed no job id: {stdout[:200]!r}")
    return match.group(1)


# ---- squeue ----------------------------------------------------------------------------------


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


def squeue_argv(
    job_ids: Iterable[object] | None = None,
    *,
    pending_only: bool = False,
    partition: str | None = None,
    executable: str = "squeue",
) -> list[str]:
    """argv for ``squeue`` in SQUEUE_FORMAT.

    With ``job_ids``: those jobs in every state (finished ones too, while the controller keeps
    them), so a poll tells "ended" from "unknown". Without: the whole queue, or only its pending
    jobs with ``pending_only`` (what ``queue_positions`` needs).
    """
    argv = [_check_executable(executable), "--noheader", f"--format={SQUEUE_FORMAT}"]
    if job_ids is not None:
        argv += [f"--jobs={_job_id_list(job_ids)}", "--states=all"]
    elif pending_only:
        argv.append("--states=PENDING")
    if partition is not None:
        argv.append(
            "--partition=" + _check_text("partition", partition, _PARTITION, "use A-Z a-z 0-9 _ -")
        )
    return argv


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


def scancel_argv(job_id: object, *, executable: str = "scancel") -> list[str]:
    """argv for ``scancel`` of one job (pending or running)."""
    return [_check_executable(executable), check_job_id(job_id)]


# ---- sinfo: GRES per type --------------------------------------------------------------------


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


def sinfo_gres_argv(partition: str | None = None, *, executable: str = "sinfo") -> list[str]:
    """argv for ``sinfo`` listing each node's state, configured GRES and GRES in use."""
    argv = [_check_executable(executable), "--noheader", "--Node", f"--Format={SINFO_FORMAT}"]
    if partition is not None:
        argv.append(
            "--partition=" + _check_text("partition", partition, _PARTITION, "use A-Z a-z 0-9 _ -")
        )
    return argv


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


# ---- sinfo: each node's free CPUs, memory and slices ------------------------------------------

SINFO_NODE_FIELDS = (
    "NodeList",
    "NodeAddr",
    "Partition",
    "StateLong",
    "CPUsState",
    "Memory",
    "AllocMem",
    "Gres",
    "GresUsed",
)
SINFO_NODE_FORMAT = (
    ",".join(f"{f}:{DELIMITER}" for f in SINFO_NODE_FIELDS[:-1]) + f",{SINFO_NODE_FIELDS[-1]}:"
)


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


def sinfo_nodes_argv(*, executable: str = "sinfo") -> list[str]:
    """argv for ``sinfo`` listing each node once per partition with its address, state, CPUs
    (allocated/idle/other/total), memory (configured, allocated) and GRES (configured, used)."""
    return [_check_executable(executable), "--noheader", "--Node", f"--Format={SINFO_NODE_FORMAT}"]


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


# ---- scontrol --------------------------------------------------------------------------------


def scontrol_time_limit_argv(
    job_id: object, minutes: int, *, executable: str = "scontrol"
) -> list[str]:
    """argv that sets a job's time limit (a job's owner may lower it; raising it needs an
    operator)."""
    return [
        _check_executable(executable),
        "update",
        f"JobId={check_job_id(job_id)}",
        f"TimeLimit={_check_int('time limit', minutes, 1, MAX_TIME_MINUTES, ' minutes')}",
    ]


def scontrol_batch_script_argv(job_id: object, *, executable: str = "scontrol") -> list[str]:
    """argv that prints the batch script Slurm stored for a job (to stdout: ``-``)."""
    return [_check_executable(executable), "write", "batch_script", check_job_id(job_id), "-"]


# ---- sacct -----------------------------------------------------------------------------------


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


def sacct_argv(
    job_ids: Iterable[object] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    executable: str = "sacct",
) -> list[str]:
    """argv for ``sacct`` of whole jobs (no steps): either ``job_ids``, or every user's jobs
    that existed between ``since`` and ``until`` (naive datetimes, the controller's local time;
    ``until`` defaults to now)."""
    argv = [
        _check_executable(executable),
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--format={','.join(SACCT_FIELDS)}",
    ]
    if (job_ids is None) == (since is None):
        raise ValueError("sacct: give either job ids or a start time (since), not both or neither.")
    if job_ids is not None:
        if until is not None:
            raise ValueError("sacct: until goes with since, not with job ids.")
        argv.append(f"--jobs={_job_id_list(job_ids)}")
    else:
        argv += ["--allusers", f"--starttime={_slurm_time('since', since)}"]
        if until is not None:
            argv.append(f"--endtime={_slurm_time('until', until)}")
    return argv


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


# ---- shared parsing --------------------------------------------------------------------------

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
