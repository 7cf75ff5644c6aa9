"""The quota service as an application (`slicehub.quota.service.SlicehubQuota`): its options
(`--help`, `--help-all`, a config file, the SLICEHUB_* environment) and its start-up steps, run
in order before it listens: `migrate`, `seed` (--seed-demo) and `check_prices` (--site), each
on a fresh SQLite ledger. A refusal is one sentence on stderr and exit status 2."""

import subprocess
import sys

import pytest
from sqlalchemy import func, select

from slicehub.common import clock
from slicehub.quota.models import Price, Project, Scheme
from slicehub.quota.service import SlicehubQuota

SITE = """
[site]
name = "test"

[slice_types."h100.1g.10gb"]
cpus = 2
price_per_hour = "5.50"

[slice_types."h100.3g.40gb"]
price_per_hour = "16.50"
"""
FIX = "Fix: slicehub admin price set <type> --per-hour <HK$> --from <date>"


@pytest.fixture
def start(tmp_path):
    """`start(*argv)`: the service initialised with `argv` on tmp_path's ledger."""
    apps = []

    def make(*argv: str) -> SlicehubQuota:
        app = SlicehubQuota()
        app.initialize([f"--ledger-url=sqlite:///{tmp_path / 'ledger.sqlite'}", *argv])
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.ledger.dispose()


def site_file(tmp_path, text: str = SITE) -> str:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return str(path)


def test_help_lists_the_options_and_help_all_the_settings():
    def run(flag):
        command = [sys.executable, "-m", "slicehub.quota.service", flag]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    out = run("--help")
    for option in ("--ledger-url", "--meter-interval", "--orphan-grace", "--site", "--config"):
        assert f"{option}=<" in out
    assert "--seed-demo\n" in out
    every = run("--help-all")
    assert "--SlicehubQuota.orphan_grace=<Float>" in every
    assert "$SLICEHUB_ORPHAN_GRACE, else 120" in every


def test_settings_come_from_the_environment_a_config_file_and_the_command_line(
    start, tmp_path, monkeypatch
):
    monkeypatch.setenv("SLICEHUB_METER_INTERVAL", "3")
    monkeypatch.setenv("SLICEHUB_ORPHAN_GRACE", "30")
    app = start()
    assert (app.meter_interval, app.orphan_grace) == (3, 30)
    assert (app.site_file, app.seed_demo) == ("", False)
    config = tmp_path / "quota_config.py"
    config.write_text("c.SlicehubQuota.meter_interval = 7\nc.SlicehubQuota.orphan_grace = 9\n")
    app = start(f"--config={config}", "--orphan-grace=11", "--seed-demo")
    assert (app.meter_interval, app.orphan_grace, app.seed_demo) == (7, 11, True)
    monkeypatch.delenv("SLICEHUB_METER_INTERVAL")
    monkeypatch.delenv("SLICEHUB_ORPHAN_GRACE")
    assert (start().meter_interval, start().orphan_grace) == (10, 120)


async def test_migrate_and_seed_an_empty_ledger_with_the_sites_prices(start, tmp_path):
    app = start(f"--site={site_file(tmp_path)}", "--seed-demo")
    await app.migrate()
    app.seed()
    app.check_prices()  # the seeded prices cover the site: the start goes on
    app.seed()  # a restart seeds nothing more
    with app.ledger.session() as db:
        prices = dict(db.execute(select(Price.slice_type, Price.cents_per_hour)).all())
        projects = db.scalars(select(Project.slug).order_by(Project.slug)).all()
        schemes = db.scalar(select(func.count()).select_from(Scheme))
    assert prices == {"h100.1g.10gb": 550, "h100.3g.40gb": 1650}
    assert projects == ["demo-lab", "vision-group"] and schemes == 1


async def test_without_seed_demo_the_ledger_stays_empty(start):
    app = start()
    await app.migrate()
    app.seed()
    app.check_prices()  # no site file: nothing to check
    with app.ledger.session() as db:
        assert db.scalar(select(func.count()).select_from(Scheme)) == 0


async def test_check_prices_refuses_a_slice_type_the_ledger_has_no_price_for(
    start, tmp_path, capsys
):
    site = site_file(tmp_path)
    app = start(f"--site={site}")
    await app.migrate()
    now = clock.utcnow()
    app.ledger.set_price("staff", "h100.1g.10gb", 550, now, now)
    with pytest.raises(SystemExit) as exit_:
        app.check_prices()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"Slicehub cannot start: {site}: slice_types: h100.3g.40gb has no list price in the "
        f"ledger (sqlite:///{tmp_path / 'ledger.sqlite'}). {FIX}\n"
    )


@pytest.mark.parametrize(
    "value, problem",
    [
        ('"5.555"', "has more than two decimals"),
        ("5.5", "is a floating-point number"),
        ('"cheap"', "is not an amount of money"),
        ('"-1"', "is negative"),
    ],
)
async def test_a_bad_price_in_the_site_file_stops_the_start(
    start, tmp_path, capsys, value, problem
):
    site = site_file(tmp_path, f'[slice_types."h100.1g.10gb"]\nprice_per_hour = {value}\n')
    app = start(f"--site={site}", "--seed-demo")
    await app.migrate()
    with pytest.raises(SystemExit) as exit_:
        app.seed()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f'Slicehub cannot start: {site}: slice_types."h100.1g.10gb".price_per_hour: '
    )
    assert problem in err
    assert 'Fix: write the HK$ list price per hour as a string, e.g. "38.00"' in err
    with app.ledger.session() as db:  # refused before anything was seeded
        assert db.scalar(select(func.count()).select_from(Scheme)) == 0
