"""Slicehub's JupyterHub configuration: the embedded default (one machine, SQLite).

Environment:
  SLICEHUB_SITE           site file (default: demo-site.toml beside this file)
  SLICEHUB_DATA_DIR       where the hub keeps its databases, cookie secret and demo homes
                          (default: .data/ at the repository root)
  SLICEHUB_DEMO_PASSWORD  the demo users' shared password (default: slicehub-demo)

The site file is checked before the hub starts: a bad value stops it with the file, key and fix.
"""

import os
import sys
from pathlib import Path

from spawners.cli import check_site_or_exit

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
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
c.ConfigurableHTTPProxy.command = [str(repo / "node_modules" / ".bin" / "configurable-http-proxy")]

c.JupyterHub.spawner_class = "slicehub-local"
c.LocalSliceSpawner.site_file = str(site_file)
c.LocalSliceSpawner.database_url = f"sqlite:///{data_dir / 'slicehub.sqlite'}"
c.LocalSliceSpawner.home_root = str(data_dir / "homes")
c.Spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
if site.run_as == "hub-user" and os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]

# Demo users: alice and bob (researchers), staff (admin), one shared password.
c.JupyterHub.authenticator_class = "spawners.demo_auth.DemoAuthenticator"
c.DemoAuthenticator.demo_password = os.environ.get("SLICEHUB_DEMO_PASSWORD", "slicehub-demo")
c.Authenticator.allowed_users = {"alice", "bob", "staff"}
c.Authenticator.admin_users = {"staff"}
