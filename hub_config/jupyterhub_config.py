"""Slicehub's JupyterHub configuration: the embedded default (one machine, SQLite), or the
test Slurm cluster when the site file has a [slurm] table (slurm-site.toml: SlurmSliceSpawner).

Everything is composed by `slicehub.hub.configure` from the deployment's settings
(`slicehub.settings`: SLICEHUB_DATA_DIR, SLICEHUB_SITE, SLICEHUB_LEDGER_URL, ...). Also read:
  SLICEHUB_SLURM_BIND_IP  where Slurm jobs' servers listen (default 127.0.0.1: the test
                          cluster is this machine; a centre's compute nodes: 0.0.0.0)
  SLICEHUB_DEMO_PASSWORD  the demo users' shared password (default: slicehub-demo)
  SLICEHUB_METER_INTERVAL seconds between metering ticks (default: 10)
  SLICEHUB_ORPHAN_GRACE   seconds a ledger session may have no server on the hub before the
                          quota service closes it (default: 120)

The site file is checked before the hub starts: a bad value stops it with the file, key and fix.
"""

from slicehub.hub import configure

configure(get_config())  # noqa: F821 (provided by JupyterHub)
