"""Simultaneous hold requests, decided together: the quota service's group commit.

A class of 200 pressing "Start" in the same second sends 200 hold requests at once. Decided one
transaction each, they queue behind each other's project locks and commits (the last one waits for
all the others: seconds, see bench/results/hold_latency.md). Here they are gathered instead: while
one batch is being decided, every request that arrives joins the next one, and each batch is one
transaction with a fixed number of statements (`slicehub.quota.ledger.Ledger.open_sessions`),
decided in arrival order. A lone request is a batch of one and waits for nothing.

One worker, so batches never contend with each other for the projects' row locks. If a batch
fails as a whole (the database went away, a constraint fired), its requests are decided again
one at a time, so one bad request cannot refuse the others.
"""

from __future__ import annotations

import asyncio
import logging

from .errors import LedgerError
from .hold import HeldSession, HoldRequest
from .ledger import Ledger

log = logging.getLogger("slicehub.quota")


class HoldQueue:
    def __init__(self, ledger: Ledger, max_batch: int = 500):
        self.ledger = ledger
        self.max_batch = max_batch
        self._pending: list[tuple[HoldRequest, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.batches = 0  # decided so far, for the log and the benchmark

    async def hold(self, request: HoldRequest) -> HeldSession:
        """The held session, or raises the `LedgerError` that refused it."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # one turn of the loop first: requests already read and ready to run (a burst
            # that arrived together) join this batch instead of waiting for the next one; a
            # lone request loses nothing by it
            await asyncio.sleep(0)
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._decide(batch)

    async def _decide(self, batch) -> None:
        requests = [r for r, _ in batch]
        try:
            outcomes = await asyncio.to_thread(self.ledger.open_sessions, requests)
        except Exception:
            if len(batch) == 1:
                log.exception("Hold for %s failed", requests[0].username)
                outcomes = [_failure()]
            else:
                log.exception("A batch of %d holds failed; deciding them one at a time", len(batch))
                outcomes = [await self._one(r) for r in requests]
        self.batches += 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller gave up; a hold made for it is released at stop
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _one(self, request: HoldRequest):
        try:
            (outcome,) = await asyncio.to_thread(self.ledger.open_sessions, [request])
        except Exception:
            log.exception("Hold for %s failed", request.username)
            return _failure()
        return outcome


def _failure() -> LedgerError:
    return LedgerError("The ledger could not decide this start; try again in a moment.", 503)
