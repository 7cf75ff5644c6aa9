"""The hub's configuration, composed in one call from `jupyterhub_config.py`:

    from slicehub.hub import configure, overrides
    configure(get_config())
    for path in overrides():  # the operator's jupyterhub_config.d/*.py, after Slicehub's
        load_subconfig(str(path))

From the deployment (`slicehub.settings`: the deployment file, the data dir, the databases, the
site file) it checks what the hub needs before it starts (the deployment file, the site file
against this machine or cluster, the ledger reachable: a problem stops the hub with the file,
the key and the fix), sets the public URL and TLS, sign-in (`slicehub.sign_in`; the embedded
demo's own users only in demo mode), the spawner the site needs, and registers the quota service
with the least-privilege scopes each party needs (the roles below are the documentation of who
may do what). It writes no database: the quota service migrates the ledger, seeds the demo and
checks the list prices in its named start-up steps (`slicehub.quota.service`), and the local
spawner migrates its reservations when it first opens them.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from slicehub.common.hub_watch import HUB_PID_ENV
from slicehub.config_file import ConfigFileError
from slicehub.db import unreachable
from slicehub.deployment import Deployment
from slicehub.quota.site_parking import read_site_parking
from slicehub.settings import Settings, deployment_dir
from slicehub.sign_in import configure_sign_in, group_name
from slicehub.spawners.site import Site, SiteError, check_site
from slicehub.spawners.slurm.batch_api import close_batchspawner_api

DEMO_USERS = {"alice", "bob", "staff"}
DEMO_ADMINS = {"staff"}

# Who may do what in the quota service, by JupyterHub scope (docs/quota.md)
CUSTOM_SCOPES = {
    "custom:quota:staff": {"description": "Read every project, session and warning in the ledger"},
    "custom:quota:holds": {"description": "Open and release session holds (the hub's spawners)"},
    "custom:quota:metrics": {"description": "Scrape the ledger's Prometheus metrics"},
    "custom:quota:parking": {
        "description": "Report servers' activity and park idle sessions (the culler service)"
    },
    "custom:quota:classes": {
        "description": "Read the class windows' plan and release unclaimed pre-warmed servers"
    },
    "custom:scheme:secretariat": {
        "description": "Run the subsidy scheme: check applications, assign reviewers, decide"
    },
    "custom:scheme:committee": {
        "description": "Review the scheme's applications assigned to you: conflicts, scores"
    },
}


def check_site_or_exit(path: Path | str) -> Site:
    """The site file, checked against what this machine or cluster has (`check_site`); on a
    problem, say it in one sentence with the file, the key and the fix, and stop."""
    try:
        return check_site(path)
    except SiteError as e:
        cannot_start(e)


def cannot_start(problem: Exception):
    print(f"Slicehub cannot start: {problem}", file=sys.stderr)
    raise SystemExit(2) from None


def checked(settings: Settings) -> tuple[Deployment, Site, Path]:
    """The deployment, its site and its data dir (made, 0700), or stop: what must hold before
    the hub starts."""
    try:
        deployment = settings.deployment
        data = settings.data_path
    except ConfigFileError as e:
        cannot_start(e)
    site = check_site_or_exit(settings.site_file)
    problem = unreachable(settings.ledger_url)
    if problem:
        where = deployment.path if deployment.ledger_url else "(environment)"
        key = "deployment.ledger_url" if deployment.ledger_url else "SLICEHUB_LEDGER_URL"
        cannot_start(
            ConfigFileError(
                where,
                key,
                f"the ledger cannot be reached ({problem})",
                "start the database, "
                "or correct the URL (postgresql+psycopg://user@host/db, or sqlite:///path)",
            )
        )
    return deployment, site, data


def configure(c, settings: Settings | None = None) -> Site:
    """Fill JupyterHub's config `c` for this deployment; the site it serves."""
    settings = settings or Settings()
    deployment, site, data = checked(settings)
    _hub(c, data, deployment)
    spawner = _spawner(c, settings, site, deployment)
    if deployment.demo:
        _demo_sign_in(c)
        staff_users, staff_groups = DEMO_ADMINS, set()
    else:
        scheme = deployment.scheme
        role_groups = (scheme.secretariat_group, scheme.committee_group)
        configure_sign_in(c, deployment.sign_in, deployment.hub.public_url, role_groups)
        staff_users = set(deployment.sign_in.staff)
        group = deployment.sign_in.staff_group
        staff_groups = {group_name(group)} if group else set()
    _quota_service(c, settings, site, spawner, deployment, staff_users, staff_groups)
    return site


