"""The allocator at centre scale: decision time and packing quality on a simulated week.

What it measures. One seeded request trace (a discrete-event simulation of one week at a GPU
centre: classroom bursts of 1g.10gb slices, Poisson research requests for MIG slices and whole
GPUs, CPU-only sessions) is replayed on three admission policies over the same fleet:

1. `slicehub.spawners.local.allocator.Allocator` (best fit, fragmentation-aware): what Slicehub
serves with; 2. `slicehub.spawners.local.allocator.FirstFitAllocator`: the baseline (first GPU in
inventory order, lowest
   start), every decision timed;
3. a *fluid* reference: a request is admitted when the fleet's totals (MIG sevenths, whole GPUs,
   CPUs, memory) still have room for it, as if any request could be split across any GPUs and
   nodes. No real allocator can do that; it is an upper bound in practice, not a theorem (an
   allocator that refuses one request may, by luck, keep room for a longer one later).

Each arrival calls `place(req)`; None is a refusal, otherwise `hold`; each departure `release`.
Reported: wall time of `place()` alone per request (p50/p99/max, also by slice kind), of `hold`
and of `release`; accepted GPU-hours (MIG slices count in sevenths of a GPU), utilisation
(accepted GPU-hours / fleet GPU-hours), refusals by slice type, and, at the moment of peak
offered load, how fragmented each allocator has left the MIG GPUs.

What it does not measure: the hub, the reservation database, the options form and its
`free_count` calls, NVML or real MIG reconfiguration (creating an instance takes seconds on
hardware); queueing (a refused request is gone, it does not retry); static MIG layouts; any
GPU model but the H100-80GB. Timings include the interpreter's garbage collection.

    .venv/bin/python bench/allocator_scale.py [--seed 1] [--dynamic-gpus 2600 --whole-gpus 400]
        [--node-cpus 128] [--days 7] [--load 1.0] [--write]

The same seed gives the same trace and the same decisions (ties break in inventory order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _common import cpu_model, publish, usable_cores

from slicehub.common.catalogue import COMPUTE_SLICES, gpu_model, maximal_fits
from slicehub.spawners.local.allocator import Allocator, FirstFitAllocator
from slicehub.spawners.local.inventory import MIG_DYNAMIC, MIG_NONE
from slicehub.spawners.local.manager import request_for
from slicehub.spawners.site import Site, parse_site

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "allocator_scale.md"
GOAL_P99_PLACE_US = 1000.0
MODEL = "H100-80GB"
GPUS_PER_NODE = 8
HOUR = 3600.0
GIB = 1024**3

# Slice types offered: (CPUs, memory, HK$ list price per hour). Two CPUs and 16 GiB per seventh
# of a GPU, 14 CPUs and 240 GiB per whole GPU: eight whole GPUs need 112 of a node's CPUs.
SLICE_TYPES = {
    "h100.1g.10gb": (2, "16G", "5.50"),
    "h100.2g.20gb": (4, "32G", "11.00"),
    "h100.3g.40gb": (6, "64G", "16.50"),
    "h100.4g.40gb": (8, "64G", "22.00"),
    "h100.7g.80gb": (14, "240G", "38.50"),
    "h100x1": (14, "240G", "38.50"),
    "h100x2": (28, "480G", "77.00"),
    "h100x4": (56, "960G", "154.00"),
    "h100x8": (112, "1920G", "308.00"),
    "cpu": (4, "32G", "0.80"),
}

# Research streams: Poisson arrivals at this rate per hour at the weekday peak (scaled by
# --load and by the hour of the week), with this mix of slice types; durations 1-12 h.
RESEARCH_STREAMS = {
    "mig": (
        780.0,
        {"h100.3g.40gb": 0.35, "h100.2g.20gb": 0.25, "h100.4g.40gb": 0.15, "h100.7g.80gb": 0.25},
    ),
    "whole": (26.0, {"h100x1": 0.5, "h100x2": 0.25, "h100x4": 0.15, "h100x8": 0.10}),
    "cpu": (40.0, {"cpu": 1.0}),
}
RESEARCH_HOURS = (1.0, 12.0)
# Classes: on weekdays, at each of these hours a random number of classes start; each class's
# students all arrive within one minute and stay for the class (1-3 h, +-5 min each).
CLASS_SLOTS_H = (9.0, 10.5, 12.0, 13.5, 15.0, 16.5, 18.0)
CLASSES_PER_SLOT = (2, 8)
CLASS_SIZE = (30, 200)
CLASS_HOURS = (1.0, 3.0)


# -- fleet -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    dynamic_gpus: int
    whole_gpus: int
    node_cpus: int
    node_memory: str

    @property
    def gpus(self) -> int:
        return self.dynamic_gpus + self.whole_gpus

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / GPUS_PER_NODE)

    def describe(self) -> str:
        return (
            f"{self.gpus:,} {MODEL} GPUs on {self.nodes} nodes of {GPUS_PER_NODE} "
            f"({self.node_cpus} CPUs, {self.node_memory} memory each): "
            f"{self.dynamic_gpus:,} in MIG mode `dynamic` "
            f"({self.dynamic_gpus * COMPUTE_SLICES:,} 1g-equivalent slots) "
            f"+ {self.whole_gpus:,} whole (non-MIG); MIG GPUs fill the first nodes"
        )


def site_dict(fleet: Fleet) -> dict:
    """The site as `parse_site` reads it: dynamic-MIG GPUs first, then whole GPUs."""
    kinds = [{"model": MODEL, "mig": "dynamic"}] * fleet.dynamic_gpus
    kinds += [{"model": MODEL}] * fleet.whole_gpus
    nodes = []
    for n in range(fleet.nodes):
        gpus = kinds[n * GPUS_PER_NODE : (n + 1) * GPUS_PER_NODE]
        nodes.append(
            {
                "name": f"gpu-{n + 1:04d}",
                "cpus": fleet.node_cpus,
                "memory": fleet.node_memory,
                "gpus": [dict(g) for g in gpus],
            }
        )
    return {
        "site": {"name": "bench-centre", "inventory": "declared"},
        "nodes": nodes,
        "slice_types": offered_types(fleet, nodes),
    }


def offered_types(fleet: Fleet, nodes: list[dict]) -> dict:
    """Every slice type in SLICE_TYPES that this fleet has hardware for."""
    whole_per_node = max((sum("mig" not in g for g in n["gpus"]) for n in nodes), default=0)
    out = {}
    for name, (cpus, memory, price) in SLICE_TYPES.items():
        if name.startswith("h100x") and int(name[5:]) > whole_per_node:
            continue
        if name.startswith("h100.") and fleet.dynamic_gpus == 0:
            continue
        out[name] = {"cpus": cpus, "memory": memory, "price_per_hour": price}
    return out


def build_site(fleet: Fleet) -> tuple[Site, float]:
    t0 = time.perf_counter()
    site = parse_site(site_dict(fleet), "<allocator_scale>")
    return site, time.perf_counter() - t0


# -- trace -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    arrive: float  # seconds after Monday 00:00
    duration: float  # seconds
    slice_type: str
    source: str  # "class" or the research stream


def research_intensity(t: float) -> float:
    """Share of the peak arrival rate at time t: weekday working hours are the peak."""
    day, hour = divmod(t / HOUR, 24)
    weekend = day % 7 >= 5
    if 8 <= hour < 20:
        return 0.4 if weekend else 1.0
    return 0.15 if weekend else 0.3


def poisson_stream(rng, name, rate_per_hour, mix, horizon) -> list[Request]:
    """A non-homogeneous Poisson stream by thinning a homogeneous one at the peak rate."""
    types, weights = list(mix), list(mix.values())
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate_per_hour / HOUR)
        if t >= horizon:
            return out
        if rng.random() < research_intensity(t):
            duration = rng.uniform(*RESEARCH_HOURS) * HOUR
            out.append(Request(t, duration, rng.choices(types, weights)[0], name))


def class_bursts(rng, days: int) -> list[Request]:
    out = []
    for day in range(days):
        if day % 7 >= 5:
            continue
        for slot in CLASS_SLOTS_H:
            for _ in range(rng.randint(*CLASSES_PER_SLOT)):
                start = (day * 24 + slot) * HOUR + rng.uniform(0, 600)
                length = rng.uniform(*CLASS_HOURS) * HOUR
                for _student in range(rng.randint(*CLASS_SIZE)):
                    arrive = start + rng.uniform(0, 60)
                    duration = length + rng.uniform(-300, 300)
                    out.append(Request(arrive, duration, "h100.1g.10gb", "class"))
    return out


def make_trace(seed: int, days: int, load: float, offered: set[str]) -> list[Request]:
    rng = random.Random(seed)
    horizon = days * 24 * HOUR
    trace = class_bursts(rng, days)
    for name, (rate, mix) in RESEARCH_STREAMS.items():
        kept = {t: w for t, w in mix.items() if t in offered}
        if kept:
            trace += poisson_stream(rng, name, rate * load, kept, horizon)
    trace = [r for r in trace if r.slice_type in offered]
    trace.sort(key=lambda r: r.arrive)
    return trace


def event_order(trace: list[Request], horizon: float) -> list[tuple[float, int, int]]:
    """(time, 0 = departure / 1 = arrival, request index); departures first at equal times.
    Departures after the horizon are not replayed."""
    events = [(r.arrive, 1, i) for i, r in enumerate(trace)]
    events += [
        (r.arrive + r.duration, 0, i)
        for i, r in enumerate(trace)
        if r.arrive + r.duration < horizon
    ]
    events.sort()
    return events


# -- demand and the fluid reference ------------------------------------------------------------


def demand_vector(site: Site, slice_type: str) -> tuple[int, int, int, int]:
    """(MIG sevenths, whole GPUs, CPUs, memory bytes) one slice of this type takes."""
    st = site.slice_types[slice_type]
    shape = st.shape
    sevenths = gpu_model(MODEL).profile(shape.profile).compute_slices if shape.kind == "mig" else 0
    whole = shape.count if shape.kind == "gpu" else 0
    return (sevenths, whole, st.cpus, st.memory_bytes)


def fleet_totals(site: Site) -> tuple[int, int, int, int]:
    gpus = [g for n in site.nodes for g in n.gpus]
    return (
        sum(g.mig == MIG_DYNAMIC for g in gpus) * COMPUTE_SLICES,
        sum(g.mig == MIG_NONE for g in gpus),
        sum(n.cpus for n in site.nodes),
        sum(n.memory_bytes for n in site.nodes),
    )


def peak_offered(events, trace, vectors) -> tuple[int, list[float]]:
    """The arrival at which offered MIG demand (nothing refused) peaks, and each pool's peak."""
    in_use = [0, 0, 0, 0]
    peaks = [0, 0, 0, 0]
    peak_arrival, peak_mig = 0, -1
    for _t, kind, i in events:
        sign = 1 if kind else -1
        vec = vectors[trace[i].slice_type]
        for k in range(4):
            in_use[k] += sign * vec[k]
            peaks[k] = max(peaks[k], in_use[k])
        if kind and in_use[0] > peak_mig:
            peak_arrival, peak_mig = i, in_use[0]
    return peak_arrival, peaks


