"""slicehub/spawners/slurm/offer.py and the node view of sinfo: the form's counts come from what
Slurm has
free, and a site the cluster contradicts is refused with the key and the fix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from slicehub.spawners.site import load_site
from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc
from slicehub.spawners.slurm.offer import availability, contradictions

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "slurm"
SITE = load_site(REPO / "hub_config" / "slurm-site.toml")


def nodes() -> dict[str, sa.NodeResources]:
    return sa.parse_sinfo_nodes((FIXTURES / "sinfo-nodes.txt").read_text())


def test_sinfo_nodes_argv():
    assert sc.sinfo_nodes_argv() == [
        "sinfo",
        "--noheader",
        "--Node",
        "--Format=NodeList:|,NodeAddr:|,Partition:|,StateLong:|,CPUsState:|,Memory:|,AllocMem:|,"
        "Gres:|,GresUsed:",
    ]


def test_parse_sinfo_nodes_merges_partitions_and_reads_free_resources():
    (vm,) = nodes().values()
    assert (vm.name, vm.address, vm.partitions) == ("vm", "127.0.0.1", frozenset({"gpu", "cpu"}))
    assert (vm.state, vm.usable) == ("mixed", True)
    assert (vm.cpus_idle, vm.cpus_total, vm.memory_mb, vm.memory_alloc_mb) == (61, 64, 256000, 5000)
    assert vm.gres == {"1g.10gb": 40, "3g.40gb": 4, "h100": 2}
    assert vm.gres_used == {"1g.10gb": 2, "3g.40gb": 0, "h100": 0}


def test_parse_sinfo_nodes_refuses_another_format():
    with pytest.raises(ValueError, match="fields"):
        sa.parse_sinfo_nodes("vm|idle|gpu:1g.10gb:4\n")


def test_free_counts_per_slice_type():
    counts = {a.slice_type.name: (a.free, a.capacity) for a in availability(SITE, nodes())}
    assert counts == {
        "h100.1g.10gb": (38, 40),  # 2 of 40 slices in use
        "h100.3g.40gb": (4, 4),
        "h100x1": (2, 2),
        "cpu": (61, 64),  # bound by idle CPUs
    }


def test_a_drained_node_offers_nothing_free_but_keeps_its_capacity():
    drained = {n: replace(v, state="drained") for n, v in nodes().items()}
    counts = {a.slice_type.name: (a.free, a.capacity) for a in availability(SITE, drained)}
    assert counts["h100.1g.10gb"] == (0, 40)


def test_cpus_and_memory_bound_the_count_too():
    busy = {n: replace(v, cpus_idle=3, memory_alloc_mb=256000 - 9000) for n, v in nodes().items()}
    counts = {a.slice_type.name: a.free for a in availability(SITE, busy)}
    assert counts == {"h100.1g.10gb": 2, "h100.3g.40gb": 0, "h100x1": 0, "cpu": 3}


def test_the_test_cluster_contradicts_nothing():
    assert contradictions(SITE, nodes()) == []


def test_contradictions_name_the_key_and_the_fix(tmp_path):
    text = (REPO / "hub_config" / "slurm-site.toml").read_text()
    bad = tmp_path / "site.toml"
    bad.write_text(
        text.replace('gres = "3g.40gb"', 'gres = "3g.45gb"')
        .replace('partition = "cpu"', 'partition = "cpus"')
        .replace('cpus = 4\nmemory = "20G"', 'cpus = 4\nmemory = "300G"')
    )
    problems = {e.key: e for e in contradictions(load_site(bad), nodes())}
    assert set(problems) == {
        'slurm.slice_types."h100.3g.40gb".gres',
        'slurm.slice_types."cpu".partition',
        'slice_types."h100x1"',
    }
    assert "has GRES gpu:3g.45gb (they have: 1g.10gb, 3g.40gb, h100)" in str(
        problems['slurm.slice_types."h100.3g.40gb".gres']
    )
    assert "no partition 'cpus' (it has: cpu, gpu)" in str(
        problems['slurm.slice_types."cpu".partition']
    )
    assert "big enough" in str(problems['slice_types."h100x1"'])
