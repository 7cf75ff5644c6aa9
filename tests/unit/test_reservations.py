"""Reservations are durable and atomic; reconcile after a crash frees exactly the orphans."""

import asyncio
import copy
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.common import clock
from slicehub.spawners.local.allocator import AllocationConflict, Allocator
from slicehub.spawners.local.manager import NoSliceFree, SliceManager, request_for
from slicehub.spawners.local.reservations import ReservationStore
from slicehub.spawners.site import parse_site

from .test_allocator_properties import SITE_RAW, check_invariants

SITE = parse_site(copy.deepcopy(SITE_RAW))
TYPES = sorted(SITE.slice_types)


def db_url(tmp_path, name="slices.sqlite"):
    return f"sqlite:///{tmp_path / name}"


def test_the_database_refuses_a_second_holder_of_a_device(tmp_path):
    store = ReservationStore(db_url(tmp_path))
    store.upgrade()
    alloc = Allocator(SITE.inventory())
    a = alloc.place(request_for(SITE.slice_types["h100.3g.40gb"]))
    store.add("alice/", a, clock.utcnow())
    with pytest.raises(AllocationConflict):
        store.add("bob/", a, clock.utcnow())  # same devices: refused by the primary key
    with pytest.raises(AllocationConflict):
        store.add("alice/", alloc.place(request_for(SITE.slice_types["cpu"])), clock.utcnow())
    assert [r.holder for r in store.all()] == ["alice/"]
    assert set(store.resources().values()) == {"alice/"}
    assert store.remove("alice/") and not store.remove("alice/")
    assert store.resources() == {}


def test_upgrade_is_idempotent(tmp_path):
    store = ReservationStore(db_url(tmp_path))
    store.upgrade()
    store.upgrade()
    assert store.all() == []


async def test_reservations_survive_a_restart(tmp_path):
    url = db_url(tmp_path)
    end = clock.utcnow() + timedelta(hours=1)
    m1 = SliceManager(SITE, url)
    a = await m1.reserve("alice/", SITE.slice_types["h100.3g.40gb"], end)
    b = await m1.reserve("bob/", SITE.slice_types["h100.3g.40gb"], end)
    assert a.devices != b.devices
    m1.close()
    m2 = SliceManager(SITE, url)  # a new hub process
    try:
        assert m2.adopt("alice/") == a and m2.adopt("bob/") == b
        stored = {r.holder: r for r in m2.store.all()}
        assert stored["alice/"].session_end == end.replace(microsecond=end.microsecond)
        check_invariants(m2.allocator)
        await m2.release("alice/")
        assert m2.adopt("alice/") is None and [r.holder for r in m2.store.all()] == ["bob/"]
    finally:
        m2.close()


async def test_a_full_type_is_refused_with_a_sentence(tmp_path):
    m = SliceManager(SITE, db_url(tmp_path))
    try:
        end = clock.utcnow() + timedelta(hours=1)
        req = request_for(SITE.slice_types["h100x2"])
        for i in range(m.allocator.capacity(req)):
            await m.reserve(f"u{i}/", SITE.slice_types["h100x2"], end)
        with pytest.raises(NoSliceFree, match="No h100x2 slice is free right now"):
            await m.reserve("late/", SITE.slice_types["h100x2"], end)
        assert "late/" not in {r.holder for r in m.store.all()}
    finally:
        m.close()


async def test_concurrent_reserves_never_share_a_device(tmp_path):
    m = SliceManager(SITE, db_url(tmp_path))
    try:
        end = clock.utcnow() + timedelta(hours=1)
        st_ = SITE.slice_types["h100.1g.10gb"]
        results = await asyncio.gather(
            *(m.reserve(f"s{i}/", st_, end) for i in range(30)), return_exceptions=True
        )
        got = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, NoSliceFree)]
        assert len(got) + len(refused) == 30
        assert len(got) == m.allocator.capacity(request_for(st_))
        devices = [d for a in got for d in a.devices]
        assert len(devices) == len(set(devices))
        assert len(m.store.all()) == len(got)
    finally:
        m.close()


@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(st.sampled_from(TYPES), min_size=1, max_size=25),
    alive=st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_reconcile_after_a_crash_frees_exactly_the_orphans(tmp_path_factory, names, alive):
    """A hub reserves, then crashes; on restart only some servers are still recorded as live.
    Reconcile must free the others, all of them, and nothing else."""
    url = db_url(tmp_path_factory.mktemp("rec"))

    async def scenario():
        end = clock.utcnow() + timedelta(hours=1)
        m1 = SliceManager(SITE, url)
        held = []
        for i, name in enumerate(names):
            try:
                await m1.reserve(f"u{i}/", SITE.slice_types[name], end)
                held.append(f"u{i}/")
            except NoSliceFree:
                pass
        m1.close()  # the crash: nothing released
        m2 = SliceManager(SITE, url)
        try:
            live = {h for h in held if alive[int(h[1:-1])]}
            freed = await m2.reconcile(live, grace=timedelta(0))
            assert set(freed) == set(held) - live
            assert set(m2.allocator.holders) == live
            assert {r.holder for r in m2.store.all()} == live
            assert set(m2.store.resources().values()) <= live
            check_invariants(m2.allocator)
        finally:
            m2.close()

    asyncio.run(scenario())


async def test_reconcile_spares_fresh_reservations(tmp_path):
    m = SliceManager(SITE, db_url(tmp_path))
    try:
        await m.reserve("starting/", SITE.slice_types["cpu"], clock.utcnow() + timedelta(hours=1))
        assert await m.reconcile(set(), grace=timedelta(minutes=2)) == []
        assert await m.reconcile(set(), grace=timedelta(0)) == ["starting/"]
    finally:
        m.close()
