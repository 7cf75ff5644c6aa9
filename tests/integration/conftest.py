"""Fixtures shared by the integration tests."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quota_hub(hub_factory, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        (REPO / "hub_config" / "demo-site.toml")
        .read_text()
        .replace("min_minutes = 15", "min_minutes = 1")
    )
    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.LocalSliceSpawner.quota_timeout = 3\n"
    )
    data = tmp_path / "data"
    hub = hub_factory(
        cfg,
        env={
            "SLICEHUB_DATA_DIR": str(data),
            "SLICEHUB_SITE": str(site),
            "SLICEHUB_METER_INTERVAL": "1",
        },
    )
    for u in ("alice", "bob", "staff"):
        hub.create_user(u)
    return hub, data
