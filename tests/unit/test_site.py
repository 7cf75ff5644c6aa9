"""Site files: the demo loads; every bad value stops with the file, the key and the fix."""

import copy
from pathlib import Path

import pytest

from slicehub.spawners.local import inventory as inv
from slicehub.spawners.site import SiteError, load_site, parse_site

REPO = Path(__file__).resolve().parents[2]

GOOD = {
    "site": {"name": "t"},
    "nodes": [
        {
            "name": "n1",
            "cpus": 32,
            "memory": "256G",
            "gpus": [{"model": "H100-80GB", "mig": ["4g.40gb", "3g.40gb"]}, {"model": "H100-80GB"}],
        }
    ],
    "slice_types": {
        "h100.3g.40gb": {"cpus": 8, "memory": "64G", "price_per_hour": "16.50"},
        "h100x1": {"cpus": 16, "memory": "128G", "price_per_hour": "38.50"},
        "cpu": {"cpus": 2, "memory": "8G", "price_per_hour": "0.80"},
    },
}


def test_demo_site_loads_with_declared_devices():
    site = load_site(REPO / "hub_config" / "demo-site.toml")
    gpus = site.inventory().gpus
    assert len(gpus) == 3 and all(g.declared for g in gpus)
    assert [g.mig for g in gpus] == [inv.MIG_STATIC, inv.MIG_STATIC, inv.MIG_NONE]
    assert site.slice_types["h100.3g.40gb"].price_cents == 1650
    assert site.run_as == "hub-user"


def test_declared_uuids_are_stable():
    a = parse_site(copy.deepcopy(GOOD)).inventory().gpus
    b = parse_site(copy.deepcopy(GOOD)).inventory().gpus
    assert [g.uuid for g in a] == [g.uuid for g in b]
    assert all(g.uuid.startswith("GPU-") for g in a)
    assert all(i.uuid.startswith("MIG-") for i in a[0].instances)


def broken(path, value):
    raw = copy.deepcopy(GOOD)
    *parents, last = path
    target = raw
    for p in parents:
        target = target[p]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return raw


DELETE = object()


@pytest.mark.parametrize(
    "path, value, key, words",
    [
        (("nodes", 0, "gpus", 0, "mig"), ["5g.50gb"], "nodes[0].gpus[0].mig", "not a MIG profile"),
        (
            ("nodes", 0, "gpus", 0, "mig"),
            ["4g.40gb", "4g.40gb"],
            "nodes[0].gpus[0].mig",
            "cannot hold",
        ),
        (
            ("nodes", 0, "gpus", 0, "mig"),
            ["3g.40gb", "3g.40gb", "1g.10gb"],
            "nodes[0].gpus[0].mig",
            "cannot hold",
        ),
        (
            ("slice_types", "cpu", "price_per_hour"),
            DELETE,
            'slice_types."cpu".price_per_hour',
            "missing",
        ),
        (
            ("slice_types", "cpu", "price_per_hour"),
            "-1.00",
            'slice_types."cpu".price_per_hour',
            "negative",
        ),
        (
            ("slice_types", "cpu", "price_per_hour"),
            0.8,
            'slice_types."cpu".price_per_hour',
            "floating",
        ),
        (("slice_types", "cpu", "cpus"), -2, 'slice_types."cpu".cpus', "out of range"),
        (("nodes", 0, "cpus"), -1, "nodes[0].cpus", "out of range"),
        (("nodes", 0, "memory"), "lots", "nodes[0].memory", "not an amount of memory"),
        (
            ("nodes", 0, "gpus", 1, "model"),
            "V100-16GB",
            "nodes[0].gpus[1].model",
            "unknown GPU model",
        ),
        (
            ("slice_types", "h100.1g.10gb"),
            {"cpus": 2, "memory": "8G", "price_per_hour": "5"},
            'slice_types."h100.1g.10gb"',
            "no node",
        ),
        (
            ("slice_types", "h100x3"),
            {"cpus": 2, "memory": "8G", "price_per_hour": "5"},
            'slice_types."h100x3"',
            "no node",
        ),
        (("slice_types", "cpu", "gres"), "gpu:1", 'slice_types."cpu".gres', "not a setting"),
        (("site", "run_as"), "root", "site.run_as", "not allowed"),
    ],
)
def test_bad_values_name_file_key_and_fix(path, value, key, words):
    with pytest.raises(SiteError) as err:
        parse_site(broken(path, value), "site.toml")
    e = err.value
    assert e.key == key
    assert words in e.problem
    assert e.fix
    assert str(e).startswith("site.toml: ")


def test_a_toml_syntax_error_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[site\nname=")
    with pytest.raises(SiteError, match=r"bad\.toml: \(syntax\)"):
        load_site(f)


def test_session_window_that_ends_before_it_starts():
    raw = copy.deepcopy(GOOD)
    raw["sessions"] = {"min_minutes": 600, "max_hours": 2}
    with pytest.raises(SiteError, match=r"sessions\.min_minutes"):
        parse_site(raw)
