"""The quota service's loop that opens progress reports: every `interval` seconds (5 min by
default) it asks the workflow to open the report of every period that has ended
(`SchemeWorkflow.open_due_reports`, which opens each once, pre-filled, with its mail to the
PI). A failing pass is logged and retried with backoff, never in a tight loop; `stop` ends the
loop after the pass in progress.
"""

from __future__ import annotations

import asyncio
import logging

from slicehub.common import clock

from .workflow import SchemeWorkflow

log = logging.getLogger("slicehub.quota")

LONGEST_WAIT = 3600.0  # seconds between tries while passes keep failing


class ReportOpener:
    """Opens due progress reports on `ledger` every `interval` seconds until `stop`."""

    def __init__(self, ledger, interval: float = 300.0):
        self.workflow = SchemeWorkflow(ledger)
        self.interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        delay = self.interval
        while not self._stopping.is_set():
            try:
                opened = await asyncio.to_thread(self.workflow.open_due_reports, clock.utcnow())
                if opened:
                    log.info("Opened %d progress report(s) whose period ended", len(opened))
                delay = self.interval
            except Exception:  # a bug or the database: logged; CancelledError goes up
                log.exception("Opening due progress reports failed; trying again in %.0f s", delay)
                delay = min(delay * 2, max(LONGEST_WAIT, self.interval))
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
