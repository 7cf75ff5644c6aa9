"""A pre-warmed class server claimed by its student, the first time they reach it.

The classroom service started this server before the class, under the student's own account,
and the ledger holds it on the course's pre-warm payer (`SLICEHUB_PREWARM=1`). The first request
the server answers for its owner (their browser opening JupyterLab, or their own token: nobody
else's requests count, neither the culler's reading nor an admin's visit) claims it: the quota
service hands the session to the student from that second (`POST api/sessions/{id}/claim`, with
the server's own token). A claim made before the class opens is answered 425 and made again
every `retry` seconds until the class starts; a claim the student cannot pay is refused (the
quota service then stops the server) and the refusal is kept for the status bar; a quota service
that does not answer is asked again at the owner's next request, at most every `retry` seconds.

Where requests are seen: the Jupyter server's `log_function` (called once per request, after
it is answered, with its handler), so no handler of JupyterLab's is changed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tornado import web

from slicehub.common.quota_client import QuotaClient

log = logging.getLogger("slicehub.claim")

NONE, WAITING, CLAIMED, REFUSED = "not pre-warmed", "waiting", "claimed", "refused"
TOO_EARLY = 425


class Claim:
    """The claim of this server by `owner` (its hub user) of ledger session `session_id`."""

    def __init__(
        self,
        owner: str,
        session_id: int | None,
        quota: QuotaClient | None,
        prewarmed: bool,
        retry: float = 30.0,
    ):
        self.owner = owner
        self.session_id = session_id
        self.quota = quota
        self.retry = retry
        self.state = WAITING if prewarmed and session_id and quota is not None else NONE
        self.message = ""  # the quota service's last word (why it waits, or the refusal)
        self.session: dict | None = None  # the student's own session, once claimed
        self._task: asyncio.Future | None = None
        self._next_try = 0.0

    def saw(self, handler) -> None:
        """A request was answered (the server's `log_function`): claim if it was the owner's."""
        if self.state != WAITING or handler.get_status() >= 400:
            return
        user = getattr(handler, "current_user", None)
        if getattr(user, "username", None) != self.owner:
            return
        if self._task is None and time.monotonic() >= self._next_try:
            self._task = asyncio.ensure_future(self._claim())

    async def _claim(self) -> None:
        try:
            while self.state == WAITING:
                try:
                    self.session = await self.quota.claim(self.session_id)
                except web.HTTPError as e:
                    self.message = e.log_message or str(e)
                    if e.status_code == TOO_EARLY:  # the class has not started: wait for it
                        await asyncio.sleep(self.retry)
                        continue
                    if e.status_code in (402, 403):
                        self.state = REFUSED
                        log.warning("The claim of this server was refused: %s", self.message)
                    elif e.status_code == 409 and "claimed already" in self.message:
                        self.state = CLAIMED
                    else:  # the quota service is away or confused: the next request asks again
                        log.warning("Could not claim this server yet: %s", self.message)
                        self._next_try = time.monotonic() + self.retry
                    return
                self.state, self.message = CLAIMED, ""
                log.info("%s claimed this pre-warmed server (session %s)", self.owner, self.session)
        finally:
            self._task = None

    def view(self) -> dict:
        """For the status endpoint: {"state", "message"}."""
        return {"state": self.state, "message": self.message}


def watch_requests(web_app, claim: Claim) -> None:
    """Let `claim` see every request `web_app` (the Jupyter server's) answers."""
    before = web_app.settings.get("log_function")

    def log_function(handler) -> None:
        if before is not None:
            before(handler)
        try:
            claim.saw(handler)
        except Exception:  # never let the claim break a request's logging
            log.exception("Could not look at a request for the claim")

    web_app.settings["log_function"] = log_function
