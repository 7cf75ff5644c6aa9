"""The statuses of applications and change requests, and the transitions between them. Pure.

Applications follow ColdFront's convention: a draft is submitted, the secretariat puts a
submitted application under review, and the decision approves it (as asked, or with changes) or
rejects it; until the decision the applicant may withdraw it. A draft is the only editable
state; nothing goes back to draft (the secretariat rejects, or asks by e-mail). Change requests
are pending until approved or denied; a progress report is due until it is submitted.

`advance` is the only way a status changes: every verb of the workflow calls it, so a transition
outside `APPLICATION`, `CHANGE_REQUEST` or `REPORT` is refused with a sentence, and a terminal
status (one with no way out) stays as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import LedgerError

DRAFT, SUBMITTED, UNDER_REVIEW = "draft", "submitted", "under_review"
APPROVED, APPROVED_WITH_CHANGES, REJECTED = "approved", "approved_with_changes", "rejected"
WITHDRAWN = "withdrawn"
PENDING, DENIED = "pending", "denied"  # a change request's (APPROVED is shared)
DUE = "due"  # a progress report's, until SUBMITTED

APPLICATION: Mapping[str, frozenset[str]] = {
    DRAFT: frozenset({SUBMITTED, WITHDRAWN}),
    SUBMITTED: frozenset({UNDER_REVIEW, WITHDRAWN}),
    UNDER_REVIEW: frozenset({APPROVED, APPROVED_WITH_CHANGES, REJECTED, WITHDRAWN}),
    APPROVED: frozenset(),
    APPROVED_WITH_CHANGES: frozenset(),
    REJECTED: frozenset(),
    WITHDRAWN: frozenset(),
}

CHANGE_REQUEST: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({APPROVED, DENIED}),
    APPROVED: frozenset(),
    DENIED: frozenset(),
}

REPORT: Mapping[str, frozenset[str]] = {
    DUE: frozenset({SUBMITTED}),
    SUBMITTED: frozenset(),
}

# what people read for each status
WORDS = {
    DRAFT: "draft",
    SUBMITTED: "submitted",
    UNDER_REVIEW: "under review",
    APPROVED: "approved",
    APPROVED_WITH_CHANGES: "approved with changes",
    REJECTED: "rejected",
    WITHDRAWN: "withdrawn",
    PENDING: "pending",
    DENIED: "denied",
    DUE: "due",
}

DECIDED = frozenset({APPROVED, APPROVED_WITH_CHANGES, REJECTED})


def terminal(table: Mapping[str, frozenset[str]], status: str) -> bool:
    """Whether `status` has no way out in `table`."""
    return not table[status]


def allowed(table: Mapping[str, frozenset[str]], current: str, new: str) -> bool:
    """Whether `table` lets a status move from `current` to `new`."""
    return new in table.get(current, frozenset())


def advance(table: Mapping[str, frozenset[str]], row, new: str, what: str) -> str:
    """Move `row.status` to `new` when `table` allows it, and return the status it had; refuse
    (409, nothing changed) otherwise. `what` names the row for the sentence ("Application 12")."""
    current = row.status
    if not allowed(table, current, new):
        raise LedgerError(
            f"{what} is {WORDS.get(current, current)}; it cannot become {WORDS.get(new, new)}.",
            409,
        )
    row.status = new
    return current
