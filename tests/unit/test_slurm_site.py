"""The [slurm] table of a site file: each slice type's partition and GRES, each project's account;
every mistake stops with the file, the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from slicehub.spawners.site import SiteError, load_site, parse_site
from slicehub.spawners.slurm.site import SlurmSliceType

REPO = Path(__file__).resolve().parents[2]

SLURM = {
    "site": {"name": "cluster", "run_as": "unix-users"},
    "slurm": {
        "partition": "gpu",
        "accounts": {"ai-lab": "ai_lab", "vision": "vision"},
        "slice_types": {
            "h100.1g.10gb": {"gres": "nvidia_h100_80gb_hbm3_1g.10gb"},
            "h100x2": {"gres": "h100", "partition": "gpu-whole"},
            "cpu": {"partition": "cpu"},
        },
    },
    "slice_types": {
        "h100.1g.10gb": {"cpus": 2, "memory": "16G", "price_per_hour": "5.50"},
        "h100x2": {"cpus": 32, "memory": "256G", "price_per_hour": "77.00"},
        "cpu": {"cpus": 2, "memory": "8G", "price_per_hour": "0.80"},
    },
}


def site_with(*path_value):
    raw = copy.deepcopy(SLURM)
    for path, value in path_value:
        *parents, last = path
        table = raw
        for key in parents:
            table = table.setdefault(key, {})
        if value is None:
            table.pop(last, None)
        else:
            table[last] = value
    return parse_site(raw, "site.toml")


def test_the_test_cluster_site_loads():
    site = load_site(REPO / "hub_config" / "slurm-site.toml")
    slurm = site.slurm
    assert slurm is not None and site.nodes == ()
    assert slurm.partition == "gpu" and slurm.devices == "declared"
    assert slurm.slice_types["h100.1g.10gb"] == SlurmSliceType("gpu", "1g.10gb", 1)
    assert slurm.slice_types["h100x1"] == SlurmSliceType("gpu", "h100", 1)
    assert slurm.slice_types["cpu"] == SlurmSliceType("cpu", None, 0)
    assert slurm.account_for("demo-lab") == "demo-lab"
    assert slurm.account_for("nobody") is None
    assert slurm.command("sbatch") == "sbatch"


def test_whole_gpus_ask_for_n_of_their_gres_and_defaults_apply():
    slurm = site_with().slurm
    assert slurm.slice_types["h100x2"] == SlurmSliceType("gpu-whole", "h100", 2)
    assert slurm.slice_types["h100x2"].gres == (("h100", 2),)
    assert slurm.slice_types["cpu"].gres == ()
    assert slurm.devices == "real"
    with_default = site_with((("slurm", "default_account"), "centre")).slurm
    assert with_default.account_for("unmapped") == "centre"
    assert with_default.account_for("ai-lab") == "ai_lab"
    cmds = site_with((("slurm", "commands"), {"sbatch": "/opt/slurm/bin/sbatch"})).slurm
    assert cmds.command("sbatch") == "/opt/slurm/bin/sbatch" and cmds.command("squeue") == "squeue"


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (
            (("slurm", "slice_types", "h100.1g.10gb"), {}),
            'slurm.slice_types."h100.1g.10gb".gres',
            "does not guess",
        ),
        (
            (("slurm", "slice_types", "cpu", "gres"), "h100"),
            'slurm.slice_types."cpu".gres',
            "has no GPU",
        ),
        (
            (("slurm", "slice_types", "h100.3g.40gb"), {"gres": "3g.40gb"}),
            'slurm.slice_types."h100.3g.40gb"',
            "is not an offered slice type",
        ),
        (
            (("slurm", "slice_types", "h100.1g.10gb", "gres"), "1g.10gb\n#SBATCH --x"),
            'slurm.slice_types."h100.1g.10gb".gres',
            "slice type",
        ),
        (
            (("slurm", "slice_types", "h100.1g.10gb", "gres"), "H100"),
            'slurm.slice_types."h100.1g.10gb".gres',
            "a-z",
        ),
        ((("slurm", "slice_types", "cpu", "qos"), "high"), 'slurm.slice_types."cpu".qos', "knows"),
        ((("slurm", "partition"), None), "slurm.partition", "is missing"),
        ((("slurm", "partition"), "gpu;id"), "slurm.partition", "partition"),
        ((("slurm", "accounts", "ai-lab"), "AI Lab"), 'slurm.accounts."ai-lab"', "account"),
        ((("slurm", "accounts", "AI lab!"), "ai"), 'slurm.accounts."AI lab!"', "project id"),
        ((("slurm", "default_account"), "-x"), "slurm.default_account", "account"),
        ((("slurm", "devices"), "fake"), "slurm.devices", "not allowed"),
        ((("slurm", "commands"), {"srun": "srun"}), "slurm.commands.srun", "Slurm command"),
        ((("slurm", "commands"), {"sbatch": "bin/sbatch"}), "slurm.commands.sbatch", "absolute"),
        ((("slurm", "commands"), {"sbatch": "sbatch; id"}), "slurm.commands.sbatch", "executable"),
        ((("slurm", "prologue"), "module load cuda"), "slurm.prologue", "knows"),
        (
            (("nodes",), [{"name": "n1", "cpus": 8, "memory": "64G"}]),
            "nodes",
            "does not list nodes",
        ),
    ],
)
def test_mistakes_name_the_key_and_the_fix(edit, key, words):
    with pytest.raises(SiteError) as e:
        site_with(edit)
    assert e.value.key == key
    assert words in e.value.problem
    assert e.value.fix
