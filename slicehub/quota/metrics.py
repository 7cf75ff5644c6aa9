"""Prometheus metrics for the centre's dashboards, read from the ledger at scrape time.

A custom collector, so every scrape shows the database as it is (no counters drifting from the
ledger after a restart): spend and subsidy per project, subsidy left, running sessions per
project and slice type.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from slicehub.common import clock

from .models import Charge, Project
from .models import Session as LedgerSession


class LedgerCollector:
    def __init__(self, ledger):
        self.ledger = ledger

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
        yield from (spend, subsidy, left, running)
