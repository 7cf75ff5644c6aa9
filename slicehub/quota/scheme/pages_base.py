"""What every page of the scheme shares: who the reader is in the scheme (their roles, from the
hub's scopes), the workflow, and how a form posted to its own page ends.

A form posts to the page that shows it. The verb runs in a worker thread; when it refuses
(`LedgerError`), the same page is shown again with the sentence next to the form and
everything typed still in it, and nothing is written (each verb is one transaction). When it
succeeds the browser is sent back to the page (303, a GET) with `?done=` naming what was done,
so a reload does not post twice. A refusal that says the thing does not exist for the reader
(404) is an error page, like any other page of the service.

Cookies and XSRF are the hub's: `HubOAuthenticated` accepts a posted form's cookie only with
the page's `_xsrf` token (every form carries it: `xsrf_form_html`), as on the hub's own pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from markupsafe import Markup
from tornado import web

from ..errors import LedgerError
from ..hub_users import HubUnavailable
from ..pages import PageHandler
from .api_base import ROLE_SCOPES
from .states import WORDS
from .views import COMMITTEE, SECRETARIAT, STAFF
from .workflow import SchemeWorkflow

READERS = frozenset({STAFF, SECRETARIAT, COMMITTEE})  # who reads the dashboard

# what `?done=` says after a form succeeded
DONE = {
    "saved": "Your draft is saved.",
    "submitted": "Your application is submitted; the secretariat will check it and e-mail you.",
    "withdrawn": "The application is withdrawn.",
    "review": "The review has started; the reviewers can see the application now.",
    "assigned": "The reviewers are assigned.",
    "decided": "The decision is recorded, and the applicant is told by e-mail.",
    "conflict": "Your conflict of interest is recorded; the application is no longer yours to "
    "review.",
    "scored": "Your scores are saved; you may change them while the review lasts.",
    "change": "Your change request is sent to the secretariat.",
    "change-decided": "The change request is decided, and the PI is told by e-mail.",
    "report": "Your progress report is submitted.",
}


class Refused(Exception):
    """A form's verb refused: the sentence and the HTTP status for the page shown again."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class SchemePage(PageHandler):
    """A page of the scheme, at `root` + "scheme/..." (`root`: the service's prefix)."""

    def initialize(self, root: str) -> None:
        self.root = root

    def roles(self) -> frozenset[str]:
        scopes = self.scopes()
        return frozenset(role for scope, role in ROLE_SCOPES.items() if scope in scopes)

    @property
    def workflow(self) -> SchemeWorkflow:
        return SchemeWorkflow(self.ledger)

    def url(self, path: str) -> str:
        return f"{self.root}scheme/{path}"

    def form(self) -> dict[str, list[str]]:
        """The posted form: name -> its values as text (control characters removed, as
        tornado's arguments are)."""
        return {
            name: self.get_body_arguments(name, strip=False) for name in self.request.body_arguments
        }

    def show(self, template: str, status: int = 200, **ns) -> None:
        self.set_status(status)
        roles = self.roles()
        self.page(
            template,
            page="scheme",
            roles=roles,
            reads_dashboard=bool(roles & READERS),
            done=DONE.get(self.get_query_argument("done", ""), ""),
            xsrf_input=Markup(self.xsrf_form_html()),  # tornado escapes the token
            words=WORDS,
            **ns,
        )

    async def attempt(self, fn: Callable, *args, **kw):
        """`fn(*args, **kw)` in a worker thread; a refusal is `Refused` (a 404 is an error
        page: the reader may not know the thing exists)."""
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except LedgerError as e:
            if e.status == 404:
                raise web.HTTPError(404, str(e)) from None
            raise Refused(str(e), e.status) from None

    async def known_users(self, names) -> Callable[[list[str]], set[str]]:
        """The check the verbs take (`known_users`), answered by the hub for `names` before
        the verb runs (`slicehub.quota.hub_users`; the signed-in user is one without asking);
        `Refused` (503) when the hub cannot say."""
        caller = self.username()
        ask = set(names) - {caller}
        try:
            found = await self.settings["users"].known(ask) if ask else set()
        except HubUnavailable as e:
            raise Refused(str(e), 503) from None
        found = set(found) | {caller}
        return lambda asked: set(asked) & found

    def done(self, path: str, what: str) -> None:
        self.redirect(f"{self.url(path)}?done={what}", status=303)

    def forbid(self, who: str) -> None:
        raise web.HTTPError(
            403, f"This page is for {who}; your own applications are on My applications."
        )
