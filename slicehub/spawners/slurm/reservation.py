"""A class window as a Slurm advance reservation: which nodes it needs, and the scontrol lines
that create, change, show and remove it.

Decides:
- the nodes a window reserves. Slurm 22.05 refuses GPU counts in reservations ("TRES type
  'gres/gpu' not supported with reservations"), so a window reserves whole nodes: the fewest
  nodes of its slice type's partition that hold its seats (each node counted empty, by
  `offer.slices_on_node`: its GRES of the type, CPUs and memory, whichever runs out first).
  The biggest nodes are taken first and the last one is the smallest that completes the seats,
  so bigger nodes stay free for others; ties go by node name (n2 before n10). A node that is
  down or drained, or in another reservation that overlaps the window, is not chosen. When the
  seats do not fit the refusal says so with the numbers (`class_window.refusal`);
- the reservation's name, ``slicehub-<course>-<window id>`` (`reservation_name`); Slicehub
  creates, changes and removes only reservations with such names, never a staff member's;
- the argv of ``scontrol create|update|delete reservation`` and ``scontrol show reservation``
  (argv lists, never a shell; every value checked against a strict pattern first, a bad one is
  a ValueError naming the field), what ``show`` prints as plain data (`parse_reservations`) and
  what scontrol's refusals mean, as sentences (`scontrol_refusal`).

A reservation is created with ``flags=ignore_jobs`` by default: a window is reserved days ahead,
and jobs already running on its nodes (up to the partition's MaxTime) would otherwise make Slurm
refuse it. Slurm then starts no new job on those nodes that would run into the window; a job
already running there keeps its slices until it ends. Creating a reservation needs a Slurm
operator (``sacctmgr modify user <hub account> set adminlevel=operator``) or root. When both
``users`` and ``accounts`` are given, a job must match both to run in the reservation.

Whole nodes hold more than a class needs (a node of 20 1g.10gb slices reserved for 12 seats).
A site with Slurm 23.02 or newer can reserve the slices themselves instead: ``TRES=gres/gpu:
<type>=<seats>`` (with ``nodecnt=`` or ``nodes=`` to bound where) reserves GPU counts, so research
jobs keep the rest of each node; the planner would then give the seats per GRES type, not nodes.

Times: the builders take aware datetimes and write the controller's local time (this host is
assumed to share its zone, as everywhere in Slicehub's Slurm code); `parse_reservations` returns
naive local datetimes, as `answers` does. Pure: no subprocess, no I/O. The parser was written
against Debian's slurm-wlm 22.05.8 (recorded in tests/fixtures/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from slicehub.common.names import PROJECT_ID

from ..class_window import MAX_WINDOW_ID, ClassWindowNeed, refusal
from . import answers as sa
from . import commands as sc
from .offer import slices_on_node
from .site import SlurmSliceType

PREFIX = "slicehub-"
_OURS = re.compile(rf"{PREFIX}(?P<course>{PROJECT_ID.pattern})-(?P<window>[1-9][0-9]{{0,9}})")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# a Unix or Slurm user name; never a leading "-" (users=-alice means "everyone but alice")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
FLAGS = ("IGNORE_JOBS", "MAGNETIC")  # the flags Slicehub may set; MAGNETIC: jobs need no option
DEFAULT_FLAGS = ("IGNORE_JOBS",)
# Nodes a future window may reserve: those taking jobs now, or reserved (now) or planned for a
# pending job; a down, drained or failing node is left out.
PLANNABLE_NODE_STATES = sa.USABLE_NODE_STATES | {"reserved", "planned"}
NO_RESERVATIONS = "No reservations in the system"


# ---- names -----------------------------------------------------------------------------------


def reservation_name(course: str, window_id: int) -> str:
    """``slicehub-<course>-<window id>``: the name of a class window's reservation."""
    if not isinstance(course, str) or PROJECT_ID.fullmatch(course) is None:
        raise ValueError(
            f"course {course!r} is not allowed in a reservation name: give a project id "
            "(1-63 characters of a-z 0-9 -, starting with a letter or digit)."
        )
    if (
        isinstance(window_id, bool)
        or not isinstance(window_id, int)
        or not 1 <= window_id <= MAX_WINDOW_ID
    ):
        raise ValueError(
            f"class window id {window_id!r} is not allowed in a reservation name: give a whole "
            f"number from 1 to {MAX_WINDOW_ID}."
        )
    return sc.check_reservation(f"{PREFIX}{course}-{window_id}")


