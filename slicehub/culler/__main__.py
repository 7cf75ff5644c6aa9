"""`python -m slicehub.culler [idle-culler options]`: jupyterhub-idle-culler with Slicehub's
arbiter, as the hub's managed service "culler" (hub.py sets its options and environment:
`SLICEHUB_QUOTA_URL`, `SLICEHUB_SERVERS_URL`, `SLICEHUB_PARK_SAVE_WAIT`).

It stops on SIGTERM and SIGINT: a service started from a non-interactive shell inherits SIGINT
ignored, and the stock culler then made every hub shutdown wait ~30 s for it (field notes). And
it stops when the hub that started it is gone (`slicehub.common.hub_watch.hub_gone`), as the
quota service does: a hub killed with `kill -9` leaves no culler of its own behind, so only the
next hub's culler reads and parks."""

from __future__ import annotations

import logging
import signal
import sys

from jupyterhub_idle_culler import IdleCuller
from tornado.ioloop import IOLoop

from slicehub.common.hub_watch import hub_gone, hub_pid

from .arbiter import Arbiter


def main(argv=None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )
    culler = IdleCuller.instance()
    culler.initialize(argv)
    culler.config_file = ""  # no idle_culler_config.py from wherever it was started
    culler.cull_arbiter_hook = Arbiter.from_environment()

    loop = IOLoop.current()
    hub = hub_pid()  # the first thing: the hub may die while this process starts

    def stop(*_):
        loop.add_callback(loop.stop)

    async def watch_hub():
        await hub_gone(hub)
        logging.getLogger("slicehub.culler").warning(
            "The hub (pid %s) that started this culler is gone; stopping", hub
        )
        loop.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    loop.add_callback(watch_hub)
    culler.start()
    sys.exit(0)


if __name__ == "__main__":
    main()
