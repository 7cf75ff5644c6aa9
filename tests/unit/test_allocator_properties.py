"""Property tests of the allocator: random starts and stops on a mixed inventory.

Invariants checked after every step:
- never two holders of one device: the resources of all live assignments are disjoint;
- never a layout NVIDIA's placement table forbids, on any GPU;
- node CPUs and memory never over-committed;
- a refused request really had nowhere to go (free_count is 0 for it);
- releasing restores exactly the capacity there was before the hold.
"""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from slicehub.common.catalogue import gpu_model, layout_is_valid
from slicehub.spawners.local import inventory as inv
from slicehub.spawners.local.allocator import AllocationConflict, Allocator, FirstFitAllocator
from slicehub.spawners.local.manager import request_for
from slicehub.spawners.site import parse_site

SITE_RAW = {
    "site": {"name": "prop"},
    "nodes": [
        {
            "name": "n1",
            "cpus": 40,
            "memory": "400G",
            "gpus": [
                {"model": "H100-80GB", "mig": "dynamic"},
                {"model": "H100-80GB", "mig": "dynamic"},
                {"model": "H100-80GB", "mig": ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]},
                {"model": "H100-80GB"},
            ],
        },
        {
            "name": "n2",
            "cpus": 24,
            "memory": "200G",
            "gpus": [
                {"model": "H100-80GB"},
                {"model": "H100-80GB"},
                {"model": "A100-80GB", "mig": "dynamic"},
            ],
        },
        {"name": "cpu1", "cpus": 8, "memory": "32G"},
    ],
    "slice_types": {
        "h100.1g.10gb": {"cpus": 2, "memory": "16G", "price_per_hour": "5"},
        "h100.1g.10gb+me": {"cpus": 2, "memory": "16G", "price_per_hour": "5"},
        "h100.2g.20gb": {"cpus": 3, "memory": "24G", "price_per_hour": "10"},
        "h100.3g.40gb": {"cpus": 4, "memory": "48G", "price_per_hour": "15"},
        "h100.4g.40gb": {"cpus": 4, "memory": "48G", "price_per_hour": "20"},
        "h100.7g.80gb": {"cpus": 8, "memory": "96G", "price_per_hour": "35"},
        "h100x1": {"cpus": 8, "memory": "64G", "price_per_hour": "38"},
        "h100x2": {"cpus": 12, "memory": "128G", "price_per_hour": "76"},
        "a100.3g.40gb": {"cpus": 4, "memory": "32G", "price_per_hour": "10"},
        "cpu": {"cpus": 2, "memory": "8G", "price_per_hour": "1"},
    },
}
SITE = parse_site(copy.deepcopy(SITE_RAW))
TYPES = sorted(SITE.slice_types)


def check_invariants(alloc: Allocator) -> None:
    seen: dict[str, str] = {}
    for holder, a in alloc.holders.items():
        for r in a.resources():
            assert r not in seen, f"{r} held by {seen[r]} and {holder}"
            seen[r] = holder
    for g in alloc.inventory.gpus:
        if g.mig != inv.MIG_NONE:
            assert layout_is_valid(gpu_model(g.model), alloc.mig_layout(g.uuid))
    for node in alloc.inventory.nodes:
        held = [a for a in alloc.holders.values() if a.node == node.name]
        assert sum(len(a.cpu_ids) for a in held) <= node.cpus
        assert sum(a.memory_bytes for a in held) <= node.memory_bytes
        for a in held:
            assert set(a.cpu_ids) <= set(node.cpu_ids)
        # the allocator's running count of idle GPU compute matches what is held
        used = sum(
            gpu_model(alloc.gpu(a.gpus[0]).model).profile(a.placement.profile).compute_slices
            if a.placement
            else 7 * len(a.gpus)
            for a in held
        )
        assert alloc._nodes[node.name].idle_sevenths == 7 * len(node.gpus) - used


