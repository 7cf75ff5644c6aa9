"""The site's [parking] table (slicehub.quota.site_parking): its defaults, a project's own
policy under it, every bad value refused with the file, the key and the fix; the hub's culler
service configured from it (or the hub not starting), and `slicehub doctor` saying what is
wrong."""

from datetime import timedelta
from pathlib import Path

import pytest
from traitlets.config import Config

from slicehub.config_file import ConfigFileError
from slicehub.hub import servers_url
from slicehub.quota.site_parking import SiteParking, parse_site_parking, read_site_parking
from tests.unit.test_deployment import doctor_lines

REPO = Path(__file__).resolve().parents[2]
DEMO_SITE = REPO / "hub_config" / "demo-site.toml"
MIN = timedelta(minutes=1)


def test_the_defaults_and_the_demo_site():
    assert read_site_parking(DEMO_SITE) == SiteParking()
    p = SiteParking().policy()
    assert (p.window, p.warning, p.check, p.enabled) == (30 * MIN, 5 * MIN, MIN, True)


def test_lengths_are_written_with_their_unit():
    site = parse_site_parking("s.toml", {"idle": "1 h", "warning": "90 s", "check": "30 s"})
    assert (site.idle, site.warning, site.check) == (60 * MIN, timedelta(seconds=90), MIN / 2)


@pytest.mark.parametrize(
    "table, key, words",
    [
        ({"idle": "30 minutes"}, "parking.idle", "not a length of time"),
        ({"idle": 30}, "parking.idle", "not a length of time"),
        ({"check": "2 h"}, "parking.check", "out of range"),
        ({"enabled": "yes"}, "parking.enabled", "not true or false"),
        ({"window": "30 min"}, "parking.window", "not a setting Slicehub knows"),
        ({"warning": "30 s", "check": "1 min"}, "parking", "at least the check interval"),
        ({"idle": "5 min", "warning": "5 min"}, "parking", "longer than the warning lead"),
    ],
)
def test_a_bad_value_names_the_file_the_key_and_the_fix(table, key, words):
    with pytest.raises(ConfigFileError) as e:
        parse_site_parking("/etc/slicehub/site.toml", table)
    assert (e.value.path, e.value.key) == ("/etc/slicehub/site.toml", key)
    assert words in e.value.problem and e.value.fix


def test_a_projects_own_policy_never_makes_one_that_cannot_work():
    site = SiteParking()
    course = site.policy(idle_minutes=15, warning_minutes=3)
    assert (course.window, course.warning) == (15 * MIN, 3 * MIN)
    # a window shorter than the site's lead: the lead shrinks to fit, never below one check
    short = site.policy(idle_minutes=3)
    assert (short.window, short.warning, short.check) == (3 * MIN, 2 * MIN, MIN)
    tiny = site.policy(idle_minutes=1)
    assert tiny.window > tiny.warning >= tiny.check
    # an exemption counts only where the site allows it
    assert site.policy(opted_out=True).enabled
    assert not SiteParking(projects_may_opt_out=True).policy(opted_out=True).enabled
    assert not SiteParking(enabled=False).policy().enabled


def test_the_hub_runs_the_culler_from_the_site_or_does_not_start(monkeypatch, tmp_path, capsys):
    from slicehub.hub import configure

    site = tmp_path / "site.toml"
    site.write_text(DEMO_SITE.read_text() + '\n[parking]\ncheck = "20 s"\n')
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        f'[deployment]\ndata_dir = "data"\nsite = "{site}"\n'
        '[hub]\npublic_url = "https://0.0.0.0:8443/jupyter/"\n'
    )
    for name in ("SLICEHUB_DATA_DIR", "SLICEHUB_LEDGER_URL", "SLICEHUB_SITE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(deployment))
    c = Config()
    configure(c)
    [culler] = [s for s in c.JupyterHub.services if s["name"] == "culler"]
    assert culler["command"][1:3] == ["-m", "slicehub.culler"]
    assert "--cull-every=20" in culler["command"]
    assert culler["environment"]["SLICEHUB_SERVERS_URL"] == "https://127.0.0.1:8443"
    assert culler["environment"]["SLICEHUB_QUOTA_URL"].endswith("/services/quota/")
    [role] = [r for r in c.JupyterHub.load_roles if r["name"] == "culler"]
    assert set(role["scopes"]) == {
        "list:users",
        "read:users:activity",
        "read:servers",
        "delete:servers",
        "access:servers",
        "custom:quota:parking",
        "access:services!service=quota",
    }

    site.write_text(DEMO_SITE.read_text() + '\n[parking]\nidle = "half an hour"\n')
    with pytest.raises(SystemExit) as e:
        configure(Config())
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"Slicehub cannot start: {site}: parking.idle:" in err and "Fix:" in err


@pytest.mark.parametrize(
    "public, expected",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://hub.example.org/", "https://hub.example.org"),
        ("http://[::]:8000/", "http://127.0.0.1:8000"),
        ("http://[::1]:8000/", "http://[::1]:8000"),
    ],
)
def test_the_culler_reaches_the_servers_through_the_proxy(public, expected):
    assert servers_url(public) == expected


def test_the_doctor_says_what_is_wrong_with_the_parking_table(monkeypatch, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(DEMO_SITE.read_text() + '\n[parking]\nwarning = "10 s"\n')
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(f'[deployment]\nsite = "{site}"\n')
    lines = doctor_lines(monkeypatch, deployment, tmp_path / "data")
    [line] = [x for x in lines if x.startswith("FAIL") and "site file" in x]
    assert "parking: the warning lead (10 s) must be at least the check interval" in line
