"""`SchemeWorkflow`: every verb of the scheme's workflow on one ledger, for the REST API, the
pages and the CLI to call.

It is put together from the workflow's parts, one job each: the applicant's verbs and the
scheme's configuration (`applications`), the review (`review`), the decision that creates the
project and its grant within the fund (`decisions`), change requests (`changes`) and progress
reports (`reports`). Read-only views (who sees what, a request's live cost, scores) are
`slicehub.quota.scheme.views`; the statuses and their transitions are
`slicehub.quota.scheme.states`; the mails are `slicehub.quota.scheme.notify`.
"""

from __future__ import annotations

from .applications import ApplicationVerbs
from .changes import ChangeVerbs
from .decisions import DecisionVerbs
from .reports import ReportVerbs
from .review import ReviewVerbs


class SchemeWorkflow(ApplicationVerbs, ReviewVerbs, DecisionVerbs, ChangeVerbs, ReportVerbs):
    """The scheme's workflow on `ledger` (a `slicehub.quota.ledger.Ledger`)."""
