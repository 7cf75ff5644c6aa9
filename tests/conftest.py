"""Shared fixtures. Each block says who owns it; add new fixtures in a block of your own."""

# ---- real-JupyterHub harness (tests/hubprocess.py) ----------------------------------------------
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import hubprocess` from any test

from hubprocess import REPO_ROOT, HubProcess


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def hub_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., HubProcess]]:
    """`make(config_file, env=None)` starts a real hub in `tmp_path/hub<N>` and returns it.

    Teardown stops every hub made and kills whatever it left running (proxy, single-user
    servers with `cleanup_servers = False`).
    """
    hubs: list[HubProcess] = []

    def make(config_file: Path, env: Mapping[str, str] | None = None) -> HubProcess:
        hub = HubProcess(config_file, tmp_path / f"hub{len(hubs)}", env=env)
        hubs.append(hub)
        return hub.start()

    yield make
    errors = []
    for hub in reversed(hubs):
        try:
            hub.close()
        except Exception as e:  # every hub gets closed even when one fails
            errors.append(e)
    if errors:
        raise errors[0]


# ---- end of real-JupyterHub harness ------------------------------------------------------------


# ---- real PostgreSQL (tests/pg.py, scripts/postgres.sh) ----------------------------------------
import os  # noqa: E402  (each block keeps its own imports)

import pg  # noqa: E402

POSTGRES_FIXTURES = {"postgres_server", "pg_url"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a PostgreSQL fixture get the `postgres` marker, so `-m postgres` (and
    `-m "not postgres"`) select them without each test saying so."""
    for item in items:
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """SQLAlchemy URL of the running test server (base database slicehub_test), installing and
    starting Debian's PostgreSQL 15 if needed. In CI (`CI` set) any problem fails; elsewhere a
    machine that cannot install it (not root, no apt) skips, saying why."""
    try:
        return pg.ensure_postgres()
    except pg.PostgresUnavailable as e:
        if os.environ.get("CI") or not e.skippable:
            pytest.fail(f"PostgreSQL unavailable: {e.reason}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable: {e.reason}")


@pytest.fixture
def pg_url(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new, empty database on the test server, owned by slicehub; dropped afterwards
    (its sessions ended first), so a test's leftover connections do not matter."""
    url = pg.fresh_database(request.node.name)
    yield url
    pg.drop_database(url)


# ---- end of real PostgreSQL ---------------------------------------------------------------------


# ---- a real hub with the quota service (integration and browser tests) ------------------------
@pytest.fixture
def quota_hub(hub_factory, tmp_path):
    """The demo's hub config with its quota service metering every second, 1-minute sessions
    allowed, users alice, bob and staff: (hub, its data dir)."""
    site = tmp_path / "site.toml"
    site.write_text(
        (REPO_ROOT / "hub_config" / "demo-site.toml")
        .read_text()
        .replace("min_minutes = 15", "min_minutes = 1")
    )
    cfg = tmp_path / "config.py"
    cfg.write_text(
        f"load_subconfig({str(REPO_ROOT / 'hub_config' / 'jupyterhub_config.py')!r})\n"
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


# ---- end of the quota hub ----------------------------------------------------------------------


# ---- real OpenLDAP directory (tests/ldapdir.py, scripts/ldap.sh) -------------------------------
import ldapdir  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ldap: needs a real OpenLDAP directory (started by scripts/ldap.sh)"
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    """Tests that use `ldap_directory` get the `ldap` marker, so `-m ldap` (and `-m "not ldap"`)
    select them without each test saying so."""
    if "ldap_directory" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.ldap)


@pytest.fixture(scope="session")
def ldap_directory() -> ldapdir.LdapDirectory:
    """The running test directory (URL, port, base DN, bind DN template, the staff and project
    groups' DNs and members, the users with their test-only passwords), installing Debian's
    slapd and starting it if needed. In CI (`CI` set) any problem fails; elsewhere a machine
    that cannot install or start it (not root, no apt) skips, saying why."""
    try:
        return ldapdir.ensure_ldap()
    except ldapdir.LdapUnavailable as e:
        if os.environ.get("CI") or not e.skippable:
            pytest.fail(f"OpenLDAP unavailable: {e.reason}", pytrace=False)
        pytest.skip(f"OpenLDAP unavailable: {e.reason}")


# ---- end of real OpenLDAP directory -------------------------------------------------------------


# ---- real SMTP server (tests/smtpserver.py, aiosmtpd) ------------------------------------------
from smtpserver import SmtpServer  # noqa: E402


@pytest.fixture(scope="session")
def smtp_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """The test SMTP server's process, started once per test session."""
    server = SmtpServer(tmp_path_factory.mktemp("smtp")).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_server_process: SmtpServer) -> SmtpServer:
    """The running test SMTP server, accepting, its inbox empty: host, port (plain, STARTTLS
    offered), ssl_port (TLS from the start), cert (trust it with SSL_CERT_FILE), username and
    password; `received()`/`messages()` what came in; `refuse(reply)`, `accept()`, `stop()`,
    `start()` to change how it answers (the next test finds it running and accepting)."""
    smtp_server_process.reset()
    return smtp_server_process


# ---- end of real SMTP server --------------------------------------------------------------------
