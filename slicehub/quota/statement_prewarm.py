"""Pre-warmed servers on statements and on the class page: what became of each, and the lines
a statement lists. It only reads the ledger.

A pre-warmed session (`slicehub.quota.prewarm`) is charged to its payer (the course itself, or a
centre project: `class_prewarm.paid_by_id`) and belongs to a course through its class window
(`sessions.prewarm_window_id` -> `class_windows.project_id`), whoever paid. Its outcome
(`prewarm_outcome`):

    claimed   its student claimed it (stop reason "claimed", handed over): the time before the
              claim bought a server that was ready when they came
    wasted    it stopped without a claim: nobody came in time ("unclaimed"), the claim was
              refused ("claim-refused"), or it stopped for any other reason first
    waiting   it still runs and nobody has claimed it yet (a statement of the current month,
              during a class)

A statement (`slicehub.quota.statement.monthly_statement`) lists per course, payer and outcome
the month's pre-warmed server time and its cost (`PrewarmLine`): the servers its project paid
for (part of its totals; a centre project's lines name each course) and the servers pre-warmed
for it as a course but paid by another project (on that project's statement, not in these
totals). Which month a charge belongs to is the statement's rule, for these as for every charge.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from .models import Charge, ClassWindow, Project, Session
from .prewarm import CLAIMED
from .pricing import MICROS_PER_HOUR

if TYPE_CHECKING:
    from .statement import Amounts

WASTED, WAITING = "wasted", "waiting"
OUTCOMES = (CLAIMED, WASTED, WAITING)  # in the order statements list them
MICROS_PER_MINUTE = MICROS_PER_HOUR // 60


def prewarm_outcome(status: str, stop_reason: str, handed_to: int | None) -> str:
    """What became of a pre-warmed server (see the module docstring)."""
    if handed_to is not None or stop_reason == CLAIMED:
        return CLAIMED
    return WAITING if status == "active" else WASTED


def minutes_of(length_micros: int) -> Decimal:
    """A length of slice time in minutes, to the hundredth."""
    return (Decimal(length_micros) / MICROS_PER_MINUTE).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


@dataclass(frozen=True)
class PrewarmLine:
    """The pre-warmed servers of one course, paid by one project, with one outcome: how many
    (`servers`), their slice time in the month (microseconds) and its cost."""

    course: str  # "" when the servers' class window is gone
    paid_by: str
    outcome: str  # one of OUTCOMES
    servers: int
    micros: int
    amounts: Amounts

    @property
    def minutes(self) -> Decimal:
        return minutes_of(self.micros)


def paid_elsewhere(project_id: int):
    """The condition on charges of servers pre-warmed for course `project_id` (any of its
    class windows) that another project paid for."""
    windows = select(ClassWindow.id).where(ClassWindow.project_id == project_id)
    for_course = select(Session.id).where(Session.prewarm_window_id.in_(windows))
    return (Charge.project_id != project_id) & Charge.session_id.in_(for_course)


def prewarm_lines(
    db, slug: str, spent: Mapping[int, list], sessions: Mapping[int, Session]
) -> tuple[tuple[PrewarmLine, ...], dict[int, tuple[str, str]]]:
    """The lines of the pre-warmed servers among `sessions` (rows by id; `spent`: id ->
    [micros, amounts] in the month), and the marks of those project `slug` paid for: session
    id -> (course, outcome)."""
    warm = [s for s in sessions.values() if s.prewarm_window_id is not None]
    if not warm:
        return (), {}
    course_of = dict(
        db.execute(
            select(ClassWindow.id, Project.slug)
            .join(Project, Project.id == ClassWindow.project_id)
            .where(ClassWindow.id.in_({s.prewarm_window_id for s in warm}))
        ).all()
    )
    payer_of = dict(
        db.execute(
            select(Project.id, Project.slug).where(Project.id.in_({s.project_id for s in warm}))
        ).all()
    )
    groups: dict[tuple[str, str, str], list[Session]] = {}
    marks = {}
    for s in warm:
        key = (
            course_of.get(s.prewarm_window_id, ""),
            payer_of[s.project_id],
            prewarm_outcome(s.status, s.stop_reason, s.handed_to),
        )
        groups.setdefault(key, []).append(s)
        if key[1] == slug:
            marks[s.id] = (key[0], key[2])
    lines = (
        PrewarmLine(
            *key,
            len(group),
            sum(spent[s.id][0] for s in group),
            functools.reduce(operator.add, (spent[s.id][1] for s in group)),
        )
        for key, group in groups.items()
    )
    return tuple(
        sorted(lines, key=lambda x: (x.course, x.paid_by, OUTCOMES.index(x.outcome)))
    ), marks