def window_of(name: str) -> tuple[str, int] | None:
    """(course, window id) of a Slicehub reservation's name; None for any other name."""
    found = _OURS.fullmatch(name) if isinstance(name, str) else None
    return (found["course"], int(found["window"])) if found else None


def _ours(name: object) -> str:
    if not isinstance(name, str) or window_of(name) is None:
        raise ValueError(
            f"reservation {name!r} is not one of Slicehub's: Slicehub changes only reservations "
            f"named {PREFIX}<course>-<window id>."
        )
    return name


# ---- which nodes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReservationPlan:
    """The nodes a class window reserves, and how many of its slice type each holds."""

    name: str
    nodes: tuple[str, ...]  # by name, n2 before n10
    per_node: Mapping[str, int]  # chosen node -> slices of the window's type it holds (empty)
    seats: int

    @property
    def capacity(self) -> int:
        return sum(self.per_node.values())


def _natural(name: str) -> tuple:
    """n2 before n10: digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def plan_reservation(
    need: ClassWindowNeed,
    where: SlurmSliceType,
    nodes: Mapping[str, sa.NodeResources],
    reservations: Iterable[ShownReservation] = (),
) -> ReservationPlan:
    """The fewest nodes of `where.partition` that hold `need.seats` slices of its type, among
    those not down or drained and not in another of `reservations` overlapping the window (its
    own reservation, when it exists, does not count: the plan is then for an update).
    ClassWindowRefused with the numbers when they do not."""
    name = reservation_name(need.course, need.window_id)
    members = sorted(
        (n for n in nodes.values() if where.partition in n.partitions),
        key=lambda n: _natural(n.name),
    )
    per_node = {n.name: slices_on_node(need.slice_type, where, n, False) for n in members}
    unavailable = {n.name: n.state for n in members if n.state not in PLANNABLE_NODE_STATES}
    for other in reservations:
        if other.name != name and other.overlaps(need.starts_at, need.ends_at):
            for node in other.nodes:
                if node in per_node:
                    unavailable.setdefault(node, f"in reservation {other.name}")
    open_nodes = {n: c for n, c in per_node.items() if n not in unavailable and c > 0}
    chosen = _fewest(open_nodes, need.seats)
    if chosen is None:
        raise refusal(
            need,
            "the cluster",
            per_node,
            not_free=sum(per_node[n] for n in unavailable),
            why="are on nodes it cannot have then ("
            + "; ".join(f"{n}: {why}" for n, why in unavailable.items())
            + ")",
        )
    chosen = sorted(chosen, key=_natural)
    return ReservationPlan(name, tuple(chosen), {n: per_node[n] for n in chosen}, need.seats)


def _fewest(capacity: Mapping[str, int], seats: int) -> list[str] | None:
    """Biggest first until one more completes the seats; that one is the smallest that does."""
    ranked = sorted(capacity.items(), key=lambda nc: (-nc[1], _natural(nc[0])))
    if sum(capacity.values()) < seats:
        return None
    chosen: list[str] = []
    left = seats
    for i, (node, count) in enumerate(ranked):
        if count >= left:
            completes = [(c, _natural(n), n) for n, c in ranked[i:] if c >= left]
            return [*chosen, min(completes)[2]]
        chosen.append(node)
        left -= count
    return None  # not reached: the sum covers the seats


# ---- scontrol argv ---------------------------------------------------------------------------


def _controller_time(label: str, when: object) -> str:
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise ValueError(
            f"{label} {when!r} is not allowed: give a datetime with its time zone (it is written "
            "in the controller's local time)."
        )
    return when.astimezone().strftime(sc.SLURM_TIME_FORMAT)


def _names(label: str, values: object, pattern: re.Pattern[str], rule: str) -> str:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{label}: give a list of names, not {values!r}.")
    checked: list[str] = []
    for value in values:
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise ValueError(f"{label[:-1]} {value!r} is not allowed: {rule}.")
        if value not in checked:
            checked.append(value)
    if not checked:
        raise ValueError(f"{label}: give at least one.")
    return ",".join(checked)


def _nodes(nodes: object) -> str:
    return _names(
        "nodes", nodes, _NODE, "a node is 1-64 characters of A-Z a-z 0-9 . _ -, as sinfo lists it"
    )


def _users(users: object) -> str:
    return _names(
        "users",
        users,
        _USER,
        "a user is 1-64 characters of A-Z a-z 0-9 . _ -, not starting with . or -",
    )


def _accounts(accounts: object) -> str:
    if isinstance(accounts, str) or not isinstance(accounts, Iterable):
        raise ValueError(f"accounts: give a list of Slurm accounts, not {accounts!r}.")
    checked = list(dict.fromkeys(sc.check_account(a) for a in accounts))
    if not checked:
        raise ValueError("accounts: give at least one.")
    return ",".join(checked)


def _flags(flags: object) -> str:
    if isinstance(flags, str) or not isinstance(flags, Iterable):
        raise ValueError(f"flags: give a list of flags, not {flags!r}.")
    checked = []
    for flag in flags:
        if flag not in FLAGS:
            raise ValueError(f"flag {flag!r} is not allowed: use {', '.join(FLAGS)}.")
        if flag not in checked:
            checked.append(flag)
    return ",".join(checked)


def create_reservation_argv(
    name: str,
    *,
    starts_at: datetime,
    ends_at: datetime,
    nodes: Sequence[str],
    users: Sequence[str] = (),
    accounts: Sequence[str] = (),
    flags: Sequence[str] = DEFAULT_FLAGS,
    executable: str = "scontrol",
) -> list[str]:
    """argv for ``scontrol create reservation`` of Slicehub reservation `name` on `nodes`, for
    `users` and/or `accounts` (at least one of them)."""
    if not users and not accounts:
        raise ValueError(
            "reservation: give the users or the accounts whose jobs may run in it (or both)."
        )
    argv = [
        sc.check_executable(executable),
        "create",
        "reservation",
        f"reservationname={_ours(name)}",
        f"starttime={_controller_time('start', starts_at)}",
        f"endtime={_controller_time('end', ends_at)}",
        f"nodes={_nodes(nodes)}",
    ]
    if ends_at <= starts_at:
        raise ValueError("reservation: its end must come after its start.")
    if users:
        argv.append(f"users={_users(users)}")
    if accounts:
        argv.append(f"accounts={_accounts(accounts)}")
    if flags:
        argv.append(f"flags={_flags(flags)}")
    return argv


def update_reservation_argv(
    name: str,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    nodes: Sequence[str] | None = None,
    users: Sequence[str] | None = None,
    executable: str = "scontrol",
) -> list[str]:
    """argv for ``scontrol update`` of Slicehub reservation `name`: new times, nodes or users
    (the list replaces the old one). Moving a window's start past its old end needs both."""
    changes = []
    if starts_at is not None:
        changes.append(f"starttime={_controller_time('start', starts_at)}")
    if ends_at is not None:
        changes.append(f"endtime={_controller_time('end', ends_at)}")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise ValueError("reservation: its end must come after its start.")
    if nodes is not None:
        changes.append(f"nodes={_nodes(nodes)}")
    if users is not None:
        changes.append(f"users={_users(users)}")
    if not changes:
        raise ValueError("reservation update: give new times, nodes or users.")
    return [sc.check_executable(executable), "update", f"reservationname={_ours(name)}", *changes]


