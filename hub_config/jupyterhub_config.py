"""Slicehub's JupyterHub configuration: the embedded default (one machine, SQLite), or the test
Slurm cluster when the site file has a [slurm] table (slurm-site.toml: SlurmSliceSpawner).

Environment:
  SLICEHUB_SITE           site file (default: demo-site.toml beside this file)
  SLICEHUB_SLURM_BIND_IP  where Slurm jobs' servers listen (default: 127.0.0.1, the test
                          cluster is this machine; a centre's compute nodes: 0.0.0.0)
  SLICEHUB_DATA_DIR       where the hub keeps its databases, cookie secret and demo homes
                          (default: .data/ at the repository root)
  SLICEHUB_DEMO_PASSWORD  the demo users' shared password (default: slicehub-demo)
  SLICEHUB_LEDGER_URL     the ledger database (default: SQLite in the data dir)
  SLICEHUB_METER_INTERVAL seconds between metering ticks (default: 10)
  SLICEHUB_ORPHAN_GRACE   seconds a ledger session may have no server on the hub before the
                          quota service closes it (default: 120)

The site file is checked before the hub starts: a bad value stops it with the file, key and fix.
"""

import os
import secrets
import socket
import sys
from pathlib import Path

from slicehub.cli import check_site_or_exit
from slicehub.quota.demo import missing_prices, seed_if_empty
from slicehub.quota.ledger import Ledger

c = get_config()  # noqa: F821 (provided by JupyterHub)

here = Path(__file__).resolve().parent
repo = here.parent
site_file = Path(os.environ.get("SLICEHUB_SITE", here / "demo-site.toml")).resolve()
data_dir = Path(os.environ.get("SLICEHUB_DATA_DIR", repo / ".data")).resolve()
data_dir.mkdir(parents=True, exist_ok=True)

site = check_site_or_exit(site_file)

c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
# hub pages with links to the quota service's "My usage" and "Running sessions" pages
c.JupyterHub.template_paths = [str(here / "templates")]
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
c.ConfigurableHTTPProxy.command = [str(repo / "node_modules" / ".bin" / "configurable-http-proxy")]

venv_bin = Path(sys.executable).parent
if site.slurm is not None:
    from slicehub.spawners.slurm.batch_api import close_batchspawner_api

    # batchspawner's API lets a server's token set any spawner attribute: only the port, here
    close_batchspawner_api()
    c.JupyterHub.spawner_class = "slicehub-slurm"
    spawner = c.SlurmSliceSpawner
    spawner.batchspawner_singleuser_cmd = str(venv_bin / "batchspawner-singleuser")
    spawner.bind_ip = os.environ.get("SLICEHUB_SLURM_BIND_IP", "127.0.0.1")
else:
    c.JupyterHub.spawner_class = "slicehub-local"
    spawner = c.LocalSliceSpawner
    spawner.database_url = f"sqlite:///{data_dir / 'slicehub.sqlite'}"
spawner.site_file = str(site_file)
spawner.home_root = str(data_dir / "homes")
c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
if site.run_as == "hub-user" and os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]

# Demo users: alice and bob (researchers), staff (admin), one shared password.
c.JupyterHub.authenticator_class = "slicehub.spawners.demo_auth.DemoAuthenticator"
c.DemoAuthenticator.demo_password = os.environ.get("SLICEHUB_DEMO_PASSWORD", "slicehub-demo")
c.Authenticator.allowed_users = {"alice", "bob", "staff"}
c.Authenticator.admin_users = {"staff"}

# -- the quota service: a hub-managed service that meters, warns, enforces and answers --------
ledger_url = os.environ.get("SLICEHUB_LEDGER_URL", f"sqlite:///{data_dir / 'ledger.sqlite'}")
ledger = Ledger(ledger_url)
ledger.upgrade()
if site.run_as == "hub-user":  # the embedded demo: something to spend from the first start
    seed_if_empty(ledger, {name: st.price_cents for name, st in site.slice_types.items()})
unpriced = missing_prices(ledger, site.slice_types)
ledger.dispose()
if unpriced:
    sys.exit(
        f"Slicehub cannot start: {site_file}: slice_types: {', '.join(unpriced)} "
        f"has no list price in the ledger ({ledger_url}). "
        "Fix: slicehub admin price set <type> --per-hour <HK$> --from <date>"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _secret(name: str) -> str:
    """A token kept in the data dir (0600), so it survives hub restarts."""
    path = data_dir / name
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


quota_url = f"http://127.0.0.1:{int(os.environ.get('SLICEHUB_QUOTA_PORT') or _free_port())}"
spawner_token = _secret("quota_spawner_token")
c.JupyterHub.services = [
    {
        "name": "quota",
        "url": quota_url,
        "command": [sys.executable, "-m", "slicehub.quota.service"],
        "environment": {
            "SLICEHUB_LEDGER_URL": ledger_url,
            "SLICEHUB_METER_INTERVAL": os.environ.get("SLICEHUB_METER_INTERVAL", "10"),
            "SLICEHUB_ORPHAN_GRACE": os.environ.get("SLICEHUB_ORPHAN_GRACE", "120"),
        },
        "oauth_client_allowed_scopes": ["custom:quota:staff", "custom:quota:metrics"],
        # part of the deployment, not a third party: no "authorize access?" page in between
        "oauth_no_confirm": True,
    },
    # a token-only identity for the spawners: it may open and release holds, nothing else
    {"name": "slicehub-spawner", "api_token": spawner_token},
]
c.JupyterHub.custom_scopes = {
    "custom:quota:staff": {"description": "Read every project, session and warning in the ledger"},
    "custom:quota:holds": {"description": "Open and release session holds (the hub's spawners)"},
    "custom:quota:metrics": {"description": "Scrape the ledger's Prometheus metrics"},
}
c.JupyterHub.load_roles = [
    # the quota service stops servers whose session ended, and sees which servers run
    {"name": "quota-service", "services": ["quota"], "scopes": ["servers", "list:users"]},
    {
        "name": "slicehub-spawner",
        "services": ["slicehub-spawner"],
        "scopes": ["custom:quota:holds", "access:services!service=quota"],
    },
    {
        "name": "quota-staff",
        "users": ["staff"],
        "scopes": ["custom:quota:staff", "custom:quota:metrics", "access:services!service=quota"],
    },
    {"name": "user", "scopes": ["self", "access:services!service=quota"]},
    # a server's own token (its kernels' too) may read its user's sessions in the ledger
    # (`%slicehub`'s money left), besides what JupyterHub's default server role grants
    {
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            "access:services!service=quota",
        ],
    },
]
spawner.quota_url = f"{quota_url}/services/quota/"
spawner.quota_token = spawner_token
