"""The scheme's routes in the quota service: its REST API (`api.py`, under `api/scheme/`) and
its pages (`pages.py`, under `scheme/`), mounted by `slicehub.quota.service.make_app`."""

from __future__ import annotations

from collections.abc import Callable

from . import api, pages


def routes(route: Callable[[str], str]) -> list[tuple]:
    """Tornado routes, each path made absolute by `route` (the service's prefix)."""
    return api.routes(route) + pages.routes(route)
