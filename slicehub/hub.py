"""The hub's configuration, composed in one call from a deployment's `jupyterhub_config.py`:

    from slicehub.hub import configure
    configure(c)

From the deployment's `Settings` (data dir, databases, site file: `slicehub.settings`) it checks
the site file (a bad one stops the hub with the file, the key and the fix), picks the spawner the
site needs, and registers the quota service with the least-privilege scopes each party needs
(the list below is the documentation of who may do what). It writes no database: the quota
service migrates the ledger, seeds the embedded demo and checks the list prices in its own
named start-up steps (`slicehub.quota.service`), and the local spawner migrates its
reservations when it first opens them.

What a deployment may change after the call, as plain JupyterHub config: the authenticator
(the embedded demo signs in alice, bob and staff with one password), the public URL, timeouts.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

from slicehub.settings import Settings, deployment_dir
from slicehub.spawners.site import Site, SiteError, check_site
from slicehub.spawners.slurm.batch_api import close_batchspawner_api

DEMO_USERS = {"alice", "bob", "staff"}
DEMO_ADMINS = {"staff"}

# Who may do what in the quota service, by JupyterHub scope (docs/quota.md)
CUSTOM_SCOPES = {
    "custom:quota:staff": {"description": "Read every project, session and warning in the ledger"},
    "custom:quota:holds": {"description": "Open and release session holds (the hub's spawners)"},
    "custom:quota:metrics": {"description": "Scrape the ledger's Prometheus metrics"},
}


def check_site_or_exit(path: Path | str) -> Site:
    """The site file, checked against what this machine or cluster has (`check_site`); on a
    problem, say it in one sentence with the file, the key and the fix, and stop."""
    try:
        return check_site(path)
    except SiteError as e:
        print(f"Slicehub cannot start: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def configure(c, settings: Settings | None = None) -> Site:
    """Fill JupyterHub's config `c` for this deployment; the site it serves."""
    settings = settings or Settings()
    site = check_site_or_exit(settings.site_file)
    data = settings.data_path
    _hub(c, data)
    spawner = _spawner(c, settings, site)
    _demo_sign_in(c)
    _quota_service(c, settings, site, spawner)
    return site


def _hub(c, data: Path) -> None:
    c.JupyterHub.bind_url = "http://127.0.0.1:8000"
    c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")
    # the proxy's token outlives the hub: a hub restarted after a crash is not refused by the
    # proxy that kept serving (slicehub.proxy decides what to do with that proxy)
    c.JupyterHub.proxy_class = "slicehub.proxy.SlicehubProxy"
    c.ConfigurableHTTPProxy.auth_token = _secret(data, "proxy_auth_token")
    # hub pages with links to the quota service's "My usage" and "Running sessions" pages
    c.JupyterHub.template_paths = [str(deployment_dir() / "templates")]


def _spawner(c, settings: Settings, site: Site):
    """The spawner the site needs, its part of the config returned."""
    venv_bin = Path(sys.executable).parent
    if site.slurm is not None:
        # batchspawner's API lets a server's token set any spawner attribute: only the port
        close_batchspawner_api()
        c.JupyterHub.spawner_class = "slicehub-slurm"
        spawner = c.SlurmSliceSpawner
        spawner.batchspawner_singleuser_cmd = str(venv_bin / "batchspawner-singleuser")
        # where jobs' servers listen: 127.0.0.1 on a one-machine test cluster
        spawner.bind_ip = os.environ.get("SLICEHUB_SLURM_BIND_IP", "127.0.0.1")
    else:
        c.JupyterHub.spawner_class = "slicehub-local"
        spawner = c.LocalSliceSpawner
        spawner.database_url = settings.slices_url
    spawner.site_file = str(site.path)
    spawner.home_root = str(settings.data_path / "homes")
    c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 60
    if site.run_as == "hub-user" and os.geteuid() == 0:
        c.Spawner.args = ["--allow-root"]
    return spawner


def _demo_sign_in(c) -> None:
    """The embedded demo's users: alice and bob (researchers), staff (admin), one password."""
    c.JupyterHub.authenticator_class = "slicehub.spawners.demo_auth.DemoAuthenticator"
    c.DemoAuthenticator.demo_password = os.environ.get("SLICEHUB_DEMO_PASSWORD", "slicehub-demo")
    c.Authenticator.allowed_users = set(DEMO_USERS)
    c.Authenticator.admin_users = set(DEMO_ADMINS)


def _quota_service(c, settings: Settings, site: Site, spawner) -> None:
    url = f"http://127.0.0.1:{int(os.environ.get('SLICEHUB_QUOTA_PORT') or _free_port())}"
    token = _secret(settings.data_path, "quota_spawner_token")
    command = [
        sys.executable,
        "-m",
        "slicehub.quota.service",
        f"--ledger-url={settings.ledger_url}",
        f"--site={site.path}",
        f"--meter-interval={os.environ.get('SLICEHUB_METER_INTERVAL', '10')}",
        f"--orphan-grace={os.environ.get('SLICEHUB_ORPHAN_GRACE', '120')}",
    ]
    if site.run_as == "hub-user":  # the embedded demo: something to spend from the first start
        command.append("--seed-demo")
    c.JupyterHub.services = [
        {
            "name": "quota",
            "url": url,
            "command": command,
            "oauth_client_allowed_scopes": ["custom:quota:staff", "custom:quota:metrics"],
            # part of the deployment, not a third party: no "authorize access?" page in between
            "oauth_no_confirm": True,
        },
        # a token-only identity for the spawners: it may open and release holds, nothing else
        {"name": "slicehub-spawner", "api_token": token},
    ]
    c.JupyterHub.custom_scopes = CUSTOM_SCOPES
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
            "users": sorted(DEMO_ADMINS),
            "scopes": [
                "custom:quota:staff",
                "custom:quota:metrics",
                "access:services!service=quota",
            ],
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
    spawner.quota_url = f"{url}/services/quota/"
    spawner.quota_token = token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _secret(data: Path, name: str) -> str:
    """A token kept in the data dir (0600), so it survives hub restarts."""
    path = data / name
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
