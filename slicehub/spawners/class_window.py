"""A class window as the slice sources see it, and the sentence that refuses one.

Decides what a class window asks of a machine room (its course, its id, from when to when, the
course's slice type and how many seats) and how a refusal reads, with the numbers: "The class
window needs 60 h100.1g.10gb slices; the cluster has 40 in all (20 on n1, 20 on n2)." Both
sources answer the same question, each its own way: `slurm.reservation` chooses the whole nodes
of a Slurm advance reservation, `local.class_hold` places the seats with the local allocator.

Does not decide when a window is held, who may create one or what its seats cost (the quota
service's), nor which students sit in it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from slicehub.common.names import PROJECT_ID

from .site_model import SliceType

MAX_SEATS = 10_000
MAX_WINDOW_ID = 9_999_999_999  # ten digits, as a Slurm name carries it
NODES_NAMED = 8  # a refusal names this many nodes, then says how many more


class ClassWindowRefused(ValueError):
    """The site's slices cannot hold the window's seats; the message says so with the numbers."""

    def __init__(self, sentence: str, *, needed: int, available: int) -> None:
        super().__init__(sentence)
        self.needed = needed
        self.available = available


@dataclass(frozen=True)
class ClassWindowNeed:
    """What one class window asks for: `seats` slices of `slice_type` from `starts_at` to
    `ends_at` (aware datetimes) for course `course` (a project id)."""

    course: str
    window_id: int
    starts_at: datetime
    ends_at: datetime
    slice_type: SliceType
    seats: int

    def __post_init__(self) -> None:
        if not isinstance(self.course, str) or PROJECT_ID.fullmatch(self.course) is None:
            raise ValueError(
                f"course {self.course!r} is not a project id: use 1-63 characters of a-z 0-9 -, "
                "starting with a letter or digit."
            )
        if not _whole(self.window_id, 1, MAX_WINDOW_ID):
            raise ValueError(
                f"class window id {self.window_id!r} is not allowed: give a whole number from 1 "
                f"to {MAX_WINDOW_ID}."
            )
        for label, when in (("start", self.starts_at), ("end", self.ends_at)):
            if not isinstance(when, datetime) or when.utcoffset() is None:
                raise ValueError(
                    f"the class window's {label} {when!r} is not allowed: give a datetime with "
                    "its time zone."
                )
        if self.ends_at <= self.starts_at:
            raise ValueError(
                f"the class window ends ({self.ends_at.isoformat()}) before it starts "
                f"({self.starts_at.isoformat()})."
            )
        if not _whole(self.seats, 1, MAX_SEATS):
            raise ValueError(
                f"seats {self.seats!r} is not allowed: give a whole number from 1 to {MAX_SEATS}."
            )


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def slices(count: int, slice_type: str) -> str:
    """A count of slices with their type: 1 h100.1g.10gb slice, 60 h100.1g.10gb slices."""
    return f"{count} {slice_type} slice{'' if count == 1 else 's'}"


def refusal(
    need: ClassWindowNeed,
    where: str,
    per_node: Mapping[str, int],
    *,
    not_free: int = 0,
    why: str = "",
) -> ClassWindowRefused:
    """The refusal of `need`: what it needs, what `where` ("the cluster", "the site") holds in
    all and on which nodes (`per_node`, in the order given), and, when `not_free` of those
    cannot be had in the window, why (`why`, e.g. "are in other reservations then (...)")."""
    total = sum(per_node.values())
    holding = [(node, n) for node, n in per_node.items() if n > 0]
    if holding:
        named = ", ".join(f"{n} on {node}" for node, n in holding[:NODES_NAMED])
        if len(holding) > NODES_NAMED:
            rest = holding[NODES_NAMED:]
            named += (
                f" and {sum(n for _, n in rest)} on {len(rest)} other "
                f"node{'' if len(rest) == 1 else 's'}"
            )
        has = f"{where} has {total} in all ({named})"
    else:
        has = f"{where} has none"
    sentence = f"The class window needs {slices(need.seats, need.slice_type.name)}; {has}"
    if not_free:
        sentence += f", of which {not_free} {why}"
    return ClassWindowRefused(sentence + ".", needed=need.seats, available=max(total - not_free, 0))
