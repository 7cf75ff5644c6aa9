"""What every verb of the scheme's workflow shares: the ledger it writes to, one transaction per
verb, the lookups that refuse with 404 (an application, a project), and the mail and audit
entry a status change writes in that transaction.

A verb checks its input first, then opens one transaction in which it looks up, moves a status
through `slicehub.quota.scheme.states.advance`, writes, audits and queues its mails: a change
is in the ledger with its record and its mails, or none of them is. Who may call a verb (the
secretariat, the committee, staff) is the API's decision, from the hub's scopes; the verbs only
check what the data says (the applicant owns their application, a reviewer is assigned).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import LedgerError
from .models import Application
from .notify import Mail
from .outbox import enqueue

if TYPE_CHECKING:
    from ..ledger import Ledger


class WorkflowBase:
    """The ledger and the shared steps of the workflow's verbs (the mixins of
    `slicehub.quota.scheme.workflow.SchemeWorkflow`)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def _application(self, db, application_id: int, owner: str | None = None) -> Application:
        """Application `application_id` (its applicant must be `owner` when given), locked for
        the transaction on PostgreSQL; 404 otherwise, saying no more than that."""
        q = select(Application).where(Application.id == application_id)
        if not self.ledger.is_sqlite:
            q = q.with_for_update()
        app = db.scalar(q)
        if app is None or (owner is not None and app.applicant != owner):
            mine = " of yours" if owner is not None else ""
            raise LedgerError(f"There is no application {application_id}{mine}.", 404)
        return app


def send(db, now: datetime, to_addr: str, mail: Mail, related: str) -> None:
    """Queue `mail` to `to_addr` in the caller's transaction; no address, no mail."""
    if to_addr:
        enqueue(db, now, to_addr, mail.subject, mail.body, related)


def subject_of(app: Application) -> str:
    return f"application:{app.id}"
