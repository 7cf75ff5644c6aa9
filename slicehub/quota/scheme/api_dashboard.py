"""The scheme's dashboard in the REST API (under `api/scheme/`), for staff, the secretariat and
the committee (others: 403): `GET dashboard` as JSON, `GET dashboard.csv` as a spreadsheet
with formula cells neutralised. What it counts is `slicehub.quota.scheme.dashboard`'s."""

from __future__ import annotations

from tornado import web

from slicehub.common import clock

from .api_base import SchemeHandler
from .dashboard import Dashboard, dashboard, dashboard_csv, dashboard_view


class DashboardHandler(SchemeHandler):
    def initialize(self, csv: bool):
        self.csv = csv

    @web.authenticated
    async def get(self):
        if not self.roles():
            raise web.HTTPError(
                403, "The scheme's dashboard is for staff, the secretariat and the committee."
            )
        found: Dashboard = await self.in_db(self.read, clock.utcnow())
        if not self.csv:
            self.write_json(dashboard_view(found))
            return
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="scheme-dashboard.csv"')
        self.finish(dashboard_csv(found))

    def read(self, now) -> Dashboard:
        with self.ledger.session() as db:
            return dashboard(db, now)


def routes(route) -> list[tuple]:
    return [
        (route("api/scheme/dashboard"), DashboardHandler, {"csv": False}),
        (route(r"api/scheme/dashboard\.csv"), DashboardHandler, {"csv": True}),
    ]