def overrides(settings: Settings | None = None) -> list[Path]:
    """The operator's own JupyterHub settings: `jupyterhub_config.d/*.py` beside the deployment
    file (or where `deployment.overrides` says), in name order, to load after Slicehub's."""
    folder = (settings or Settings()).deployment.overrides
    if folder is None or not folder.is_dir():
        return []
    return sorted(folder.glob("*.py"))


def _hub(c, data: Path, deployment: Deployment) -> None:
    hub = deployment.hub
    c.JupyterHub.bind_url = hub.public_url
    if hub.tls_cert:
        c.JupyterHub.ssl_cert = str(hub.tls_cert)
        c.JupyterHub.ssl_key = str(hub.tls_key)
    if hub.trusted_proxies:  # behind a reverse proxy: its X-Forwarded-* headers are believed
        c.JupyterHub.trusted_downstream_ips = list(hub.trusted_proxies)
    c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")
    # the proxy's token outlives the hub: a hub restarted after a crash is not refused by the
    # proxy that kept serving (slicehub.proxy decides what to do with that proxy)
    c.JupyterHub.proxy_class = "slicehub.proxy.SlicehubProxy"
    # A hub's stop or restart (an upgrade, a crash) never ends anyone's session: servers keep
    # running and are found again; each ends at its session's end. (JupyterHub stops managed
    # services before servers, so a server stopped with the hub could not release its hold.)
    c.JupyterHub.cleanup_servers = False
    c.ConfigurableHTTPProxy.auth_token = _secret(data, "proxy_auth_token")
    # hub pages with links to the quota service's "My usage" and "Running sessions" pages
    c.JupyterHub.template_paths = [str(deployment_dir() / "templates")]


def _spawner(c, settings: Settings, site: Site, deployment: Deployment):
    """The spawner the site needs, its part of the config returned."""
    venv_bin = Path(sys.executable).parent
    if site.slurm is not None:
        # batchspawner's API lets a server's token set any spawner attribute: only the port
        close_batchspawner_api()
        c.JupyterHub.spawner_class = "slicehub-slurm"
        spawner = c.SlurmSliceSpawner
        # where jobs' servers listen: 127.0.0.1 on a one-machine test cluster
        spawner.bind_ip = (
            os.environ.get("SLICEHUB_SLURM_BIND_IP") or deployment.hub.server_bind_ip or "127.0.0.1"
        )
    else:
        c.JupyterHub.spawner_class = "slicehub-local"
        spawner = c.LocalSliceSpawner
        spawner.database_url = settings.slices_url
    spawner.site_file = str(site.path)
    spawner.home_root = str(settings.data_path / "homes")
    if deployment.hub.server_quota_url:
        spawner.server_quota_url = deployment.hub.server_quota_url
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


