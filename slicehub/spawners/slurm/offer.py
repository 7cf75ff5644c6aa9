"""What the cluster can run of this site's offer, from `sinfo`: free counts, and start-up checks.

Decides, per offered slice type, how many could start now and how many the cluster could hold
at most (over the nodes of its partition: free GRES of its type, idle CPUs and unallocated memory,
whichever runs out first), and which site settings the cluster contradicts (a partition it does
not have, a GRES type no node of the partition has, a slice bigger than any node). The form offers
only what can run; the hub refuses to start on a contradiction, naming the key and the fix.

Does not run anything except in `check_cluster`, which the hub's config calls once at start-up.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Mapping

from ..site_model import Site, SiteError, SliceType
from ..source import Availability
from . import answers as sa
from . import commands as sc
from .site import SlurmSliceType

log = logging.getLogger("slicehub.slurm")
MIB = 1024**2


def slices_on_node(st: SliceType, where: SlurmSliceType, node: sa.NodeResources, free: bool) -> int:
    """How many slices of this type the node holds (free: now; else: when empty)."""
    mem_mb = math.ceil(st.memory_bytes / MIB)
    if free:
        cpus, memory = node.cpus_idle, node.memory_mb - node.memory_alloc_mb
    else:
        cpus, memory = node.cpus_total, node.memory_mb
    counts = [max(cpus, 0) // st.cpus, max(memory, 0) // mem_mb]
    if where.gres_type:
        gres = node.gres.get(where.gres_type, 0)
        if free:
            gres -= node.gres_used.get(where.gres_type, 0)
        counts.append(max(gres, 0) // where.gres_count)
    return min(counts)


def availability(site: Site, nodes: Mapping[str, sa.NodeResources]) -> list[Availability]:
    """Free now and in all, per offered slice type (a slice competes with the other types for
    the same CPUs and memory, so these are upper bounds, never promises: Slurm queues the rest)."""
    rows = []
    for name, st in site.slice_types.items():
        where = site.slurm.slice_types[name]
        members = [n for n in nodes.values() if where.partition in n.partitions]
        free = sum(slices_on_node(st, where, n, True) for n in members if n.usable)
        capacity = sum(slices_on_node(st, where, n, False) for n in members)
        rows.append(Availability(st, free, capacity))
    return rows


def contradictions(site: Site, nodes: Mapping[str, sa.NodeResources]) -> list[SiteError]:
    """What the cluster says against the site file, each as a SiteError with the fix."""
    problems = []
    partitions = set().union(*(n.partitions for n in nodes.values())) if nodes else set()
    for name, st in site.slice_types.items():
        where = site.slurm.slice_types[name]
        key = f'slurm.slice_types."{name}"'
        if where.partition not in partitions:
            problems.append(
                SiteError(
                    site.path,
                    f"{key}.partition" if where.partition != site.slurm.partition else key,
                    f"the cluster has no partition {where.partition!r} "
                    f"(it has: {', '.join(sorted(partitions)) or 'none'})",
                    "name a partition `sinfo` lists, or set [slurm] partition",
                )
            )
            continue
        members = [n for n in nodes.values() if where.partition in n.partitions]
        if where.gres_type:
            types = sorted(set().union(*(n.gres for n in members)))
            if where.gres_type not in types:
                problems.append(
                    SiteError(
                        site.path,
                        f"{key}.gres",
                        f"no node of partition {where.partition} has GRES gpu:{where.gres_type} "
                        f"(they have: {', '.join(types) or 'no typed gpu GRES'})",
                        "use a type from `sinfo -o %G`, or add it to the nodes' gres.conf",
                    )
                )
                continue
        if not any(slices_on_node(st, where, n, False) for n in members):
            problems.append(
                SiteError(
                    site.path,
                    f'slice_types."{name}"',
                    f"no node of partition {where.partition} is big enough for it "
                    f"({st.cpus} CPUs, {math.ceil(st.memory_bytes / MIB)} MB"
                    + (f", {where.gres_count} x gpu:{where.gres_type}" if where.gres_type else "")
                    + ")",
                    "lower its cpus/memory, or give it a partition with bigger nodes",
                )
            )
    return problems


def check_cluster(site: Site, timeout: float = 15) -> dict[str, sa.NodeResources] | None:
    """At hub start-up: ask `sinfo` and raise the first contradiction as a SiteError. A cluster
    that does not answer is logged, not fatal: Slurm may be restarting, and starts say so."""
    argv = sc.sinfo_nodes_argv(executable=site.slurm.command("sinfo"))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=os.environ
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning(
            "Slurm did not answer at start-up (%s): %s; the offer is checked later", argv, e
        )
        return None
    if done.returncode != 0:
        log.warning(
            "Slurm did not answer at start-up (%s exited %s): %s",
            argv[0],
            done.returncode,
            done.stderr.strip()[:300],
        )
        return None
    nodes = sa.parse_sinfo_nodes(done.stdout)
    problems = contradictions(site, nodes)
    if problems:
        raise problems[0]
    return nodes
