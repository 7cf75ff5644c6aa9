"""The scheme's pages in the hub (issue 14), under the quota service's `scheme/`: HTML for
people, behind the hub's login like "My usage", each form posting to its own page
(`slicehub.quota.scheme.pages_base`).

| page | who | module |
|---|---|---|
| `scheme/applications`, `…/new`, `…/N` | any user; N by role | `pages_applications` |
| `scheme/secretariat`, `scheme/reviews`, `scheme/dashboard` | by role | `pages_work` |
| `scheme/projects`, `scheme/reports`, `scheme/reports/N` | a PI; by role | `pages_projects` |

Roles are the hub's scopes: `custom:scheme:secretariat`, `custom:scheme:committee`,
`custom:quota:staff`. What a form's field may hold is the workflow's to decide
(`slicehub.quota.scheme.validate`); the pages only read text into types (`pages_forms`).
"""

from __future__ import annotations

from collections.abc import Callable

from tornado import web

from .pages_applications import ApplicationFormPage, ApplicationPage, MyApplicationsPage
from .pages_projects import ProjectsPage, ReportPage, ReportsPage
from .pages_work import DashboardPage, ReviewsPage, SecretariatPage

PAGES = (
    ("scheme/applications", MyApplicationsPage),
    ("scheme/applications/new", ApplicationFormPage),
    (r"scheme/applications/(\d+)", ApplicationPage),
    ("scheme/secretariat", SecretariatPage),
    ("scheme/reviews", ReviewsPage),
    ("scheme/dashboard", DashboardPage),
    ("scheme/projects", ProjectsPage),
    ("scheme/reports", ReportsPage),
    (r"scheme/reports/(\d+)", ReportPage),
)


def routes(route: Callable[[str], str]) -> list[tuple]:
    """The pages' routes, each path made absolute by `route`; links on them start at the
    service's prefix (`route("")`)."""
    root = route("")
    return [
        (route("scheme/?"), web.RedirectHandler, {"url": route("scheme/applications")}),
        *((route(path), page, {"root": root}) for path, page in PAGES),
    ]
