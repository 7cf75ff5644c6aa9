"""Property tests of a project's member group, over random schedules of holds, extensions,
ticks and stops on SQLite:

- a member through the project's group and a member by row with the same cap are decided alike:
  the same holds and extensions held or refused, for the same amounts, with the same sentences;
- changing a user's groups between holds changes only what came from a group: every decision in
  a project where they have a row is the same whatever groups they are in, and in a project they
  reach only through its group they are refused as a non-member exactly when they are not in it.
"""

import shutil
import tempfile
from datetime import timedelta
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.quota.errors import LedgerError
from slicehub.quota.hold import HoldRequest
from slicehub.quota.ledger import Ledger
from tests.unit.rules_ledger import T0, build, project

TYPES = ("h100.1g.10gb", "h100.3g.40gb")  # HK$10.00 and HK$30.00 an hour
MINUTE = timedelta(minutes=1)


@cache
def template() -> Path:
    """The rules' ledger (scheme, prices), migrated once; each example copies it."""
    path = Path(tempfile.mkdtemp(prefix="member-groups-")) / "template.sqlite"
    build(f"sqlite:///{path}").dispose()
    return path


def fresh(folder: str, name: str) -> Ledger:
    path = Path(folder) / f"{name}.sqlite"
    shutil.copyfile(template(), path)
    return Ledger(f"sqlite:///{path}")


def outcome(o, slug: str):
    """What a decision was, with the project's name taken out of its sentence."""
    if isinstance(o, LedgerError):
        return ("refused", o.status, str(o).replace(slug, "<project>"))
    return ("held", o.end_at, o.hold_list_cents, o.hold_subsidy_cents, o.hold_credit_cents)


def hold(lg, slug, user, server, slice_type, minutes, now, groups):
    (o,) = lg.open_sessions(
        [HoldRequest(slug, user, server, slice_type, minutes * MINUTE, now, groups=groups)]
    )
    return o


def extend(lg, sid, user, minutes, now, groups):
    try:
        s, _ = lg.extend(sid, user, minutes * MINUTE, now, groups)
    except LedgerError as e:
        return e
    return s


# amounts on the scale of a few holds, so that caps, grants and credit run out often
STEP = st.tuples(
    st.sampled_from(("hold", "hold", "hold", "extend", "stop")),
    st.sampled_from(TYPES),
    st.one_of(st.sampled_from((10, 30, 60, 120)), st.integers(1, 4 * 60)),  # minutes held/added
    st.sampled_from((0, 0, 5, 45)),  # minutes that pass first (and are metered)
    st.integers(0, 7),  # which running session an extend or a stop picks
)


@settings(max_examples=100, deadline=None)
@given(
    grant=st.one_of(st.sampled_from((10_00, 40_00, 1000_00)), st.integers(1, 60_00)),
    full_price=st.booleans(),
    member_cap=st.one_of(st.none(), st.sampled_from((0, 5_00, 15_00)), st.integers(0, 30_00)),
    row_cap_is_own=st.booleans(),  # the row member's cap: their own, equal to the project's
    max_sessions=st.integers(2, 4),
    other_groups=st.sets(st.sampled_from(("staff", "proj-x", "Lab")), max_size=2),
    steps=st.lists(STEP, min_size=1, max_size=12),
)
def test_a_group_member_and_a_row_member_with_the_same_cap_are_decided_alike(
    grant, full_price, member_cap, row_cap_is_own, max_sessions, other_groups, steps
):
    spec = dict(
        grant=grant,
        policy="full_price" if full_price else "stop",
        credit_limit_cents=20_00 if full_price else 0,
        member_cap_cents=member_cap,
        max_concurrent_sessions=max_sessions,
    )
    groups = frozenset({"lab", *other_groups})
    with tempfile.TemporaryDirectory() as folder:
        lg = fresh(folder, "ledger")
        try:
            project(lg, "lab-r", **spec)
            own_cap = member_cap if row_cap_is_own else None
            lg.add_member("staff", "lab-r", "ann", T0, cap_cents=own_cap)
            project(lg, "lab-g", member_group="lab", **spec)
            running = {"lab-r": [], "lab-g": []}
            now = T0
            for n, (kind, slice_type, minutes, wait, pick) in enumerate(steps):
                now += wait * MINUTE
                lg.meter(now)
                got = {}
                for slug in running:
                    active = running[slug]
                    if kind == "hold":
                        o = hold(lg, slug, "ann", f"{slug}-{n}", slice_type, minutes, now, groups)
                        if not isinstance(o, LedgerError):
                            active.append(o.id)
                    elif not active:
                        o = None
                    elif kind == "extend":
                        o = extend(lg, active[pick % len(active)], "ann", minutes, now, groups)
                    else:
                        o = lg.close_session(active.pop(pick % len(active)), now)
                        o = (o.status, o.charged_list_cents, o.charged_subsidy_cents)
                    got[slug] = o if o is None or isinstance(o, tuple) else outcome(o, slug)
                assert got["lab-r"] == got["lab-g"], (n, kind)
            r, g = lg.balance("lab-r", now), lg.balance("lab-g", now)
            assert (r.subsidy_held_cents, r.credit_used_cents) == (
                g.subsidy_held_cents,
                g.credit_used_cents,
            )
        finally:
            lg.dispose()


GROUPS = st.frozensets(st.sampled_from(("g-rowed", "g-grouped", "other")), max_size=3)
NOT_A_MEMBER = "ann is not a member of project grouped."


@settings(max_examples=50, deadline=None)
@given(
    holds=st.lists(
        st.tuples(
            st.sampled_from(("rowed", "plain", "grouped")),
            GROUPS,  # ann's groups at this hold
            GROUPS,  # and in the other ledger, for the projects she has a row in
            st.sampled_from(TYPES),
            st.integers(1, 3 * 60),
            st.integers(0, 60),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_changing_a_users_groups_changes_only_group_derived_membership(holds):
    with tempfile.TemporaryDirectory() as folder:
        a, b = fresh(folder, "a"), fresh(folder, "b")
        try:
            for lg in (a, b):
                # rowed names a group too, but ann's row (pi, her own cap) is what counts there
                project(lg, "rowed", grant=40_00, member_group="g-rowed", member_cap_cents=5_00)
                lg.add_member("staff", "rowed", "ann", T0, role="pi", cap_cents=25_00)
                project(lg, "plain", grant=40_00, max_concurrent_sessions=2)
                lg.add_member("staff", "plain", "ann", T0)
                project(lg, "grouped", grant=40_00, member_group="g-grouped")
            now = T0
            for n, (slug, groups, other, slice_type, minutes, wait) in enumerate(holds):
                now += wait * MINUTE
                a.meter(now)
                b.meter(now)
                in_a = hold(a, slug, "ann", f"s{n}", slice_type, minutes, now, groups)
                refused_as_stranger = isinstance(in_a, LedgerError) and str(in_a) == NOT_A_MEMBER
                if slug == "grouped":
                    assert refused_as_stranger == ("g-grouped" not in groups)
                    continue
                assert not refused_as_stranger
                in_b = hold(b, slug, "ann", f"s{n}", slice_type, minutes, now, other)
                assert outcome(in_a, slug) == outcome(in_b, slug), (n, slug)
        finally:
            a.dispose()
            b.dispose()
