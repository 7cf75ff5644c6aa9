"""A user's hub groups, as the quota service learns them from the hub when the spawners are not
the ones asking.

A hold and the spawn form's project list come from the spawners, which know the user's groups
and send them. A request made with a user's own token (the hub pages, the JupyterLab status
bar, an Extend) does not carry them, so the service asks the hub (`GET /hub/api/users/{name}`,
with the service's `read:users:groups` scope) and keeps the answer for `ttl` (30 s): a group
change reaches those requests within that time. When the hub cannot say (it does not answer, or
refuses), the answer is no groups, so only member rows count, and the log says so; nothing is
kept, so the next request asks again.

Decides only where the groups come from; who is a member given them is
`slicehub.quota.hold.membership`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from tornado.httpclient import HTTPClientError

from slicehub.common import clock

if TYPE_CHECKING:
    from slicehub.common.hub_client import HubClient

log = logging.getLogger("slicehub.quota")

TTL = timedelta(seconds=30)
HUB_TIMEOUT = 5.0  # seconds: a page or a status bar waits no longer for the hub's answer
MAX_KEPT = 10_000  # users whose answer is kept; past it, the expired ones are dropped


class UserGroups:
    """The hub groups of a user, from `hub` (None: no hub, as in tests of the routes alone: no
    groups, so member rows only), each answer kept for `ttl`."""

    def __init__(self, hub: HubClient | None, ttl: timedelta = TTL):
        self.hub = hub
        self.ttl = ttl
        self._kept: dict[str, tuple[datetime, frozenset[str]]] = {}

    async def of(self, username: str) -> frozenset[str]:
        if self.hub is None:
            return frozenset()
        now = clock.utcnow()
        kept = self._kept.get(username)
        if kept is not None and kept[0] > now:
            return kept[1]
        groups = await self._ask(username)
        if groups is None:
            return frozenset()
        if len(self._kept) >= MAX_KEPT:
            self._kept = {u: k for u, k in self._kept.items() if k[0] > now}
        self._kept[username] = (now + self.ttl, groups)
        return groups

    async def _ask(self, username: str) -> frozenset[str] | None:
        """The hub's answer; None when it cannot say (logged)."""
        try:
            r = await asyncio.wait_for(
                self.hub.request("GET", f"/users/{quote(username, safe='')}"), HUB_TIMEOUT
            )
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError, HTTPClientError) as e:
            log.warning(
                "The hub did not say which groups %s is in (%s); only member rows count for "
                "them until it answers",
                username,
                e or "no answer in time",
            )
            return None
        if r.code == 404:  # no such user: in no group
            return frozenset()
        try:
            if r.code != 200:
                raise ValueError(f"answered {r.code}")
            groups = json.loads(r.body)["groups"]
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError("no list of group names in its answer")
        except (ValueError, KeyError, TypeError) as e:
            log.warning(
                "The hub did not say which groups %s is in (%s; the quota service needs the "
                "read:users:groups scope); only member rows count for them",
                username,
                e,
            )
            return None
        return frozenset(groups)
