"""Which names are hub users, as the quota service learns it from the hub: a scheme's team
members, new members and reviewers must be people who can sign in.

The service asks `GET /hub/api/users/{name}` with its `read:users:name` scope: 200 is a hub
user, 404 is not. A name found is kept for `ttl` (5 min; hub users are rarely deleted); a name
not found is asked again next time, so someone who signs in for the first time counts at once.
When the hub cannot say (no hub, no answer in time, a refusal), `known` raises `HubUnavailable`
with a sentence, and the API answers 503: nothing is concluded and nothing written. At most
CONCURRENCY questions are in flight at once (the idle culler's habit against the hub's API).

Decides only who is a hub user; what a team may be is `slicehub.quota.scheme.validate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from tornado.httpclient import HTTPClientError

from slicehub.common import clock

from .hub_groups import HUB_TIMEOUT

if TYPE_CHECKING:
    from slicehub.common.hub_client import HubClient

log = logging.getLogger("slicehub.quota")

TTL = timedelta(minutes=5)
MAX_KEPT = 10_000  # names kept; past it, the expired ones are dropped
CONCURRENCY = 5


class HubUnavailable(Exception):
    """The hub could not say who its users are; the message is the sentence for the user."""


UNAVAILABLE = (
    "The hub did not answer whether {names} {are}, so nothing was saved; try again in a minute."
)


class HubUsers:
    """Hub users among some names, from `hub` (None: no hub, so nobody can be checked)."""

    def __init__(self, hub: HubClient | None, ttl: timedelta = TTL):
        self.hub = hub
        self.ttl = ttl
        self._known: dict[str, datetime] = {}  # name -> until when it counts as known
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def known(self, names: Iterable[str]) -> set[str]:
        """The hub users among `names`; `HubUnavailable` when the hub cannot say."""
        names = sorted(set(names))
        now = clock.utcnow()
        ask = [n for n in names if self._known.get(n, now) <= now]
        if ask and self.hub is None:
            raise HubUnavailable(_sentence(ask))
        answers = await asyncio.gather(*(self._ask(n) for n in ask))
        unclear = [n for n, found in zip(ask, answers, strict=True) if found is None]
        if unclear:
            raise HubUnavailable(_sentence(unclear))
        if len(self._known) >= MAX_KEPT:
            self._known = {n: until for n, until in self._known.items() if until > now}
        for n, found in zip(ask, answers, strict=True):
            if found:
                self._known[n] = now + self.ttl
        return {n for n in names if self._known.get(n, now) > now}

    async def _ask(self, name: str) -> bool | None:
        """Whether `name` is a hub user; None when the hub cannot say (logged)."""
        async with self._limit:
            try:
                r = await asyncio.wait_for(
                    self.hub.request("GET", f"/users/{quote(name, safe='')}"), HUB_TIMEOUT
                )
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, HTTPClientError) as e:
                log.warning("The hub did not say whether %s is a user (%s)", name, e or "timeout")
                return None
        if r.code in (200, 404):
            return r.code == 200
        log.warning(
            "The hub answered %s when asked whether %s is a user (the quota service needs the "
            "read:users:name scope)",
            r.code,
            name,
        )
        return None


def _sentence(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    are = "is a hub user" if len(names) == 1 else "are hub users"
    return UNAVAILABLE.format(names=shown, are=are)
