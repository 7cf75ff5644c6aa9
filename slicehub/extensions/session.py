"""What a notebook user asks most, answered in the kernel: how much of the slice's memory is in
use, and how much time and money the session has left.

Time left comes from `SLICEHUB_SESSION_END` (fixed by the hold when the server started); money
left from the quota service's API (`SLICEHUB_QUOTA_URL`, with the server's own
`JUPYTERHUB_API_TOKEN`, which may read the user's own sessions), through the quota client's
synchronous face. When the service cannot be reached the answer says so instead of guessing.
The kernel puts one `SliceSession` in the notebook's namespace as `slicehub`, and `%slicehub`
prints its status.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta

from slicehub.common import clock
from slicehub.common.durations import duration_text
from slicehub.common.money import format_money

from .cluster_plan import GIB, ClusterPlan
from .slice_env import SliceEnv

QUOTA_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class SessionMoney:
    """One ledger session's money as the quota API reports it, in cents."""

    held_list: int
    spent_list: int
    subsidy_left: int  # of what the hold reserved from the subsidy
    copay_left: int  # of what the hold will bill the project as co-pay
    spent_subsidy: int
    spent_copay: int

    @classmethod
    def from_view(cls, v: dict) -> SessionMoney:
        held_copay = v["hold_list_cents"] - v["hold_subsidy_cents"]
        return cls(
            held_list=v["hold_list_cents"],
            spent_list=v["charged_list_cents"],
            subsidy_left=max(v["hold_subsidy_cents"] - v["charged_subsidy_cents"], 0),
            copay_left=max(held_copay - v["charged_copay_cents"], 0),
            spent_subsidy=v["charged_subsidy_cents"],
            spent_copay=v["charged_copay_cents"],
        )

    def describe(self) -> str:
        return (
            f"{format_money(self.subsidy_left + self.copay_left)} left of "
            f"{format_money(self.held_list)} held (subsidy {format_money(self.subsidy_left)}, "
            f"co-pay {format_money(self.copay_left)}); spent "
            f"{format_money(self.spent_list)} so far"
        )


class SliceSession:
    """The slice, its cluster and the session's clock and money, for the notebook."""

    def __init__(
        self,
        slice_env: SliceEnv,
        plan: ClusterPlan,
        client,
        cluster,
        xp,
        line: str,
        dashboard_link: str,
        env=None,
        spill_dir: str = "",
    ):
        self.slice = slice_env
        self.plan = plan
        self.client = client
        self.cluster = cluster
        self.xp = xp
        self.line = line
        self.dashboard_link = dashboard_link  # through the user's server when under a hub
        self._env = dict(os.environ if env is None else env)
        self._spill_dir = spill_dir  # the workers' local directory, removed at close

    @property
    def on_gpu(self) -> bool:
        return self.plan.backend == "cuda"

    def end(self, view: dict | None = None) -> datetime | None:
        """When the session ends: the ledger's end (an extension moves it) when the quota
        service answers, else the one the server started with."""
        if view is not None:
            return datetime.fromisoformat(view["end_at"])
        return self.slice.session_end

    def time_left(self, view: dict | None = None) -> timedelta | None:
        end = self.end(view)
        return None if end is None else max(end - clock.utcnow(), timedelta(0))

    def money(self) -> SessionMoney | None:
        """This session's money from the quota service; None when it cannot be asked."""
        view = self._ledger_session()
        return None if view is None else SessionMoney.from_view(view)

    def memory(self) -> dict[str, int]:
        """Bytes in use now: the kernel's CuPy pool and its limit, the device as a whole (GPU);
        the Dask workers' managed memory and their limit (host)."""
        out: dict[str, int] = {}
        if self.on_gpu:
            import cupy

            pool = cupy.get_default_memory_pool()
            free, total = cupy.cuda.runtime.memGetInfo()
            out.update(
                cupy_used=pool.used_bytes(),
                cupy_limit=pool.get_limit(),
                device_used=total - free,
                device_total=total,
            )
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
        out["workers_used"] = sum(w.get("metrics", {}).get("memory", 0) for w in workers)
        out["workers_limit"] = sum(w.get("memory_limit", 0) for w in workers)
        return out

    def status(self) -> str:
        lines = [self.line.split("\n")[0]]
        view = self._ledger_session() if self.slice.ledger_session else None
        left = self.time_left(view)
        if left is not None:
            end = self.end(view).astimezone().strftime("%H:%M %Z")
            lines.append(f"Time left: {duration_text(left)} (ends {end})")
        elif self.slice.slice_type:
            lines.append("Time left: unknown (SLICEHUB_SESSION_END is not set)")
        if self.slice.ledger_session:
            lines.append(
                f"Money: {SessionMoney.from_view(view).describe()}"
                if view
                else "Money: the quota service cannot be reached from this kernel just now"
            )
        m = self.memory()
        if self.on_gpu:
            lines.append(
                f"GPU memory: CuPy {_gib(m['cupy_used'])} of {_gib(m['cupy_limit'])}; the "
                f"device {_gib(m['device_used'])} of {_gib(m['device_total'])} in use"
            )
        lines.append(
            f"Dask workers' memory: {_gib(m['workers_used'])} of {_gib(m['workers_limit'])}"
        )
        return "\n".join(lines)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()
        if self._spill_dir:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return self.status()

    def _ledger_session(self) -> dict | None:
        base, token = self._env.get("SLICEHUB_QUOTA_URL"), self._env.get("JUPYTERHUB_API_TOKEN")
        if not (base and token and self.slice.ledger_session):
            return None
        # imported here, not at the kernel's start: the quota client brings jupyterhub.utils
        # (0.33 s of every kernel start, bench/results/kernel_start.md) for `%slicehub` alone
        from tornado import web

        from slicehub.common.quota_client import QuotaClient

        quota = QuotaClient(base, token, QUOTA_TIMEOUT_S)
        user = self._env.get("JUPYTERHUB_USER", "")
        try:
            return quota.blocking.session(self.slice.ledger_session, user)
        except (web.HTTPError, KeyError, ValueError):
            return None


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"
