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
