"""Prometheus metrics for the centre's dashboards, read from the ledger at scrape time.

A custom collector, so every scrape shows the database as it is (no counters drifting from the
ledger after a restart): spend and subsidy per project, subsidy left, running sessions per
project and slice type; and idleness: the subsidy charged for idle time at sessions' ends and
the subsidy parking returned (from the ledger), the running sessions idle now and their idle
seconds (from the culler's latest readings, `readings`, which a restart empties until the next
check).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import case, func, select

from slicehub.common import clock

from .models import Charge, Project
from .models import Session as LedgerSession


class LedgerCollector:
    def __init__(self, ledger, readings: dict | None = None):
        self.ledger = ledger
        self.readings = {} if readings is None else readings  # session id -> idle_api.Seen

    def collect(self):
        now = clock.utcnow()
        spend = CounterMetricFamily(
            "slicehub_spend_cents", "Charged list cost per project (HK$ cents)", labels=["project"]
        )
        subsidy = CounterMetricFamily(
            "slicehub_subsidy_cents",
            "Subsidy disbursed per project (HK$ cents)",
            labels=["project"],
        )
        left = GaugeMetricFamily(
            "slicehub_subsidy_left_cents",
            "Subsidy left per project after holds (HK$ cents)",
            labels=["project"],
        )
        running = GaugeMetricFamily(
            "slicehub_running_sessions",
            "Sessions running now per project and slice type",
            labels=["project", "slice_type"],
        )
        idle_charged = CounterMetricFamily(
            "slicehub_idle_subsidy_cents",
            "Subsidy charged for idle time at sessions' ends, per project (HK$ cents)",
            labels=["project"],
        )
        returned = CounterMetricFamily(
            "slicehub_parking_returned_subsidy_cents",
            "Subsidy held by parked sessions and returned to their projects (HK$ cents)",
            labels=["project"],
        )
        parked = CounterMetricFamily(
            "slicehub_parked_sessions", "Sessions parked per project", labels=["project"]
        )
        idle_now = GaugeMetricFamily(
            "slicehub_idle_sessions",
            "Running sessions idle at the latest check, per project",
            labels=["project"],
        )
        idle_seconds = GaugeMetricFamily(
            "slicehub_idle_seconds",
            "Idle seconds of the running sessions at the latest check, summed per project",
            labels=["project"],
        )
        with self.ledger.session() as db:
            projects = {p.id: p for p in db.scalars(select(Project)).all()}
            totals = db.execute(
                select(
                    Charge.project_id, func.sum(Charge.list_cents), func.sum(Charge.subsidy_cents)
                ).group_by(Charge.project_id)
            ).all()
            for pid, list_cents, subsidy_cents in totals:
                spend.add_metric([projects[pid].slug], int(list_cents))
                subsidy.add_metric([projects[pid].slug], int(subsidy_cents))
            balances = self.ledger.balances(db, [p.slug for p in projects.values()], now)
            for slug, bal in balances.items():
                left.add_metric([slug], bal.subsidy_left_cents)
            for pid, slice_type, n in db.execute(
                select(LedgerSession.project_id, LedgerSession.slice_type, func.count())
                .where(LedgerSession.status == "active")
                .group_by(LedgerSession.project_id, LedgerSession.slice_type)
            ).all():
                running.add_metric([projects[pid].slug, slice_type], n)
            for pid, idle_subsidy, back, n in db.execute(
                select(
                    LedgerSession.project_id,
                    func.sum(LedgerSession.idle_subsidy_cents),
                    func.sum(
                        case(
                            (
                                LedgerSession.stop_reason == "parked",
                                LedgerSession.hold_subsidy_cents
                                - LedgerSession.charged_subsidy_cents,
                            ),
                            else_=0,
                        )
                    ),
                    func.count().filter(LedgerSession.stop_reason == "parked"),
                )
                .where(LedgerSession.status == "stopped")
                .group_by(LedgerSession.project_id)
            ).all():
                slug = projects[pid].slug
                idle_charged.add_metric([slug], int(idle_subsidy or 0))
                returned.add_metric([slug], int(back or 0))
                parked.add_metric([slug], n)
        now_idle: dict[str, list[int]] = {}
        for seen in list(self.readings.values()):
            n, seconds = now_idle.setdefault(seen.project, [0, 0])
            if seen.idle.total_seconds() > 0:
                now_idle[seen.project] = [n + 1, seconds + int(seen.idle.total_seconds())]
        for slug, (n, seconds) in sorted(now_idle.items()):
            idle_now.add_metric([slug], n)
            idle_seconds.add_metric([slug], seconds)
        yield from (spend, subsidy, left, running, idle_charged, returned, parked)
        yield from (idle_now, idle_seconds)