def delete_reservation_argv(name: str, *, executable: str = "scontrol") -> list[str]:
    """argv for ``scontrol delete`` of Slicehub reservation `name`."""
    return [sc.check_executable(executable), "delete", f"reservationname={_ours(name)}"]


def show_reservations_argv(*, executable: str = "scontrol") -> list[str]:
    """argv for ``scontrol show reservation``, every reservation on one line each."""
    return [sc.check_executable(executable), "--oneliner", "show", "reservation"]


# ---- scontrol show reservation ---------------------------------------------------------------


@dataclass(frozen=True)
class ShownReservation:
    """One reservation as ``scontrol show reservation`` prints it."""

    name: str
    start: datetime  # naive: the controller's local time
    end: datetime
    nodes: tuple[str, ...]  # the hostlist expanded: "n[1-2]" -> ("n1", "n2")
    users: tuple[str, ...]
    accounts: tuple[str, ...]
    flags: frozenset[str]  # IGNORE_JOBS, SPEC_NODES, MAGNETIC, ...
    state: str  # ACTIVE or INACTIVE
    tres: str  # "cpu=64": what it holds, as Slurm counts it

    @property
    def window(self) -> tuple[str, int] | None:
        """(course, window id) when Slicehub made it; None for any other reservation."""
        return window_of(self.name)

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        """Does it overlap the aware interval [starts_at, ends_at)?"""
        return self.start.astimezone() < ends_at and starts_at < self.end.astimezone()