class FluidPolicy:
    """Admits a request when the fleet's totals still have room: the fluid reference."""

    name = "fluid reference (upper bound, not achievable)"

    def __init__(self, totals, vectors, trace):
        self.totals = totals
        self.vectors = vectors
        self.trace = trace
        self.in_use = [0, 0, 0, 0]

    def admit(self, i: int) -> bool:
        vec = self.vectors[self.trace[i].slice_type]
        if any(u + v > t for u, v, t in zip(self.in_use, vec, self.totals, strict=True)):
            return False
        self.in_use = [u + v for u, v in zip(self.in_use, vec, strict=True)]
        return True

    def depart(self, i: int) -> None:
        vec = self.vectors[self.trace[i].slice_type]
        self.in_use = [u - v for u, v in zip(self.in_use, vec, strict=True)]

    def snapshot(self) -> dict:
        idle = self.totals[0] - self.in_use[0]
        return {"idle_sevenths": idle, "can_7g": idle // 7, "can_3g": idle // 3}


# -- the allocators, timed -------------------------------------------------------------------


@dataclass
class Timings:
    place_ns: list[int] = field(default_factory=list)
    place_kind: list[str] = field(default_factory=list)
    hold_ns: list[int] = field(default_factory=list)
    release_ns: list[int] = field(default_factory=list)

    def add_place(self, ns: int, kind: str) -> None:
        self.place_ns.append(ns)
        self.place_kind.append(kind)


class TimedAllocator:
    """Replays the trace on an allocator, timing `place` alone, then `hold` and `release`."""

    def __init__(self, name, allocator: Allocator, site: Site, trace):
        self.name = name
        self.allocator = allocator
        self.trace = trace
        self.requests = {n: request_for(st) for n, st in site.slice_types.items()}
        self.timings = Timings()

    def admit(self, i: int) -> bool:
        req = self.requests[self.trace[i].slice_type]
        clock = time.perf_counter_ns
        t0 = clock()
        a = self.allocator.place(req)
        self.timings.add_place(clock() - t0, req.shape.kind)
        if a is None:
            return False
        t0 = clock()
        self.allocator.hold(f"r{i}", a)
        self.timings.hold_ns.append(clock() - t0)
        return True

    def depart(self, i: int) -> None:
        t0 = time.perf_counter_ns()
        self.allocator.release(f"r{i}")
        self.timings.release_ns.append(time.perf_counter_ns() - t0)

    def snapshot(self) -> dict:
        return fragmentation(self.allocator, self.requests)


def fragmentation(alloc: Allocator, requests: dict) -> dict:
    """How the dynamic-MIG GPUs look now: what they could still take, and what CPUs strand."""
    idle = can_7g = can_3g = gpu_1g_slots = 0
    model = gpu_model(MODEL)
    for gpu in alloc.inventory.gpus:
        if gpu.mig != MIG_DYNAMIC:
            continue
        state = alloc.mig_layout(gpu.uuid)
        fits = maximal_fits(MODEL, state)
        idle += COMPUTE_SLICES - sum(model.profile(p.profile).compute_slices for p in state)
        can_7g += fits["7g.80gb"] > 0
        can_3g += fits["3g.40gb"] > 0
        gpu_1g_slots += fits["1g.10gb"]
    return {
        "idle_sevenths": idle,
        "can_7g": can_7g,
        "can_3g": can_3g,
        "free_count_7g": _free(alloc, requests, "h100.7g.80gb"),
        "free_count_3g": _free(alloc, requests, "h100.3g.40gb"),
        "stranded_1g": gpu_1g_slots - _free(alloc, requests, "h100.1g.10gb"),
    }


def _free(alloc: Allocator, requests: dict, name: str) -> int:
    return alloc.free_count(requests[name]) if name in requests else 0


# -- replay ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    accepted: bytearray
    wall_s: float  # the replay without the peak snapshot
    snapshot: dict
    timings: Timings | None = None
    gc: str = ""


class GcPauses:
    """Records the garbage collector's pauses while active (to explain the max timings)."""

    def __init__(self):
        self.pauses_ns: list[tuple[int, int]] = []  # (generation, duration)
        self._started = 0

    def __enter__(self):
        gc.collect()
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.pauses_ns.append((info["generation"], time.perf_counter_ns() - self._started))

    def describe(self) -> str:
        if not self.pauses_ns:
            return "no collections"
        full = [ns for gen, ns in self.pauses_ns if gen == 2]
        longest = max(ns for _gen, ns in self.pauses_ns) / 1e6
        return f"{len(self.pauses_ns):,} collections ({len(full)} full), longest {longest:.1f} ms"


def replay(policy, events, n_requests: int, peak_arrival: int) -> Outcome:
    accepted = bytearray(n_requests)
    snapshot: dict = {}
    snapshot_s = 0.0
    with GcPauses() as pauses:
        t0 = time.perf_counter()
        for _t, kind, i in events:
            if kind:
                accepted[i] = policy.admit(i)
                if i == peak_arrival:
                    s0 = time.perf_counter()
                    snapshot = policy.snapshot()
                    snapshot_s = time.perf_counter() - s0
            elif accepted[i]:
                policy.depart(i)
        wall = time.perf_counter() - t0 - snapshot_s
    return Outcome(
        policy.name,
        accepted,
        wall,
        snapshot,
        getattr(policy, "timings", None),
        pauses.describe(),
    )


# -- report ----------------------------------------------------------------------------------


def percentile_us(samples_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    if not samples_ns:
        return float("nan")
    ordered = sorted(samples_ns)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] / 1000


def spread(samples_ns: list[int]) -> str:
    p50, p99 = percentile_us(samples_ns, 50), percentile_us(samples_ns, 99)
    top = max(samples_ns) / 1000 if samples_ns else float("nan")
    return f"{p50:,.0f} / {p99:,.0f} / {top:,.0f}"


def gpu_hours(trace, site, accepted, horizon) -> tuple[float, float]:
    """Accepted GPU-hours inside the horizon: (MIG pool, whole pool)."""
    mig = whole = 0.0
    for r, ok in zip(trace, accepted, strict=True):
        if not ok:
            continue
        shape = site.slice_types[r.slice_type].shape
        hours = (min(r.arrive + r.duration, horizon) - r.arrive) / HOUR
        if shape.kind == "mig":
            mig += shape.gpu_equivalents * hours
        elif shape.kind == "gpu":
            whole += shape.gpu_equivalents * hours
    return mig, whole


def outcome_table(outcomes, trace, site, fleet, horizon) -> list[str]:
    capacity_h = fleet.gpus * horizon / HOUR
    hours = {o.name: gpu_hours(trace, site, o.accepted, horizon) for o in outcomes}
    bound = sum(hours[outcomes[-1].name])
    first = sum(hours[outcomes[1].name])
    rows = [
        "| policy | accepted requests | refused | accepted GPU-h (MIG + whole) | utilisation "
        "| vs fluid bound | vs first-fit | replay wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        mig, whole = hours[o.name]
        total = mig + whole
        n_ok = sum(o.accepted)
        rows.append(
            f"| {o.name} | {n_ok:,} | {len(trace) - n_ok:,} | {total:,.0f} "
            f"({mig:,.0f} + {whole:,.0f}) | {total / capacity_h:.1%} | {total / bound:.3f} "
            f"| {total / first:.3f} | {o.wall_s:.1f} |"
        )
    return rows


def timing_rows(outcomes) -> list[tuple[str, Timings, bool]]:
    """(label, timings, whether the goal applies) for every timed allocator."""
    rows = []
    for o in outcomes:
        if o.timings is not None:
            rows.append((o.name, o.timings, o.name.startswith("best-fit")))
    return rows


def timing_table(outcomes) -> list[str]:
    rows = [
        "| allocator | place() decisions timed | place p50 / p99 / max (µs) "
        "| hold p50 / p99 / max (µs) | release p50 / p99 / max (µs) | goal: p99 place < 1 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, t, goal in timing_rows(outcomes):
        p99 = percentile_us(t.place_ns, 99)
        verdict = "met" if p99 < GOAL_P99_PLACE_US else "**not met**"
        hold = spread(t.hold_ns) if t.hold_ns else "(as below)"
        release = spread(t.release_ns) if t.release_ns else "(as below)"
        rows.append(
            f"| {label} | {len(t.place_ns):,} | {spread(t.place_ns)} | {hold} | {release} "
            f"| {verdict} ({p99:,.0f} µs){'' if goal else ', baseline'} |"
        )
    return rows


def kind_table(outcomes) -> list[str]:
    kinds = ("mig", "gpu", "cpu")
    head = " | ".join(f"{k}: n, p50 / p99 / max (µs)" for k in kinds)
    rows = [f"| allocator | {head} |", "|---|" + "---:|" * len(kinds)]
    for label, t, _goal in timing_rows(outcomes):
        cells = []
        for k in kinds:
            xs = [ns for ns, kind in zip(t.place_ns, t.place_kind, strict=True) if kind == k]
            cells.append(f"{len(xs):,}: {spread(xs)}" if xs else "-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def refusal_table(outcomes, trace) -> list[str]:
    offered = Counter(r.slice_type for r in trace)
    refused = {
        o.name: Counter(r.slice_type for r, ok in zip(trace, o.accepted, strict=True) if not ok)
        for o in outcomes
    }
    names = [o.name.split(" (")[0] for o in outcomes]
    rows = [
        "| slice type | offered | " + " | ".join(f"refused: {n}" for n in names) + " |",
        "|---|---:|" + "---:|" * len(outcomes),
    ]
    for st in SLICE_TYPES:
        if not offered[st]:
            continue
        cells = [
            f"{refused[o.name][st]:,} ({refused[o.name][st] / offered[st]:.1%})" for o in outcomes
        ]
        rows.append(f"| {st} | {offered[st]:,} | " + " | ".join(cells) + " |")
    return rows


def fragmentation_table(outcomes, fleet) -> list[str]:
    rows = [
        "| policy | idle sevenths | GPUs that could take a 7g.80gb | GPUs that could take a "
        "3g.40gb | free_count(7g.80gb) | free_count(3g.40gb) | 1g slots stranded by CPUs/memory |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        s = o.snapshot
        rows.append(
            f"| {o.name} | {s['idle_sevenths']:,} of {fleet.dynamic_gpus * COMPUTE_SLICES:,} "
            f"| {s['can_7g']:,} | {s['can_3g']:,} | {s.get('free_count_7g', 'n/a')} "
            f"| {s.get('free_count_3g', 'n/a')} | {s.get('stranded_1g', 'n/a')} |"
        )
    return rows


def offered_gpu_hours(trace, site, horizon) -> tuple[float, float]:
    """GPU-hours the trace asks for inside the window: (MIG pool, whole pool)."""
    return gpu_hours(trace, site, bytearray([1]) * len(trace), horizon)


def trace_lines(trace, site, peaks, totals, horizon) -> list[str]:
    by_source = Counter(r.source for r in trace)
    mig_h, whole_h = offered_gpu_hours(trace, site, horizon)
    pools = ("MIG sevenths", "whole GPUs", "CPUs", "memory")
    peak = ", ".join(
        f"{name} {p / t:.0%}" for name, p, t in zip(pools, peaks, totals, strict=True) if t
    )
    sources = ", ".join(f"{k}: {v:,}" for k, v in sorted(by_source.items()))
    return [
        f"- Requests: {len(trace):,} ({sources})",
        f"- Offered GPU-hours inside the window: MIG {mig_h:,.0f}, whole {whole_h:,.0f}",
        f"- Peak offered load (nothing refused) as a share of the fleet: {peak}",
    ]


def machine_info() -> str:
    return (
        f"{cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} online), "
        f"{platform.platform()}, "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )


def hash_seed() -> str:
    seed = os.environ.get("PYTHONHASHSEED")
    return f"PYTHONHASHSEED={seed}" if seed else "PYTHONHASHSEED unset (random per process)"


@dataclass
class Bench:
    """One run: its parameters, the fleet, the trace, and what each policy did with it."""

    args: argparse.Namespace
    fleet: Fleet
    site: Site
    trace: list[Request]
    horizon: float
    build_s: float
    trace_lines: list[str]
    alloc_s: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)


def parameters(b: Bench) -> list[str]:
    args = b.args
    mix = "; ".join(
        f"{name}: {rate * args.load:g}/h at peak, "
        + ", ".join(f"{t} {w:.0%}" for t, w in m.items())
        for name, (rate, m) in RESEARCH_STREAMS.items()
    )
    types = ", ".join(
        f"{n} ({st.cpus} CPUs, {st.memory_bytes // GIB} GiB)"
        for n, st in b.site.slice_types.items()
    )
    slots = ", ".join(f"{h:g}" for h in CLASS_SLOTS_H)
    return [
        f"- Fleet: {b.fleet.describe()}. Whole-GPU types use only non-MIG GPUs.",
        f"- Slice types offered: {types}",
        f"- Trace: seed {args.seed}, {args.days} simulated days from Monday 00:00, "
        f"load x{args.load:g}. Classes on weekdays at {slots} h: "
        f"{CLASSES_PER_SLOT[0]}-{CLASSES_PER_SLOT[1]} classes per slot of "
        f"{CLASS_SIZE[0]}-{CLASS_SIZE[1]} students, all arriving within 1 min, staying "
        f"{CLASS_HOURS[0]:g}-{CLASS_HOURS[1]:g} h. Research (Poisson, durations "
        f"{RESEARCH_HOURS[0]:g}-{RESEARCH_HOURS[1]:g} h uniform): {mix}. Arrival rate is the "
        "peak on weekdays 08-20 h, 30% other weekday hours, 40% / 15% at weekends. "
        "A refused request is gone (no retry).",
        f"- Inventory built with `parse_site` in {b.build_s:.2f} s; an `Allocator` constructed "
        f"in {b.alloc_s:.3f} s (neither is measured below). {hash_seed()}.",
    ]


def notes(b: Bench) -> list[str]:
    return [
        "- Where offered CPUs exceed 100% at the peak, it is only because GPU demand does: "
        f"GPU slices use at most {GPUS_PER_NODE * SLICE_TYPES['h100x1'][0]} CPUs of a node, "
        "the rest is for CPU-only sessions. Where those sessions land decides how many CPUs "
        "idle GPUs still find (the 'stranded' column).",
        "- Timings are wall time on a shared machine and include garbage collection; max is one "
        "sample. Collector pauses during each replay: "
        + "; ".join(f"{o.name}: {o.gc}" for o in b.outcomes if o.timings is not None)
        + ".",
    ]


def report(b: Bench) -> str:
    fleet, horizon, outcomes = b.fleet, b.horizon, b.outcomes
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    seed = os.environ.get("PYTHONHASHSEED")
    env = f"PYTHONHASHSEED={seed} " if seed else ""
    command = " ".join([f"{env}.venv/bin/python bench/allocator_scale.py", *b.args.argv])
    lines = [
        "# Allocator at centre scale",
        "",
        f"`{command}`",
        "",
        f"- Date: {now}; machine: {machine_info()}",
        *parameters(b),
        *b.trace_lines,
        "",
        "## Packing: the same trace on each policy",
        "",
        *outcome_table(outcomes, b.trace, b.site, fleet, horizon),
        "",
        "GPU-hours: MIG slices count their compute sevenths (3g.40gb = 3/7 GPU-hour per hour), "
        "clipped to the window; utilisation = accepted GPU-hours / "
        f"({fleet.gpus:,} GPUs x {horizon / HOUR:g} h). The **fluid reference is an upper "
        "bound, not achievable**: it admits a request whenever the fleet's total MIG sevenths, "
        "whole GPUs, CPUs and memory have room, ignoring NVIDIA's placement table, GPU and node "
        "boundaries (a bound in practice, not a theorem: a refusal can by luck keep room "
        "for a longer request later).",
        "",
        "## Decision time",
        "",
        *timing_table(outcomes),
        "",
        "`place()` alone, timed with `time.perf_counter_ns()` around the call, one sample per "
        "request (refusals included); hold and release timed separately, one sample per "
        "accepted request and per departure inside the window. By slice kind:",
        "",
        *kind_table(outcomes),
        "",
        "## Refusals by slice type",
        "",
        *refusal_table(outcomes, b.trace),
        "",
        "## Fragmentation at the peak",
        "",
        "Right after the arrival at which offered MIG demand peaks (same moment for every "
        "policy). 'Could take' counts dynamic-MIG GPUs by their layout alone; `free_count` also "
        "needs the node's CPUs and memory; stranded = 1g slots the GPUs have but their nodes' "
        "CPUs/memory cannot serve. For the fluid reference the counts are idle sevenths // 7 "
        "and // 3.",
        "",
        *fragmentation_table(outcomes, fleet),
        "",
        "## Notes",
        "",
        *notes(b),
        "",
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="trace seed (default: %(default)s)")
    parser.add_argument(
        "--dynamic-gpus",
        type=int,
        default=2600,
        help="H100s in MIG mode 'dynamic' (default: %(default)s)",
    )
    parser.add_argument(
        "--whole-gpus",
        type=int,
        default=400,
        help="H100s handed out whole, no MIG (default: %(default)s)",
    )
    parser.add_argument(
        "--node-cpus",
        type=int,
        default=128,
        help="CPUs per 8-GPU node; GPU slices use at most 112 (default: %(default)s)",
    )
    parser.add_argument(
        "--node-memory", default="2048G", help="memory per node (default: %(default)s)"
    )
    parser.add_argument("--days", type=int, default=7, help="simulated days (default: %(default)s)")
    parser.add_argument(
        "--load",
        type=float,
        default=1.0,
        help="multiplies every research arrival rate (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if args.dynamic_gpus < 0 or args.whole_gpus < 0 or args.dynamic_gpus + args.whole_gpus == 0:
        parser.error("the fleet needs at least one GPU")
    if args.days < 1 or args.load <= 0:
        parser.error("--days must be at least 1 and --load above 0")
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def prepare(args: argparse.Namespace) -> tuple[Bench, list, dict, tuple, int]:
    fleet = Fleet(args.dynamic_gpus, args.whole_gpus, args.node_cpus, args.node_memory)
    site, build_s = build_site(fleet)
    horizon = args.days * 24 * HOUR
    trace = make_trace(args.seed, args.days, args.load, set(site.slice_types))
    events = event_order(trace, horizon)
    vectors = {name: demand_vector(site, name) for name in site.slice_types}
    totals = fleet_totals(site)
    peak_arrival, peaks = peak_offered(events, trace, vectors)
    lines = trace_lines(trace, site, peaks, totals, horizon)
    bench = Bench(args, fleet, site, trace, horizon, build_s, lines)
    return bench, events, vectors, totals, peak_arrival


def run_allocators(b: Bench, events, peak_arrival: int) -> None:
    for name, cls in (("best-fit Allocator", Allocator), ("FirstFitAllocator", FirstFitAllocator)):
        t0 = time.perf_counter()
        allocator = cls(b.site.inventory())
        b.alloc_s = time.perf_counter() - t0
        policy = TimedAllocator(name, allocator, b.site, b.trace)
        b.outcomes.append(replay(policy, events, len(b.trace), peak_arrival))
        print(f"{name}: replayed in {b.outcomes[-1].wall_s:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench, events, vectors, totals, peak_arrival = prepare(args)
    print("\n".join(bench.trace_lines), flush=True)
    run_allocators(bench, events, peak_arrival)
    fluid = FluidPolicy(totals, vectors, bench.trace)
    bench.outcomes.append(replay(fluid, events, len(bench.trace), peak_arrival))
    text = report(bench)
    publish(text, RESULTS, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
