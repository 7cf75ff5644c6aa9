"""The Slurm command lines Slicehub runs.

Decides: the exact argv of ``sbatch``, ``squeue``, ``scancel``, ``sinfo``, ``scontrol`` and
``sacct`` (argv lists for ``create_subprocess_exec``, never shell strings), which values may reach
them (each one checked against a strict pattern or range; a bad one raises ValueError naming the
field), and the machine-readable formats they are asked to print. What that output means is
`answers`' to read.

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
from collections.abc import Iterable, Sequence
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
_RESERVATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
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


def check_reservation(value: object) -> str:
    """A Slurm advance reservation's name; ValueError naming the rule otherwise."""
    return _check_text(
        "reservation",
        value,
        _RESERVATION,
        "use 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
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
    reservation: str | None = None,
    requeue: bool = False,
    executable: str = "sbatch",
) -> list[str]:
    """argv for ``sbatch --parsable``; the batch script is the caller's, on stdin.

    ``gres`` holds (slice type, count) pairs, e.g. ``[("1g.10gb", 1)]`` -> ``--gres=gpu:1g.10gb:1``.
    ``output`` may use sbatch's ``%j`` (job id), ``%x`` (job name), ``%u`` (user). A job is not
    requeued after a node failure unless ``requeue``: a notebook server restarted behind the
    hub's back would hold a slice nobody uses. A job with ``reservation`` runs only in that
    advance reservation (a class window's).
    """
    argv = [
        _check_executable(executable),
        "--parsable",
        "--job-name=" + check_job_name(job_name),
        "--partition=" + check_partition(partition),
    ]
    if account is not None:
        argv.append("--account=" + check_account(account))
    if reservation is not None:
        argv.append("--reservation=" + check_reservation(reservation))
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


# ---- squeue ----------------------------------------------------------------------------------


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


def scancel_argv(job_id: object, *, executable: str = "scancel") -> list[str]:
    """argv for ``scancel`` of one job (pending or running)."""
    return [_check_executable(executable), check_job_id(job_id)]


# ---- sinfo: GRES per type --------------------------------------------------------------------


def sinfo_gres_argv(partition: str | None = None, *, executable: str = "sinfo") -> list[str]:
    """argv for ``sinfo`` listing each node's state, configured GRES and GRES in use."""
    argv = [_check_executable(executable), "--noheader", "--Node", f"--Format={SINFO_FORMAT}"]
    if partition is not None:
        argv.append(
            "--partition=" + _check_text("partition", partition, _PARTITION, "use A-Z a-z 0-9 _ -")
        )
    return argv


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


def sinfo_nodes_argv(*, executable: str = "sinfo") -> list[str]:
    """argv for ``sinfo`` listing each node once per partition with its address, state, CPUs
    (allocated/idle/other/total), memory (configured, allocated) and GRES (configured, used)."""
    return [_check_executable(executable), "--noheader", "--Node", f"--Format={SINFO_NODE_FORMAT}"]


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
