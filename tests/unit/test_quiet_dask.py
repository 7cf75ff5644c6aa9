"""An idle Dask cluster of the GPU kernel ticks slower than Dask's defaults (the kernel's
QUIET_DASK: measured 6.4% -> 1.6% of a core for an idle pre-warmed class server), and a value the
user set in their own Dask config is never overridden."""

import copy

import dask
import pytest

from slicehub.extensions.kernel import quiet_dask


@pytest.fixture
def config():
    """Dask's config and defaults as they were, restored afterwards."""
    saved, defaults = copy.deepcopy(dask.config.config), copy.deepcopy(dask.config.defaults)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)
    dask.config.defaults[:] = defaults


def test_the_quiet_clocks_are_the_defaults_and_the_users_own_values_stay(config):
    with dask.config.set({"distributed.admin.system-monitor.interval": "7s"}):
        quiet_dask()
        assert dask.config.get("distributed.admin.tick.interval") == "1s"
        assert dask.config.get("distributed.worker.profile.interval") == "100ms"
        assert dask.config.get("distributed.scheduler.work-stealing-interval") == "500ms"
        assert dask.config.get("distributed.admin.system-monitor.interval") == "7s"  # theirs
        # the memory monitor, which spills and pauses workers, keeps Dask's own clock
        assert dask.config.get("distributed.worker.memory.monitor-interval") == "100ms"
