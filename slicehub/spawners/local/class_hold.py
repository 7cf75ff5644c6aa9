"""Which of the site's slices a class window holds from its lead time, on the local spawner.

Decides the seats' slices: one seat after another, each where the local allocator would put a
start of the course's slice type (`Allocator.place`: its best-fit, fragmentation-aware rules, not
a copy of them), on an allocator that already holds what is held at that time (`held`: other
class windows' holds that overlap this window, or the live sessions at the lead time). Each seat
is held under its own holder name, ``class:<course>:<window id>:<seat>``, so a student's start
can later take one seat's slice over. When the seats do not fit, the refusal says so with the
numbers (`class_window.refusal`), from each node's capacity when empty (`Allocator.capacity`).

Does not decide when the hold is taken or given back, nor make it durable: the manager's
`ReservationStore` does that for every hold, and its reconcile pass must leave ``class:`` holders
alone. Pure: a scratch allocator in memory, nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..class_window import ClassWindowNeed, refusal
from .allocator import Allocator, Assignment
from .inventory import Inventory
from .manager import request_for

HOLDER_PREFIX = "class:"


def holder_name(course: str, window_id: int, seat: int) -> str:
    """The holder of one seat's slice: ``class:<course>:<window id>:<seat>`` (seats from 1)."""
    return f"{HOLDER_PREFIX}{course}:{window_id}:{seat}"


@dataclass(frozen=True)
class ClassHold:
    """The slices a class window holds, one per seat, in seat order."""

    course: str
    window_id: int
    seats: tuple[tuple[str, Assignment], ...]  # (holder, what it holds)

    @property
    def per_node(self) -> Mapping[str, int]:
        """How many seats each node holds, in the order they were placed."""
        return dict(Counter(a.node for _, a in self.seats))


def plan_class_hold(
    need: ClassWindowNeed,
    inventory: Inventory,
    held: Iterable[tuple[str, Assignment]] = (),
) -> ClassHold:
    """The slices `need`'s seats would hold on `inventory`, given what `held` holds then;
    ClassWindowRefused with the numbers when they do not all fit. AllocationConflict when
    `held` itself overlaps (two holds of one device)."""
    allocator = Allocator(inventory)
    held = list(held)
    allocator.load(held)
    request = request_for(need.slice_type)
    seats: list[tuple[str, Assignment]] = []
    for seat in range(1, need.seats + 1):
        placed = allocator.place(request)
        if placed is None:
            break
        holder = holder_name(need.course, need.window_id, seat)
        allocator.hold(holder, placed)
        seats.append((holder, placed))
    if len(seats) == need.seats:
        return ClassHold(need.course, need.window_id, tuple(seats))
    per_node = {n.name: Allocator(Inventory((n,))).capacity(request) for n in inventory.nodes}
    not_free = max(sum(per_node.values()) - len(seats), 0) if held else 0
    raise refusal(
        need, "the site", per_node, not_free=not_free, why="are held by others at that time"
    )
