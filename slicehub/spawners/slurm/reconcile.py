"""Slurm's accounting against the ledger: per job, how long Slurm says it ran and what the ledger
charged for its session.

    slicehub slurm-reconcile [--ledger URL] [--site FILE] [--since 2026-11-01] [--tolerance 10]

Decides which Slurm job belongs to which ledger session: the job name (`slicehub-<session>-<user>`,
see `slicehub.spawners.slurm.job`) names the session, the user must match, and the job must have
been submitted within `MATCH_WINDOW` of the hold, so a job of another ledger never matches. Then how
long each side says the session lasted (Slurm: ElapsedRaw; the ledger: from the moment it began
metering, which for a Slurm job is its start, to the last metered moment, which is the stop for a
stopped session) and whether they differ by more than a tolerance: the metering tick, since the
ledger charges a running session up to its last tick, plus one second, since sacct counts whole
seconds. It also reports each job's wait in the queue (not charged: the spawner's hold is deferred
until the job starts), jobs with no session, charged sessions with no job, and a job whose slices
are not what the site gives its slice type.

The ledger stays the authority: this reads both sides and reports; it never changes a charge.
Needs Slurm accounting (slurmdbd): without it sacct has nothing to compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..site_model import Site
from . import answers as sa
from .job import name_part, session_of_job

DEFAULT_TOLERANCE_S = 10.0  # the quota service's default metering interval
SLURM_RESOLUTION_S = 1.0  # sacct counts whole seconds
MATCH_WINDOW = timedelta(minutes=2)  # a job is submitted right after its hold


@dataclass(frozen=True)
class LedgerSession:
    """What the reconcile needs of a ledger session (from the quota reader; never written)."""

    id: int
    project: str
    user: str
    slice_type: str
    status: str
    started_at: datetime  # aware, UTC
    metered_until: datetime

    @property
    def charged_s(self) -> float:
        return max((self.metered_until - self.started_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class Row:
    session_id: int | None
    job_id: str | None
    user: str
    slice_type: str
    slurm_state: str
    queued_s: int | None
    slurm_s: int | None
    ledger_s: float | None
    problem: str  # "" when the two agree

    @property
    def difference_s(self) -> float | None:
        if self.slurm_s is None or self.ledger_s is None:
            return None
        return self.ledger_s - self.slurm_s


def _aware(local: datetime | None) -> datetime | None:
    """sacct prints the controller's local time, naive; this host is assumed to share its zone."""
    return local.astimezone(UTC) if local is not None else None


def compare(
    jobs: Iterable[sa.AccountedJob],
    sessions: Mapping[int, LedgerSession],
    tolerance_s: float,
    site: Site | None = None,
) -> list[Row]:
    """One row per Slicehub job in `jobs`, then one per charged session that has no job."""
    rows, seen = [], set()
    for job in jobs:
        named = session_of_job(job.name)
        if named is None:
            continue  # not a Slicehub server's job
        sid, user = named
        start, submit = _aware(job.start), _aware(job.submit)
        s = sessions.get(sid)
        if s is not None and not _same(s, user, submit):
            s = None  # that session id belongs to another ledger's job
        if s is not None:
            seen.add(sid)
        queued = int((start - submit).total_seconds()) if start and submit else None
        slurm_s = job.elapsed_s if start is not None else 0
        if s is None:
            rows.append(
                Row(
                    sid,
                    job.job_id,
                    job.user,
                    "?",
                    job.state,
                    queued,
                    slurm_s,
                    None,
                    "no ledger session",
                )
            )
            continue
        problem = ""
        ledger_s = s.charged_s
        if abs(ledger_s - slurm_s) > tolerance_s + SLURM_RESOLUTION_S:
            problem = f"differs by {ledger_s - slurm_s:+.0f} s"
            if queued and abs(ledger_s - slurm_s - queued) <= tolerance_s + SLURM_RESOLUTION_S:
                problem += " (the queue wait: charged as if the job had started at its hold)"
        if site is not None and site.slurm is not None and job.gres:
            where = site.slurm.slice_types.get(s.slice_type)
            expected = dict(where.gres) if where else None
            if expected is not None and dict(job.gres) != expected:
                problem = "; ".join(
                    p for p in (problem, f"held {_gres(job.gres)}, not {_gres(expected)}") if p
                )
        rows.append(
            Row(
                sid, job.job_id, s.user, s.slice_type, job.state, queued, slurm_s, ledger_s, problem
            )
        )
    for sid, s in sorted(sessions.items()):
        if sid not in seen and s.charged_s > tolerance_s:
            rows.append(
                Row(sid, None, s.user, s.slice_type, "-", None, None, s.charged_s, "no Slurm job")
            )
    return rows


def _same(s: LedgerSession, user: str, submit: datetime | None) -> bool:
    return (
        user == name_part(s.user)
        and submit is not None
        and s.started_at - MATCH_WINDOW <= submit <= s.started_at + MATCH_WINDOW
    )


def _gres(gres: Mapping[str, int]) -> str:
    return ",".join(f"gpu:{t}:{n}" for t, n in sorted(gres.items())) or "no GPU"


def report(rows: list[Row], tolerance_s: float) -> str:
    lines = [
        "| session | job | user | slice type | Slurm state | queued (s) | Slurm (s) "
        "| ledger (s) | difference (s) | problem |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        diff = r.difference_s
        lines.append(
            f"| {r.session_id if r.session_id is not None else '-'} | {r.job_id or '-'} "
            f"| {r.user} | {r.slice_type} | {r.slurm_state} "
            f"| {'-' if r.queued_s is None else r.queued_s} "
            f"| {'-' if r.slurm_s is None else r.slurm_s} "
            f"| {'-' if r.ledger_s is None else f'{r.ledger_s:.0f}'} "
            f"| {'-' if diff is None else f'{diff:+.1f}'} | {r.problem or 'ok'} |"
        )
    bad = sum(1 for r in rows if r.problem)
    within = f"{tolerance_s:g} s (+{SLURM_RESOLUTION_S:g} s: sacct counts whole seconds)"
    verdict = (
        f"all {len(rows)} agree within {within}"
        if not bad
        else f"{bad} of {len(rows)} differ by more than {within}, or have no counterpart"
    )
    lines += ["", f"{verdict} (the ledger is the authority; nothing was changed)."]
    return "\n".join(lines)


def ledger_sessions(views: Iterable[Mapping]) -> dict[int, LedgerSession]:
    """The ledger's sessions as the quota reader returns them (`sessions_for_reconcile`), by id."""
    return {
        v["id"]: LedgerSession(
            v["id"],
            v["project"],
            v["username"],
            v["slice_type"],
            v["status"],
            v["started_at"],
            v["metered_until"],
        )
        for v in views
    }
