"""`python -m slicehub.culler [idle-culler options]`: jupyterhub-idle-culler with Slicehub's
arbiter, as the hub's managed service "culler" (hub.py sets its options and environment:
`SLICEHUB_QUOTA_URL`, `SLICEHUB_SERVERS_URL`, `SLICEHUB_PARK_SAVE_WAIT`).

It stops on SIGTERM and SIGINT: a service started from a non-interactive shell inherits SIGINT
ignored, and the stock culler then made every hub shutdown wait ~30 s for it (field notes)."""

from __future__ import annotations

import logging
import signal
import sys

from jupyterhub_idle_culler import IdleCuller
from tornado.ioloop import IOLoop

from .arbiter import Arbiter


def main(argv=None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )
    culler = IdleCuller.instance()
    culler.initialize(argv)
    culler.config_file = ""  # no idle_culler_config.py from wherever it was started
    culler.cull_arbiter_hook = Arbiter.from_environment()

    def stop(*_):
        loop = IOLoop.current()
        loop.add_callback(loop.stop)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    culler.start()
    sys.exit(0)


if __name__ == "__main__":
    main()