def reservation_for(
    reservations: Iterable[ShownReservation],
    course: str,
    username: str,
    account: str | None,
    now: datetime,
    window_id: int | None = None,
) -> str | None:
    """The class reservation a job of `username` (charged to `course`, Slurm `account`) runs
    in now: Slicehub's reservation of one of `course`'s windows that is in force at `now` (an
    aware time) and admits the user or the account; the one of `window_id` when that is
    given (a pre-warmed server's window). None: the job runs outside any reservation."""
    for r in reservations:
        found = r.window
        if found is None or found[0] != course:
            continue
        if window_id is not None and found[1] != window_id:
            continue
        if not r.start.astimezone() <= now < r.end.astimezone():
            continue
        if username in r.users or (account is not None and account in r.accounts):
            return r.name
    return None


_FIELD = re.compile(r"(?:^|\s)(?P<key>[A-Za-z]+)=")


def parse_reservations(stdout: str) -> list[ShownReservation]:
    """The reservations in ``scontrol show reservation``'s output (one line each with
    ``--oneliner``, or Slurm's default of several lines and a blank line between)."""
    text = stdout.strip()
    if not text or text == NO_RESERVATIONS:
        return []
    if not text.startswith("ReservationName="):
        raise ValueError(f"scontrol printed no reservation: {text[:200]!r}")
    return [
        _reservation(record)
        for record in re.split(r"(?=(?:^|\s)ReservationName=)", text)
        if record.strip()
    ]


def _reservation(record: str) -> ShownReservation:
    marks = list(_FIELD.finditer(record))
    fields = {
        m["key"]: record[
            m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(record)
        ].strip()
        for i, m in enumerate(marks)
    }
    missing = {"ReservationName", "StartTime", "EndTime", "Nodes"} - fields.keys()
    if missing:
        raise ValueError(
            f"scontrol's reservation has no {', '.join(sorted(missing))}: {record[:200]!r}"
        )
    return ShownReservation(
        name=fields["ReservationName"],
        start=datetime.strptime(fields["StartTime"], sc.SLURM_TIME_FORMAT),
        end=datetime.strptime(fields["EndTime"], sc.SLURM_TIME_FORMAT),
        nodes=expand_hostlist(fields["Nodes"]),
        users=_list(fields.get("Users", "")),
        accounts=_list(fields.get("Accounts", "")),
        flags=frozenset(_list(fields.get("Flags", ""))),
        state=fields.get("State", ""),
        tres=fields.get("TRES", ""),
    )


