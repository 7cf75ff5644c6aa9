"""What every handler of the scheme's REST API shares: the caller's roles from their hub scopes,
the workflow, the hub's answer on who is a hub user, and the checks of a body's shape.

Roles come from the scopes the hub gives the caller: `custom:scheme:secretariat` is the
secretariat, `custom:scheme:committee` the committee, `custom:quota:staff` staff. An endpoint
for a role answers 403 to anyone without it, before it looks anything up; an endpoint on an
application, change request or progress report answers 404 to anyone who may not see it, with
the same sentence whether it exists or not.

The shape of a body (an object, its known fields, lists of objects with their fields, dates as
YYYY-MM-DD, at most so many entries) is checked here with a 400 sentence; what the values may be
is `slicehub.quota.scheme.validate`'s, which the verbs apply before they write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from tornado import web

from ..api import STAFF as STAFF_SCOPE
from ..api import QuotaHandler
from ..errors import LedgerError
from ..hub_users import HubUnavailable
from .validate import check_username
from .views import COMMITTEE, SECRETARIAT, STAFF
from .workflow import SchemeWorkflow

SECRETARIAT_SCOPE = "custom:scheme:secretariat"
COMMITTEE_SCOPE = "custom:scheme:committee"
ROLE_SCOPES = {SECRETARIAT_SCOPE: SECRETARIAT, COMMITTEE_SCOPE: COMMITTEE, STAFF_SCOPE: STAFF}
MAX_IN_URL = 10**9  # an id larger than any row's: a 404, not an overflow in the database


class SchemeHandler(QuotaHandler):
    """A handler of `api/scheme/`: JSON in and out, errors as {"status", "message"}."""

    @property
    def workflow(self) -> SchemeWorkflow:
        return SchemeWorkflow(self.ledger)

    def roles(self) -> frozenset[str]:
        scopes = self.scopes()
        return frozenset(role for scope, role in ROLE_SCOPES.items() if scope in scopes)

    async def hub_users(self, names: Iterable[str]) -> Callable[[list[str]], set[str]]:
        """`known_users` for the verbs: which of some names are hub users, asked of the hub
        now for `names` (the caller signed in through the hub, so they are one); 503 with a
        sentence when the hub cannot say."""
        caller = self.username()
        ask = set(names) - {caller}
        try:
            known = await self.settings["users"].known(ask) if ask else set()
        except HubUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        known = known | {caller}
        return lambda asked: set(asked) & known


def object_id(raw: str) -> int:
    """An id from the URL (digits by the route); a huge one names nothing."""
    return int(raw) if len(raw) < 10 else MAX_IN_URL


def as_400(fn, *args):
    """`fn(*args)`, its `LedgerError` a 400 with its sentence (a check before any lookup)."""
    try:
        return fn(*args)
    except LedgerError as e:
        raise web.HTTPError(400, str(e)) from None


def text(data: dict, key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise web.HTTPError(400, f"{key} must be text.")
    return value


def optional_whole(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise web.HTTPError(400, f"{key} must be a whole number.")
    return value


def optional_date(data: dict, key: str) -> date | None:
    """A date given as YYYY-MM-DD (the UTC day it names), or None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise web.HTTPError(400, f"{key} must be a date, YYYY-MM-DD.") from None


def objects(data: dict, key: str, fields: set[str], required: set[str], most: int) -> list[dict]:
    """A list of at most `most` objects, each with only `fields` and all of `required`."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise web.HTTPError(400, f"{key} must be a list.")
    if len(value) > most:
        raise web.HTTPError(400, f"{key} lists {len(value)} entries; at most {most}.")
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise web.HTTPError(400, f"Entry {i} of {key} must be an object.")
        unknown = sorted(set(item) - fields)
        if unknown:
            raise web.HTTPError(
                400,
                f"Entry {i} of {key} has an unknown field {unknown[0][:64]!r}; fields: "
                f"{', '.join(sorted(fields))}.",
            )
        missing = sorted(required - set(item))
        if missing:
            raise web.HTTPError(400, f"Entry {i} of {key} lacks {', '.join(missing)}.")
    return value


def usernames(data: dict, key: str, what: str, most: int) -> list[str]:
    """A list of at most `most` hub user names, each checked for its form."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise web.HTTPError(400, f"{key} must be a list of hub user names.")
    if len(value) > most:
        raise web.HTTPError(400, f"{key} lists {len(value)} names; at most {most}.")
    for name in value:
        as_400(check_username, what, name)
    return value
