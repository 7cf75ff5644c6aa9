"""Where a Slicehub deployment keeps its state, said once: the data directory, the ledger's and
the slice reservations' databases, the site file, the deployment file and the project's own
deployment files.

Every part that needs one of these asks `Settings` (the hub's configuration, the quota service,
the `slicehub` command); none computes a default of its own. Each value is taken from, in this
order: its environment variable, the deployment file (`slicehub.deployment`), its one default.

    SLICEHUB_DEPLOYMENT  the deployment file (default: /etc/slicehub/deployment.toml if present)
    SLICEHUB_DATA_DIR    the data directory (default: .data in the working directory)
    SLICEHUB_LEDGER_URL  the ledger database (default: SQLite ledger.sqlite in the data dir)
    SLICEHUB_SLICES_URL  the slice reservations (default: SQLite slicehub.sqlite in the data dir)
    SLICEHUB_SITE        the site file (default: the embedded demo's, demo-site.toml)

The deployment's files (`jupyterhub_config.py`, the site files) are installed with the package
under `<prefix>/share/slicehub/hub_config` (`make venv` links the repository's hub_config/
there), so an installed wheel and a checkout find them the same way.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from traitlets import Unicode, default
from traitlets.config import Configurable

from .deployment import Deployment, deployment_file, load_deployment


def deployment_dir() -> Path:
    """The installed deployment files (hub_config/ of the source tree)."""
    return Path(sysconfig.get_path("data")) / "share" / "slicehub" / "hub_config"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Settings(Configurable):
    """The deployment's paths and database URLs; `Settings()` reads the environment and the
    deployment file (a bad one raises ConfigFileError with the file, the key and the fix)."""

    deployment_path = Unicode(
        config=True,
        help="""Path of the deployment file (TOML): the operator's settings.

        Default: $SLICEHUB_DEPLOYMENT, else /etc/slicehub/deployment.toml when it exists, else
        none (a lab server: PAM sign-in). Example: "/etc/slicehub/deployment.toml".
        """,
    )

    _deployment: Deployment | None = None

    data_dir = Unicode(
        config=True,
        help="""Directory where Slicehub keeps its state: the SQLite databases (unless URLs say
        otherwise), the hub's cookie secret and tokens, and demo users' homes.

        Default: $SLICEHUB_DATA_DIR, else .data in the working directory.
        Example: "/var/lib/slicehub".
        """,
    )

    ledger_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the subsidy ledger.

        Default: $SLICEHUB_LEDGER_URL, else SQLite ledger.sqlite in data_dir.
        Example: "postgresql+psycopg://slicehub@db/slicehub".
        """,
    )

    slices_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the local slice reservations (LocalSliceSpawner only).

        Default: $SLICEHUB_SLICES_URL, else SQLite slicehub.sqlite in data_dir.
        """,
    )

    site_file = Unicode(
        config=True,
        help="""Path of the site file (TOML): what this deployment offers.

        Default: $SLICEHUB_SITE, else the embedded demo's demo-site.toml.
        Example: "/etc/slicehub/site.toml".
        """,
    )

    @default("deployment_path")
    def _deployment_path_default(self) -> str:
        found = deployment_file()
        return str(found) if found else ""

    @property
    def deployment(self) -> Deployment:
        """The deployment file, read and checked once."""
        if self._deployment is None:
            self._deployment = load_deployment(self.deployment_path or None)
        return self._deployment

    @default("data_dir")
    def _data_dir_default(self) -> str:
        chosen = os.environ.get("SLICEHUB_DATA_DIR") or self.deployment.data_dir or ".data"
        return str(Path(chosen).resolve())

    @default("ledger_url")
    def _ledger_url_default(self) -> str:
        return (
            os.environ.get("SLICEHUB_LEDGER_URL")
            or self.deployment.ledger_url
            or sqlite_url(Path(self.data_dir) / "ledger.sqlite")
        )

    @default("slices_url")
    def _slices_url_default(self) -> str:
        return os.environ.get("SLICEHUB_SLICES_URL") or sqlite_url(
            Path(self.data_dir) / "slicehub.sqlite"
        )

    @default("site_file")
    def _site_file_default(self) -> str:
        chosen = (
            os.environ.get("SLICEHUB_SITE")
            or self.deployment.site
            or deployment_dir() / "demo-site.toml"
        )
        return str(Path(chosen).resolve())

    @property
    def data_path(self) -> Path:
        """The data directory, created (0700) if missing."""
        path = Path(self.data_dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path
