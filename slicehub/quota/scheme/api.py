"""The scheme's REST API (issue 14), under `api/scheme/` of the quota service, JSON in and out,
with the same scopes as the scheme's pages: applications and their review
(`api_applications`), change requests and progress reports (`api_followup`), the dashboard
(`api_dashboard`); what they share (roles from scopes, the hub's users, body checks) is
`api_base`. docs/scheme.md lists every endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from . import api_applications, api_dashboard, api_followup


def routes(route: Callable[[str], str]) -> list[tuple]:
    return api_applications.routes(route) + api_followup.routes(route) + api_dashboard.routes(route)