def _list(text: str) -> tuple[str, ...]:
    return () if text in sc.NO_VALUE else tuple(v for v in text.split(",") if v)


_HOSTLIST_ITEM = re.compile(r"(?P<prefix>[^\[\],]*)\[(?P<ranges>[0-9,-]+)\](?P<suffix>[^\[\],]*)")


def expand_hostlist(text: str) -> tuple[str, ...]:
    """Slurm's hostlist as names: "n[1-2],gpu[08-10],login" -> n1 n2 gpu08 gpu09 gpu10 login.
    One bracket per name; a form this does not read is a ValueError, never a guess."""
    if text.strip() in sc.NO_VALUE:
        return ()
    names: list[str] = []
    for item in _top_level_items(text.strip(), text):
        if "[" not in item and "]" not in item:
            names.append(item)
            continue
        found = _HOSTLIST_ITEM.fullmatch(item)
        if found is None:
            raise ValueError(f"the hostlist {text!r} could not be read (at {item!r}).")
        for part in found["ranges"].split(","):
            low, _, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ValueError(f"the hostlist {text!r} could not be read (at {part!r}).")
            width = len(low) if low.startswith("0") else 0
            for number in range(int(low), int(high or low) + 1):
                names.append(f"{found['prefix']}{number:0{width}d}{found['suffix']}")
    bad = [n for n in names if _NODE.fullmatch(n) is None]
    if bad:
        raise ValueError(f"the hostlist {text!r} could not be read (at {bad[0]!r}).")
    return tuple(names)


def _top_level_items(items: str, text: str) -> list[str]:
    """Split at the commas outside brackets: "n[1,3],m" -> ["n[1,3]", "m"]."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(items):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise ValueError(f"the hostlist {text!r} could not be read (brackets).")
        if char == "," and depth == 0:
            parts.append(items[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"the hostlist {text!r} could not be read (brackets).")
    parts.append(items[start:])
    return parts


# ---- what scontrol's refusals mean -----------------------------------------------------------

# (what scontrol says, what it means): the first that appears in its output wins
_REFUSALS = (
    ("Duplicate reservation name", "Slurm already has a reservation named {name}"),
    (
        "overlaps with another reservation",
        "its nodes are in another reservation at that time; plan the window again with the "
        "reservations Slurm has now",
    ),
    ("Requested nodes are busy", "its nodes run jobs that would run into the window"),
    ("Invalid node name specified", "Slurm does not know one of its nodes"),
    ("Invalid user id", "one of its users is not a user on the cluster"),
    (
        "Invalid account or account/partition combination",
        "one of its users or accounts has no Slurm association (sacctmgr add user)",
    ),
    ("Requested reservation is invalid", "Slurm has no reservation named {name}"),
    ("Requested reservation is in use", "jobs run in it; cancel them (or let them end) first"),
    ("not found", "Slurm has no reservation named {name}"),
    ("Start time cannot be after end time", "its end comes before its start"),
    ("Invalid time specified", "its times are not valid (a start in the past, or after the end)"),
    (
        "Access/permission denied",
        "only a Slurm operator or root may change reservations (sacctmgr modify user <hub "
        "account> set adminlevel=operator)",
    ),
    (
        "not supported with reservations",
        "this Slurm cannot reserve GPU counts (22.05 and older): reserve whole nodes",
    ),
)


def scontrol_refusal(action: str, name: str, output: str) -> str:
    """What scontrol's failure to `action` ("create", "update", "delete", "show") reservation
    `name` means, as one sentence; `output` is its stderr and stdout together."""
    for phrase, meaning in _REFUSALS:
        if phrase in output:
            return f"Slurm refused to {action} reservation {name}: {meaning.format(name=name)}."
    said = " ".join(output.split())[:300].rstrip(".") or "no output"
    return f"Slurm refused to {action} reservation {name}: {said}."
