"""A class window's capacity: on Slurm, the whole nodes its advance reservation takes and the
scontrol lines that make, change, show and remove it (slicehub/spawners/slurm/reservation.py);
on the local spawner, the slices its seats hold (slicehub/spawners/local/class_hold.py). A window
that cannot fit is refused with the numbers, and no hostile name reaches a command."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from slicehub.spawners.class_window import ClassWindowNeed, ClassWindowRefused
from slicehub.spawners.local.allocator import Allocator
from slicehub.spawners.local.class_hold import holder_name, plan_class_hold
from slicehub.spawners.local.manager import request_for
from slicehub.spawners.site import load_site, parse_site
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc
from slicehub.spawners.slurm import reservation as rv

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "slurm"
SLURM_SITE = load_site(REPO / "hub_config" / "slurm-site.toml")
START = datetime(2031, 1, 6, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
HOSTILE = [
    "comp5329; rm -rf /",
    "a b",
    "$(id)",
    "`id`",
    "x\n--flags=maint",
    "-users",
    "Comp5329",
    "c\u202e",
    "x,y",
    "x=y",
    "../etc",
    "",
    "a" * 64,
]


def need(seats: int, slice_type: str = "h100.1g.10gb", *, course="comp5329", window=7, site=None):
    site = site or SLURM_SITE
    return ClassWindowNeed(course, window, START, END, site.slice_types[slice_type], seats)


def node(
    name: str, ones: int, *, cpus=32, memory=128000, state="idle", parts=("gpu",)
) -> sa.NodeResources:
    """A node with `ones` 1g.10gb slices (and CPUs and memory to spare unless told)."""
    return sa.NodeResources(
        name, "127.0.0.1", frozenset(parts), state, cpus, cpus, memory, 0, {"1g.10gb": ones}, {}
    )


def nodes(*items: sa.NodeResources) -> dict[str, sa.NodeResources]:
    return {n.name: n for n in items}


TWO_NODES = sa.parse_sinfo_nodes((FIXTURES / "sinfo-nodes-two.txt").read_text())
ONE_G = SLURM_SITE.slurm.slice_types["h100.1g.10gb"]


def shown(name: str, nodes_: tuple[str, ...], start: datetime, end: datetime):
    return rv.ShownReservation(
        name,
        start.astimezone().replace(tzinfo=None),
        end.astimezone().replace(tzinfo=None),
        nodes_,
        ("root",),
        (),
        frozenset({"IGNORE_JOBS"}),
        "INACTIVE",
        "cpu=32",
    )


# ---- the window itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"course": "Comp 5329"}, "is not a project id"),
        ({"course": "x;rm"}, "is not a project id"),
        ({"window_id": 0}, "class window id 0"),
        ({"window_id": True}, "class window id True"),
        ({"seats": 0}, "seats 0"),
        ({"seats": 10_001}, "seats 10001"),
        ({"starts_at": datetime(2031, 1, 6, 9)}, "with its time zone"),
        ({"ends_at": START}, "ends"),
    ],
)
def test_a_window_that_makes_no_sense_is_refused(changes, says):
    fields = dict(
        course="comp5329",
        window_id=7,
        starts_at=START,
        ends_at=END,
        slice_type=SLURM_SITE.slice_types["h100.1g.10gb"],
        seats=3,
    )
    with pytest.raises(ValueError, match=says):
        ClassWindowNeed(**{**fields, **changes})


# ---- Slurm: which nodes ----------------------------------------------------------------------


def test_the_test_clusters_two_nodes_hold_20_seats_each():
    plan = rv.plan_reservation(need(20), ONE_G, TWO_NODES)
    assert plan == rv.ReservationPlan("slicehub-comp5329-7", ("n1",), {"n1": 20}, 20)
    plan = rv.plan_reservation(need(21), ONE_G, TWO_NODES)
    assert (plan.nodes, plan.capacity) == (("n1", "n2"), 40)


def test_a_window_too_big_is_refused_with_the_numbers():
    with pytest.raises(ClassWindowRefused) as refused:
        rv.plan_reservation(need(60), ONE_G, TWO_NODES)
    assert str(refused.value) == (
        "The class window needs 60 h100.1g.10gb slices; the cluster has 40 in all "
        "(20 on n1, 20 on n2)."
    )
    assert (refused.value.needed, refused.value.available) == (60, 40)


def test_the_fewest_nodes_then_the_smallest_that_completes_the_seats():
    cluster = nodes(node("n1", 8), node("n2", 20), node("n3", 14), node("n10", 20), node("n4", 6))
    # 20 + 20 are the two biggest; 26 seats: one 20, then the smallest that holds the other 6
    assert rv.plan_reservation(need(26), ONE_G, cluster).nodes == ("n2", "n4")
    assert rv.plan_reservation(need(27), ONE_G, cluster).nodes == ("n1", "n2")
    assert rv.plan_reservation(need(20), ONE_G, cluster).nodes == ("n2",)  # n2 before n10
    assert rv.plan_reservation(need(41), ONE_G, cluster).nodes == ("n2", "n4", "n10")
    assert rv.plan_reservation(need(5), ONE_G, cluster).nodes == ("n4",)
    # the same answer whatever order sinfo listed the nodes in
    backwards = dict(reversed(list(cluster.items())))
    for seats in range(1, 69):
        assert rv.plan_reservation(need(seats), ONE_G, backwards) == rv.plan_reservation(
            need(seats), ONE_G, cluster
        )


def test_the_fewest_nodes_is_the_minimum_for_every_seat_count():
    counts = {"a1": 7, "a2": 3, "a3": 11, "a4": 11, "a5": 2, "a6": 5}
    cluster = nodes(*(node(n, c) for n, c in counts.items()))
    for seats in range(1, sum(counts.values()) + 1):
        plan = rv.plan_reservation(need(seats), ONE_G, cluster)
        assert plan.capacity >= seats
        biggest = sorted(counts.values(), reverse=True)
        fewest = next(k for k in range(1, 7) if sum(biggest[:k]) >= seats)
        assert len(plan.nodes) == fewest, (seats, plan)


def test_cpus_and_memory_bound_a_node_as_well_as_its_slices():
    cluster = nodes(node("n1", 20, cpus=8), node("n2", 20, memory=40000))
    # 1 CPU and 4 GiB each: n1 holds 8 (its CPUs), n2 holds 9 (its memory)
    with pytest.raises(ClassWindowRefused, match=r"has 17 in all \(8 on n1, 9 on n2\)"):
        rv.plan_reservation(need(18), ONE_G, cluster)


def test_only_nodes_of_the_slice_types_partition_count():
    cluster = nodes(node("n1", 20), node("c1", 20, parts=("cpu",)))
    with pytest.raises(ClassWindowRefused, match=r"has 20 in all \(20 on n1\)\.$"):
        rv.plan_reservation(need(21), ONE_G, cluster)
    with pytest.raises(ClassWindowRefused, match=r"the cluster has none\.$"):
        rv.plan_reservation(need(1, "h100x1"), SLURM_SITE.slurm.slice_types["h100x1"], cluster)


def test_down_or_drained_nodes_and_overlapping_reservations_are_left_out():
    cluster = nodes(node("n1", 20), node("n2", 20, state="drained"), node("n3", 20))
    other = shown("slicehub-ml-3", ("n3",), START + timedelta(hours=1), END + timedelta(hours=1))
    with pytest.raises(ClassWindowRefused) as refused:
        rv.plan_reservation(need(21), ONE_G, cluster, [other])
    assert str(refused.value) == (
        "The class window needs 21 h100.1g.10gb slices; the cluster has 60 in all (20 on n1, "
        "20 on n2, 20 on n3), of which 40 are on nodes it cannot have then (n2: drained; "
        "n3: in reservation slicehub-ml-3)."
    )
    assert refused.value.available == 20
    # a reservation that ends when the window starts does not overlap it
    before = shown("slicehub-ml-3", ("n3",), START - timedelta(hours=1), START)
    assert rv.plan_reservation(need(21), ONE_G, cluster, [before]).nodes == ("n1", "n3")
    # the window's own reservation does not stand in its way (an update)
    own = shown("slicehub-comp5329-7", ("n3",), START, END)
    assert rv.plan_reservation(need(21), ONE_G, cluster, [own]).nodes == ("n1", "n3")


def test_a_refusal_on_a_big_cluster_names_a_few_nodes_and_counts_the_rest():
    cluster = nodes(*(node(f"gpu{i:02d}", 14) for i in range(1, 41)))
    with pytest.raises(ClassWindowRefused) as refused:
        rv.plan_reservation(need(600), ONE_G, cluster)
    assert str(refused.value) == (
        "The class window needs 600 h100.1g.10gb slices; the cluster has 560 in all (14 on "
        "gpu01, 14 on gpu02, 14 on gpu03, 14 on gpu04, 14 on gpu05, 14 on gpu06, 14 on gpu07, "
        "14 on gpu08 and 448 on 32 other nodes)."
    )
    assert len(rv.plan_reservation(need(559), ONE_G, cluster).nodes) == 40


# ---- Slurm: names and argv -------------------------------------------------------------------


def test_the_reservation_name_comes_from_the_course_and_window_and_back():
    assert rv.reservation_name("comp5329", 7) == "slicehub-comp5329-7"
    assert rv.window_of("slicehub-comp5329-7") == ("comp5329", 7)
    assert rv.window_of("slicehub-ml-basics-12") == ("ml-basics", 12)
    for other in (
        "maint-2031",
        "slicehub-comp5329",
        "slicehub--7",
        "slicehub-x-07",
        "slicehub-X-1",
    ):
        assert rv.window_of(other) is None


@pytest.mark.parametrize("course", HOSTILE)
def test_a_hostile_course_never_becomes_a_reservation_name(course):
    with pytest.raises(ValueError, match="is not allowed in a reservation name"):
        rv.reservation_name(course, 7)
    with pytest.raises(ValueError, match="is not a project id"):
        ClassWindowNeed(course, 7, START, END, SLURM_SITE.slice_types["cpu"], 1)


@pytest.mark.parametrize("window", [0, -1, True, "7", 7.0, 10**10, None])
def test_a_window_id_must_be_a_positive_whole_number(window):
    with pytest.raises(ValueError, match="class window id"):
        rv.reservation_name("comp5329", window)


def test_create_argv():
    argv = rv.create_reservation_argv(
        "slicehub-comp5329-7",
        starts_at=START,
        ends_at=END,
        nodes=["n1", "n2"],
        users=["alice", "bob", "alice"],
        executable="/usr/bin/scontrol",
    )
    local = START.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    assert argv == [
        "/usr/bin/scontrol",
        "create",
        "reservation",
        "reservationname=slicehub-comp5329-7",
        f"starttime={local}",
        f"endtime={END.astimezone().strftime('%Y-%m-%dT%H:%M:%S')}",
        "nodes=n1,n2",
        "users=alice,bob",
        "flags=IGNORE_JOBS",
    ]
    argv = rv.create_reservation_argv(
        "slicehub-comp5329-7",
        starts_at=START,
        ends_at=END,
        nodes=["n1"],
        accounts=["class-101"],
        flags=["IGNORE_JOBS", "MAGNETIC"],
    )
    assert argv[-2:] == ["accounts=class-101", "flags=IGNORE_JOBS,MAGNETIC"]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"name": "maint-2031"}, "is not one of Slicehub's"),
        ({"name": "slicehub-comp5329-7 flags=maint"}, "is not one of Slicehub's"),
        ({"users": [], "accounts": []}, "give the users or the accounts"),
        ({"nodes": []}, "nodes: give at least one"),
        ({"nodes": "n1"}, "give a list of names"),
        ({"nodes": ["n1,n2"]}, "node 'n1,n2' is not allowed"),
        ({"nodes": ["n[1-2]"]}, "is not allowed"),
        ({"users": ["-alice"]}, "user '-alice' is not allowed"),
        ({"users": ["alice bob"]}, "is not allowed"),
        ({"users": ["alice\nflags=maint"]}, "is not allowed"),
        ({"accounts": ["Class 101"]}, "account 'Class 101' is not allowed"),
        ({"flags": ["MAINT"]}, "flag 'MAINT' is not allowed: use IGNORE_JOBS, MAGNETIC"),
        ({"flags": "IGNORE_JOBS"}, "give a list of flags"),
        ({"starts_at": datetime(2031, 1, 6, 9)}, "give a datetime with its time zone"),
        ({"ends_at": START}, "its end must come after its start"),
        ({"executable": "scontrol; id"}, "executable"),
    ],
)
def test_create_argv_refuses_what_slurm_must_not_see(changes, says):
    fields = dict(
        name="slicehub-comp5329-7", starts_at=START, ends_at=END, nodes=["n1"], users=["alice"]
    )
    fields.update(changes)
    name = fields.pop("name")
    with pytest.raises(ValueError, match=says):
        rv.create_reservation_argv(name, **fields)


@pytest.mark.parametrize(
    "user", [h for h in HOSTILE if h not in ("Comp5329", "a" * 64)] + ["a" * 65]
)
def test_no_hostile_user_reaches_scontrol(user):
    with pytest.raises(ValueError):
        rv.update_reservation_argv("slicehub-comp5329-7", users=["alice", user])


def test_update_delete_and_show_argv():
    later = END + timedelta(minutes=30)
    assert rv.update_reservation_argv(
        "slicehub-comp5329-7", ends_at=later, nodes=["n2"], users=["alice"]
    ) == [
        "scontrol",
        "update",
        "reservationname=slicehub-comp5329-7",
        f"endtime={later.astimezone().strftime('%Y-%m-%dT%H:%M:%S')}",
        "nodes=n2",
        "users=alice",
    ]
    assert rv.delete_reservation_argv("slicehub-comp5329-7") == [
        "scontrol",
        "delete",
        "reservationname=slicehub-comp5329-7",
    ]
    assert rv.show_reservations_argv() == ["scontrol", "--oneliner", "show", "reservation"]
    with pytest.raises(ValueError, match="give new times, nodes or users"):
        rv.update_reservation_argv("slicehub-comp5329-7")
    with pytest.raises(ValueError, match="its end must come after its start"):
        rv.update_reservation_argv("slicehub-comp5329-7", starts_at=END, ends_at=START)
    with pytest.raises(ValueError, match="is not one of Slicehub's"):
        rv.delete_reservation_argv("maint-2031")


def test_a_class_job_asks_for_its_reservation():
    def job(reservation: str) -> list[str]:
        return sc.sbatch_argv(
            job_name="slicehub-12-alice",
            partition="gpu",
            cpus=1,
            mem_mb=4096,
            time_minutes=60,
            output="/tmp/x-%j.log",
            chdir="/tmp",
            gres=[("1g.10gb", 1)],
            reservation=reservation,
        )

    assert "--reservation=slicehub-comp5329-7" in job("slicehub-comp5329-7")
    for bad in ("a b", "-x", "x;id", "", "x\n#SBATCH"):
        with pytest.raises(ValueError, match="reservation"):
            job(bad)


# ---- Slurm: what scontrol says ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["scontrol-reservations.txt", "scontrol-reservations-oneliner.txt"]
)
def test_parse_the_recorded_reservations(fixture):
    first, second = rv.parse_reservations((FIXTURES / fixture).read_text())
    assert first == rv.ShownReservation(
        name="slicehub-comp5329-7",
        start=datetime(2031, 1, 6, 9, 0),
        end=datetime(2031, 1, 6, 11, 0),
        nodes=("n1",),
        users=("root",),
        accounts=(),
        flags=frozenset({"IGNORE_JOBS", "SPEC_NODES"}),
        state="INACTIVE",
        tres="cpu=32",
    )
    assert first.window == ("comp5329", 7)
    assert second.name == "slicehub-ml-basics-12"
    assert second.nodes == ("n1", "n2")  # printed as n[1-2]
    assert second.users == ("root", "slicehub-t2")
    assert second.accounts == ("demo-lab",)
    assert second.flags == {"IGNORE_JOBS", "SPEC_NODES", "MAGNETIC"}
    assert (second.start, second.end) == (datetime(2031, 1, 7, 9), datetime(2031, 1, 7, 10, 30))


def test_no_reservations_and_output_that_is_not_one():
    assert rv.parse_reservations("No reservations in the system\n") == []
    assert rv.parse_reservations("") == []
    with pytest.raises(ValueError, match="printed no reservation"):
        rv.parse_reservations("Reservation slicehub-nope not found\n")
    with pytest.raises(ValueError, match="has no EndTime, Nodes"):
        rv.parse_reservations("ReservationName=x StartTime=2031-01-06T09:00:00\n")


def test_overlap_is_read_in_the_controllers_local_time():
    (first, _) = rv.parse_reservations((FIXTURES / "scontrol-reservations.txt").read_text())
    start = first.start.astimezone()  # naive local -> aware
    assert first.overlaps(start + timedelta(hours=1), start + timedelta(hours=3))
    assert not first.overlaps(start + timedelta(hours=2), start + timedelta(hours=3))
    assert not first.overlaps(start - timedelta(hours=1), start)


def test_hostlists():
    assert rv.expand_hostlist("n[1-2],gpu[08-10,12],login") == (
        "n1",
        "n2",
        "gpu08",
        "gpu09",
        "gpu10",
        "gpu12",
        "login",
    )
    assert rv.expand_hostlist("(null)") == ()
    for bad in ("n[1-2", "n]1", "n[a-b]", "r[1-2]n[1-2]", "n,,m", "-n"):
        with pytest.raises(ValueError, match="could not be read"):
            rv.expand_hostlist(bad)


# scontrol's own words, recorded on the test cluster (slurm-wlm 22.05.8, accounting enforced)
@pytest.mark.parametrize(
    ("action", "output", "sentence"),
    [
        (
            "create",
            "Error creating the reservation: Requested reservation overlaps with another "
            "reservation\n",
            "its nodes are in another reservation at that time; plan the window again with "
            "the reservations Slurm has now.",
        ),
        (
            "create",
            "Error creating the reservation: Duplicate reservation name\n",
            "Slurm already has a reservation named slicehub-comp5329-7.",
        ),
        (
            "create",
            "Error creating the reservation: Invalid node name specified\n",
            "Slurm does not know one of its nodes.",
        ),
        (
            "create",
            "Error creating the reservation: Invalid user id\n",
            "one of its users is not a user on the cluster.",
        ),
        (
            "create",
            "Error creating the reservation: Invalid account or account/partition combination "
            "specified\n",
            "one of its users or accounts has no Slurm association (sacctmgr add user).",
        ),
        (
            "create",
            "scontrol: error: Start time cannot be after end time.  No reservation created.\n",
            "its end comes before its start.",
        ),
        (
            "create",
            "scontrol: error: TRES type 'gres/gpu:1g.10gb' not supported with reservations\n",
            "this Slurm cannot reserve GPU counts (22.05 and older): reserve whole nodes.",
        ),
        (
            "update",
            "Error updating the reservation: Requested reservation is invalid\n"
            "slurm_update error: Requested reservation is invalid\n",
            "Slurm has no reservation named slicehub-comp5329-7.",
        ),
        (
            "update",
            "Error updating the reservation: Invalid time specified\n"
            "slurm_update error: Invalid time specified\n",
            "its times are not valid (a start in the past, or after the end).",
        ),
        (
            "delete",
            "delete_reservation reservationname=slicehub-comp5329-7: Requested reservation is "
            "invalid\n",
            "Slurm has no reservation named slicehub-comp5329-7.",
        ),
        (
            "delete",
            "delete_reservation reservationname=slicehub-comp5329-7: Requested reservation is "
            "in use\n",
            "jobs run in it; cancel them (or let them end) first.",
        ),
        (
            "show",
            "Reservation slicehub-comp5329-7 not found\n",
            "Slurm has no reservation named slicehub-comp5329-7.",
        ),
        ("delete", "something new\n  from Slurm.", "something new from Slurm."),
        ("delete", "", "no output."),
    ],
)
def test_scontrols_refusals_become_sentences(action, output, sentence):
    said = rv.scontrol_refusal(action, "slicehub-comp5329-7", output)
    assert said == f"Slurm refused to {action} reservation slicehub-comp5329-7: {sentence}"


# ---- the local spawner -----------------------------------------------------------------------

LOCAL_RAW = {
    "site": {"name": "class"},
    "nodes": [
        {
            "name": "n1",
            "cpus": 32,
            "memory": "256G",
            "gpus": [
                {"model": "H100-80GB", "mig": "dynamic"},
                {"model": "H100-80GB", "mig": ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]},
            ],
        },
        {
            "name": "n2",
            "cpus": 8,
            "memory": "64G",
            "gpus": [{"model": "H100-80GB", "mig": "dynamic"}],
        },
        {"name": "cpu1", "cpus": 8, "memory": "32G"},
    ],
    "slice_types": {
        "h100.1g.10gb": {"cpus": 1, "memory": "4G", "price_per_hour": "5"},
        "h100.3g.40gb": {"cpus": 4, "memory": "32G", "price_per_hour": "15"},
    },
}
LOCAL = parse_site(copy.deepcopy(LOCAL_RAW))
INVENTORY = LOCAL.inventory()


def test_a_class_holds_the_slices_the_allocator_would_give_its_students():
    hold = plan_class_hold(need(9, site=LOCAL), INVENTORY)
    assert [h for h, _ in hold.seats] == [holder_name("comp5329", 7, s) for s in range(1, 10)]
    assert hold.seats[0][0] == "class:comp5329:7:1"
    # the same places, one by one, as nine starts on the live allocator
    live = Allocator(INVENTORY)
    request = request_for(LOCAL.slice_types["h100.1g.10gb"])
    for holder, assignment in hold.seats:
        assert live.place(request) == assignment
        live.hold(holder, assignment)
    assert hold.per_node == {"n1": 9}  # the static GPU's two 1g, then the dynamic one's seven


def test_a_class_too_big_for_the_site_is_refused_with_the_numbers():
    # 1g.10gb: n1 has 7 + 2, n2 has 7 but only 8 CPUs -> 7; cpu1 has no GPU
    with pytest.raises(ClassWindowRefused) as refused:
        plan_class_hold(need(17, site=LOCAL), INVENTORY)
    assert str(refused.value) == (
        "The class window needs 17 h100.1g.10gb slices; the site has 16 in all (9 on n1, 7 on n2)."
    )
    assert plan_class_hold(need(16, site=LOCAL), INVENTORY).per_node == {"n1": 9, "n2": 7}


def test_what_others_hold_then_is_counted_and_said():
    other = plan_class_hold(need(10, site=LOCAL, course="ml-basics", window=3), INVENTORY)
    with pytest.raises(ClassWindowRefused) as refused:
        plan_class_hold(need(7, site=LOCAL), INVENTORY, other.seats)
    assert str(refused.value) == (
        "The class window needs 7 h100.1g.10gb slices; the site has 16 in all "
        "(9 on n1, 7 on n2), of which 10 are held by others at that time."
    )
    assert refused.value.available == 6
    both = plan_class_hold(need(6, site=LOCAL), INVENTORY, other.seats)
    held = {r for _, a in other.seats for r in a.resources()}
    assert not held & {r for _, a in both.seats for r in a.resources()}


def test_a_bigger_slice_type_goes_where_the_allocator_puts_it():
    three_g = replace(need(3, site=LOCAL), slice_type=LOCAL.slice_types["h100.3g.40gb"])
    hold = plan_class_hold(three_g, INVENTORY)
    assert [a.placement.profile for _, a in hold.seats] == ["3g.40gb"] * 3
    # n1: the static GPU's 3g and two on the dynamic one; n2: two (its 8 CPUs allow two)
    with pytest.raises(ClassWindowRefused) as refused:
        plan_class_hold(replace(three_g, seats=6), INVENTORY)
    assert str(refused.value) == (
        "The class window needs 6 h100.3g.40gb slices; the site has 5 in all (3 on n1, 2 on n2)."
    )


# ---- which reservation a class job runs in ---------------------------------------------------


def test_a_class_job_runs_in_its_courses_reservation_in_force_for_its_user_or_account():
    now = datetime(2026, 12, 3, 9, 5, tzinfo=UTC)
    hour = timedelta(hours=1)

    def res(name, start, end, users=(), accounts=()):
        r = shown(name, ("n1",), start, end)
        return replace(r, users=tuple(users), accounts=tuple(accounts))

    found = [
        res("maintenance", now - hour, now + hour, users=["stu1"]),  # not Slicehub's
        res("slicehub-ml101-3", now - hour, now - hour / 2, users=["stu1"]),  # over
        res("slicehub-ml101-4", now + hour, now + 2 * hour, users=["stu1"]),  # later
        res("slicehub-cv200-5", now - hour, now + hour, users=["stu1"]),  # another course
        res("slicehub-ml101-6", now - hour, now + hour, users=["stu2"], accounts=["ml101"]),
        res("slicehub-ml101-7", now - hour / 4, now + hour, users=["stu1"]),
    ]
    assert rv.reservation_for(found, "ml101", "stu1", None, now) == "slicehub-ml101-7"
    assert rv.reservation_for(found, "ml101", "stu1", "ml101", now) == "slicehub-ml101-6"
    assert rv.reservation_for(found, "ml101", "stu1", None, now, window_id=6) is None
    assert rv.reservation_for(found, "ml101", "stu9", None, now) is None
    assert rv.reservation_for(found, "ai-lab", "stu1", "ai-lab", now) is None
    assert rv.reservation_for([], "ml101", "stu1", None, now) is None