class AllocatorMachine(RuleBasedStateMachine):
    allocator_class = Allocator

    def __init__(self):
        super().__init__()
        self.alloc = self.allocator_class(SITE.inventory())
        self.n = 0

    @rule(name=st.sampled_from(TYPES))
    def start(self, name):
        req = request_for(SITE.slice_types[name])
        free_before = self.alloc.free_count(req)
        a = self.alloc.place(req)
        if a is None:
            assert free_before == 0, f"{name} refused while free_count said {free_before}"
            return
        assert free_before >= 1
        self.n += 1
        self.alloc.hold(f"u{self.n}", a)
        assert a.slice_type == name
        if SITE.slice_types[name].shape.kind == "mig":
            assert len(a.devices) == 1 and a.devices[0].startswith("MIG-")
        if SITE.slice_types[name].shape.kind == "cpu":
            assert a.devices == ()

    @precondition(lambda self: self.alloc.holders)
    @rule(data=st.data())
    def stop(self, data):
        holder = data.draw(st.sampled_from(sorted(self.alloc.holders)))
        self.alloc.release(holder)

    @precondition(lambda self: self.alloc.holders)
    @rule(data=st.data(), name=st.sampled_from(TYPES))
    def hold_then_release_restores_capacity(self, data, name):
        reqs = [request_for(t) for t in SITE.slice_types.values()]
        before = [self.alloc.free_count(r) for r in reqs]
        a = self.alloc.place(request_for(SITE.slice_types[name]))
        if a is None:
            return
        self.alloc.hold("probe", a)
        self.alloc.release("probe")
        assert [self.alloc.free_count(r) for r in reqs] == before

    @precondition(lambda self: self.alloc.holders)
    @rule(data=st.data())
    def double_hold_is_refused(self, data):
        holder = data.draw(st.sampled_from(sorted(self.alloc.holders)))
        a = self.alloc.holders[holder]
        try:
            self.alloc.hold("intruder", a)
        except AllocationConflict:
            pass
        else:
            raise AssertionError("the same devices were handed out twice")

    @invariant()
    def invariants(self):
        check_invariants(self.alloc)


class FirstFitMachine(AllocatorMachine):
    allocator_class = FirstFitAllocator


TestAllocator = AllocatorMachine.TestCase
TestAllocator.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestFirstFit = FirstFitMachine.TestCase
TestFirstFit.settings = settings(max_examples=40, stateful_step_count=60, deadline=None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TYPES), max_size=40))
def test_release_everything_restores_full_capacity(names):
    alloc = Allocator(SITE.inventory())
    reqs = [request_for(t) for t in SITE.slice_types.values()]
    empty = [alloc.free_count(r) for r in reqs]
    assert empty == [alloc.capacity(r) for r in reqs]
    for i, name in enumerate(names):
        a = alloc.place(request_for(SITE.slice_types[name]))
        if a is not None:
            alloc.hold(f"h{i}", a)
    check_invariants(alloc)
    for holder in list(alloc.holders):
        alloc.release(holder)
    assert [alloc.free_count(r) for r in reqs] == empty


def test_small_slices_keep_an_empty_gpu_for_a_7g():
    """Fragmentation-aware: six 1g slices go where a 7g was impossible already."""
    alloc = Allocator(SITE.inventory())
    seven = request_for(SITE.slice_types["h100.7g.80gb"])
    one = request_for(SITE.slice_types["h100.1g.10gb"])
    for i in range(6):
        alloc.hold(f"s{i}", alloc.place(one))
    assert alloc.free_count(seven) == 1
    first_fit = FirstFitAllocator(SITE.inventory())
    for i in range(6):
        first_fit.hold(f"s{i}", first_fit.place(one))
    assert first_fit.free_count(seven) <= alloc.free_count(seven)


def test_whole_gpus_go_to_the_fullest_node_that_fits():
    alloc = Allocator(SITE.inventory())
    a = alloc.place(request_for(SITE.slice_types["h100x1"]))
    assert a.node == "n1"  # n1 has one whole H100, n2 has two: keep n2's pair for an x2
    alloc.hold("a", a)
    assert alloc.free_count(request_for(SITE.slice_types["h100x2"])) == 1


def test_cpu_slices_prefer_nodes_without_gpus():
    alloc = Allocator(SITE.inventory())
    assert alloc.place(request_for(SITE.slice_types["cpu"])).node == "cpu1"


def test_cpu_sessions_do_not_strand_a_gpu():
    """Two GPU nodes: CPU-only sessions spread so both GPUs keep the CPUs a 7g needs."""
    raw = {
        "site": {"name": "strand"},
        "nodes": [
            {
                "name": n,
                "cpus": 24,
                "memory": "256G",
                "gpus": [{"model": "H100-80GB", "mig": "dynamic"}],
            }
            for n in ("a", "b")
        ],
        "slice_types": {
            "h100.7g.80gb": {"cpus": 14, "memory": "64G", "price_per_hour": "35"},
            "cpu": {"cpus": 4, "memory": "8G", "price_per_hour": "1"},
        },
    }
    site = parse_site(raw)
    alloc = Allocator(site.inventory())
    for i in range(3):
        alloc.hold(f"c{i}", alloc.place(request_for(site.slice_types["cpu"])))
    assert alloc.free_count(request_for(site.slice_types["h100.7g.80gb"])) == 2
