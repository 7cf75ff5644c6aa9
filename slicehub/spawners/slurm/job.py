"""One notebook server as one Slurm job: its sbatch line, its batch script, its environment.

Decides, from checked values only, what the job asks Slurm for: the validated `SliceOptions`
(slice type and duration), the site file's `[slurm]` table (partition, GRES type and count,
project -> account), the ledger's end time for the session (which caps `--time`) and the hub's
own settings (home, command). Nothing from `user_options` gets here except through
`SliceOptions`, so no request can add a GRES, change the partition or the account, or reach the
script. The script comes from a fixed template in which every value is shell-quoted and none may
hold a control character.

Does not decide: whether the user may start (the options validator and the ledger do), or run
anything (`slicehub.spawners.slurm.spawner` submits what this module builds).
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2

from ..options import SliceOptions
from . import commands as sc
from .site import SlurmSite

TEMPLATES = Path(__file__).parent / "templates"
SCRIPT = "slurm_job.sh.j2"
MIB = 1024**2
JOB_NAME_PREFIX = "slicehub"
# Whoever reads sacct (the reconcile) finds the ledger session in the job name.
JOB_NAME = re.compile(rf"^{JOB_NAME_PREFIX}-(?P<session>[0-9]+)(?:-(?P<user>.*))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class JobRefused(ValueError):
    """The job cannot be built from these values; the message says which and why."""


@dataclass(frozen=True)
class JobSpec:
    """Everything sbatch is told about one server's job."""

    name: str
    partition: str
    account: str | None
    gres: tuple[tuple[str, int], ...]
    cpus: int
    mem_mb: int
    time_minutes: int
    workdir: str
    output: str
    reservation: str | None = None  # a class window's advance reservation the job runs in

    @property
    def cpu_only(self) -> bool:
        return not self.gres

    def describe(self) -> str:
        """For progress messages: "gpu:1g.10gb:1 in partition gpu, account ai-lab"."""
        what = ",".join(f"gpu:{t}:{n}" for t, n in self.gres) or "no GPU"
        account = f", account {self.account}" if self.account else ""
        reserved = f", in reservation {self.reservation}" if self.reservation else ""
        return f"{what} in partition {self.partition}{account}{reserved}"


def time_limit_minutes(session_end: datetime, now: datetime) -> int:
    """Whole minutes from `now` to the session's end, rounded down, at least 1: Slurm ends the
    job no later than the ledger's hold runs out (a second guard behind the quota service)."""
    return max(1, math.floor((session_end - now).total_seconds() / 60))


def name_part(username: str) -> str:
    """A user name as it appears in job names (Slurm's job names allow [A-Za-z0-9._-])."""
    return _NOT_IN_NAME.sub("_", username).strip("._-")[:32] or "user"


def job_name(ledger_session: int | None, username: str) -> str:
    """`slicehub-<ledger session>-<user>`: the reconcile reads the session back from sacct."""
    user = name_part(username)
    if ledger_session is None:
        return f"{JOB_NAME_PREFIX}-{user}"
    return f"{JOB_NAME_PREFIX}-{int(ledger_session)}-{user}"


def session_of_job(name: str) -> tuple[int, str] | None:
    """The ledger session and user part a job name carries, or None for a job that is not a
    Slicehub server's."""
    m = JOB_NAME.match(name)
    return (int(m["session"]), m["user"] or "") if m else None


def job_spec(
    options: SliceOptions,
    slurm: SlurmSite,
    *,
    project: str | None,
    session_end: datetime,
    now: datetime,
    home: str,
    username: str,
    ledger_session: int | None,
) -> JobSpec:
    """The job for a validated request. Raises JobRefused (a sentence) when the site has no
    account for the project; every value is checked again by `slurm_commands.sbatch_argv`."""
    st = options.slice_type
    where = slurm.slice_types[st.name]
    account = slurm.account_for(project) if project else slurm.default_account
    if project and account is None:
        raise JobRefused(
            f"Project {project} has no Slurm account on this cluster, so its sessions cannot "
            "run here. Ask the centre's staff to map it to one ([slurm.accounts] in the site file)."
        )
    spec = JobSpec(
        name=job_name(ledger_session, username),
        partition=where.partition,
        account=account,
        gres=where.gres,
        cpus=st.cpus,
        mem_mb=math.ceil(st.memory_bytes / MIB),
        time_minutes=time_limit_minutes(session_end, now),
        workdir=home,
        output=f"{home.rstrip('/')}/.slicehub/slurm-%j.log",
    )
    sbatch_argv(spec)  # every value checked now, before any hold is spent on a doomed job
    return spec


def sbatch_argv(spec: JobSpec, executable: str = "sbatch") -> list[str]:
    try:
        return sc.sbatch_argv(
            job_name=spec.name,
            partition=spec.partition,
            account=spec.account,
            gres=list(spec.gres),
            cpus=spec.cpus,
            mem_mb=spec.mem_mb,
            time_minutes=spec.time_minutes,
            output=spec.output,
            chdir=spec.workdir,
            reservation=spec.reservation,
            executable=executable,
        )
    except ValueError as e:
        raise JobRefused(f"This server's Slurm job cannot be built: {e}") from None


def log_path(spec: JobSpec, job_id: str) -> str:
    return spec.output.replace("%j", sc.check_job_id(job_id))


# -- the batch script --------------------------------------------------------------------------


def _shell_word(value: object) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise JobRefused(
            f"{text[:40]!r} cannot go into a batch script: it holds a control character."
        )
    return shlex.quote(text)


def _shell_value(value: object) -> str:
    """Jinja's `finalize`: every `{{ value }}` becomes shell-quoted words; a list becomes one
    quoted word per item. Only plain strings, numbers and lists of them are accepted."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined: raises, naming the variable the template asked for
    if isinstance(value, list | tuple):
        return " ".join(_shell_word(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise JobRefused(f"{type(value).__name__} values cannot go into a batch script.")
    return _shell_word(value)


@functools.cache
def _script_env(folder: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([folder]),
        autoescape=False,  # shell, not HTML: `finalize` quotes every value instead
        finalize=_shell_value,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def script_template(path: str = "") -> jinja2.Template:
    """The package's template, or an admin's replacement (same rules: every value quoted)."""
    folder, name = (Path(path).parent, Path(path).name) if path else (TEMPLATES, SCRIPT)
    return _script_env(str(folder)).get_template(name)


def render_script(
    template: jinja2.Template,
    *,
    slice_type: str,
    ledger_session: int | None,
    cpu_only: bool,
    command: Iterable[str],
) -> str:
    """The batch script. Its variables are exactly these; a template that asks for anything
    else fails (StrictUndefined), so no other value can reach the script."""
    return template.render(
        slice_type=slice_type,
        ledger_session="none" if ledger_session is None else int(ledger_session),
        cpu_only=bool(cpu_only),
        command=list(command),
    )


def submit_env(base: Mapping[str, str], server_env: Mapping[str, str]) -> dict[str, str]:
    """sbatch's environment, which Slurm passes on to the job (`--export=ALL`, the default):
    the few variables the Slurm commands need from the hub (PATH, SLURM_CONF) and the server's
    own environment (JupyterHub's, the slice's). Nothing else of the hub's environment."""
    env = {k: base[k] for k in ("PATH", "SLURM_CONF", "LANG") if k in base}
    env.update(server_env)
    return env