def _quota_service(c, settings, site, spawner, deployment, staff_users, staff_groups) -> None:
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
        f"--mail-interval={os.environ.get('SLICEHUB_MAIL_INTERVAL', '5')}",
    ]
    if deployment.path is not None:  # its [smtp]: the password stays in its own file
        command.append(f"--deployment={deployment.path}")
    if deployment.demo:  # the embedded demo: something to spend from the first start
        command.append("--seed-demo")
    c.JupyterHub.services = [
        {
            "name": "quota",
            "url": url,
            "command": command,
            "environment": {HUB_PID_ENV: str(os.getpid())},  # slicehub.common.hub_watch
            # what the service may learn of a signed-in user: staff, and their part in the scheme
            "oauth_client_allowed_scopes": [
                "custom:quota:staff",
                "custom:quota:metrics",
                "custom:scheme:secretariat",
                "custom:scheme:committee",
            ],
            # part of the deployment, not a third party: no "authorize access?" page in between
            "oauth_no_confirm": True,
        },
        # a token-only identity for the spawners: it may open and release holds, nothing else
        {"name": "slicehub-spawner", "api_token": token},
        _culler_service(site, deployment, url),
        _classroom_service(site, url),
    ]
    c.JupyterHub.custom_scopes = CUSTOM_SCOPES
    c.JupyterHub.load_roles = [
        # the quota service stops servers whose session ended, sees which servers run, reads
        # a user's groups (a project's member group) for requests made with their token, and
        # asks whether a name is a hub user (a scheme application's team members, reviewers)
        {
            "name": "quota-service",
            "services": ["quota"],
            "scopes": ["servers", "list:users", "read:users:groups", "read:users:name"],
        },
        {
            "name": "slicehub-spawner",
            "services": ["slicehub-spawner"],
            "scopes": ["custom:quota:holds", "access:services!service=quota"],
        },
        # the culler lists ready servers, reads each one's activity, stops the parked ones,
        # and reports readings and parkings to the quota service (slicehub.culler)
        {
            "name": "culler",
            "services": ["culler"],
            "scopes": [
                "list:users",
                "read:users:activity",
                "read:servers",
                "delete:servers",
                "access:servers",
                "custom:quota:parking",
                "access:services!service=quota",
            ],
        },
        # the classroom service pre-warms a class's servers under each rostered student's own
        # account (making the hub user of a student who never signed in), stops the unclaimed,
        # and reads the plan from the quota service (slicehub.classroom); it may not reach the
        # servers themselves (no access:servers)
        {
            "name": "classroom",
            "services": ["classroom"],
            "scopes": [
                "admin:users",
                "list:users",
                "read:servers",
                "servers",
                "custom:quota:classes",
                "access:services!service=quota",
            ],
        },
        {
            "name": "quota-staff",
            "users": sorted(staff_users),
            "groups": sorted(staff_groups),
            "scopes": [
                "custom:quota:staff",
                "custom:quota:metrics",
                "access:services!service=quota",
            ],
        },
        *_scheme_roles(deployment),
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


def _scheme_roles(deployment: Deployment) -> list[dict]:
    """The subsidy scheme's secretariat and committee, by name and by group (the deployment
    file's [scheme]); each reaches the quota service, whose scheme pages check the scope."""
    roles = deployment.scheme
    return [
        {
            "name": f"scheme-{part}",
            "users": sorted(users),
            "groups": [group_name(group)] if group else [],
            "scopes": [f"custom:scheme:{part}", "access:services!service=quota"],
        }
        for part, users, group in (
            ("secretariat", roles.secretariat, roles.secretariat_group),
            ("committee", roles.committee, roles.committee_group),
        )
    ]


def _culler_service(site: Site, deployment: Deployment, quota_url: str) -> dict:
    """jupyterhub-idle-culler with Slicehub's arbiter, checking every server each
    `[parking] check` of the site file (checked here: a bad table stops the hub)."""
    try:
        parking = read_site_parking(site.path)
    except ConfigFileError as e:
        cannot_start(e)
    check = int(parking.check.total_seconds())
    return {
        "name": "culler",
        "command": [
            sys.executable,
            "-m",
            "slicehub.culler",
            f"--cull-every={check}",
            f"--timeout={check}",  # the arbiter decides; this only makes every server count
            "--concurrency=10",
        ],
        "environment": {
            HUB_PID_ENV: str(os.getpid()),  # it stops when this hub is gone
            "SLICEHUB_QUOTA_URL": f"{quota_url}/services/quota/",
            "SLICEHUB_SERVERS_URL": servers_url(deployment.hub.public_url),
        },
    }


def _classroom_service(site: Site, quota_url: str) -> dict:
    """The classroom service: pre-warmed class servers, Slurm reservations (slicehub.classroom);
    a tick every $SLICEHUB_CLASSROOM_INTERVAL seconds (default 15)."""
    return {
        "name": "classroom",
        "command": [
            sys.executable,
            "-m",
            "slicehub.classroom",
            f"--site={site.path}",
            f"--interval={os.environ.get('SLICEHUB_CLASSROOM_INTERVAL', '15')}",
        ],
        "environment": {
            HUB_PID_ENV: str(os.getpid()),  # it stops when this hub is gone
            "SLICEHUB_QUOTA_URL": f"{quota_url}/services/quota/",
            # what Slurm's commands need (the hub's, as its spawners have them)
            **{k: os.environ[k] for k in ("PATH", "SLURM_CONF", "LANG") if k in os.environ},
        },
    }


def servers_url(public_url: str) -> str:
    """Where this machine reaches the proxy that serves the users' servers: the hub's public
    URL, with an any-address bind (0.0.0.0, ::) reached on the loopback."""
    u = urlparse(public_url)
    host = u.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}"


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
