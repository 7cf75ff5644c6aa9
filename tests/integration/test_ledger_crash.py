"""kill -9 during metering, in a bounded loop of trials: after a restart no charge is lost,
none is doubled and no hold leaks.

A real metering process (`slicehub.quota.service`'s Meter, on the ledger database) is killed with
SIGKILL at a random moment, possibly mid-transaction, then started again; two metering processes
also run at once for a while (as after a hub killed with -9 leaves its service behind). At the end
every session is released and the ledger is checked: charges tile each session without gap or
overlap and add up to the running-total rule, and nothing is left held.
"""

import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from slicehub.common import clock
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Session as LedgerSession
from tests.unit.test_ledger_properties import check_ledger

pytestmark = pytest.mark.integration

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from slicehub.quota.ledger import Ledger
    from slicehub.quota.meter_loop import Meter

    ledger = Ledger(sys.argv[1])
    asyncio.run(Meter(ledger, None, 0.02).run())
    """
)


def start_worker(url):
    return subprocess.Popen([sys.executable, "-c", WORKER, url])


def test_kill_9_during_metering_loses_and_doubles_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger = Ledger(url)
    ledger.upgrade()
    now = clock.utcnow()
    start = now - timedelta(minutes=5)
    ledger.add_scheme("staff", "scheme", 7000, 10**9, start)
    ledger.add_project(
        "staff",
        "lab",
        scheme="scheme",
        name="Lab",
        organisation="U",
        pi="pi",
        valid_from=start,
        valid_until=now + timedelta(days=1),
        allowed_slice_types=["*"],
        max_concurrent_sessions=100,
        now=start,
    )
    ledger.add_grant("staff", "lab", 10**7, start, now + timedelta(days=1), start)
    ledger.set_price("staff", "h100.1g.10gb", 55_000, start, start)
    ledger.set_price("staff", "h100.1g.10gb", 72_000, now + timedelta(seconds=3), start)  # mid-run
    for i in range(40):
        ledger.add_member("staff", "lab", f"u{i}", start)
        ledger.open_session("lab", f"u{i}", "", "h100.1g.10gb", timedelta(hours=1), clock.utcnow())
    rng = random.Random(7)
    workers = [start_worker(url)]
    try:
        for trial in range(8):
            time.sleep(rng.uniform(0.05, 0.6))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            workers.append(start_worker(url))
            if trial % 3 == 0:  # a second metering process at once, for a while
                workers.append(start_worker(url))
            check_ledger(ledger, clock.utcnow())
        time.sleep(0.5)
    finally:  # never leave a metering process behind, whatever failed
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait()
    with ledger.session() as db:
        ids = db.scalars(select(LedgerSession.id)).all()
    for sid in ids:
        ledger.close_session(sid, clock.utcnow())
    check_ledger(ledger, clock.utcnow())
    with ledger.session() as db:
        sessions = db.scalars(select(LedgerSession)).all()
        assert all(s.status == "stopped" for s in sessions)  # no hold leaked
        assert all(s.charged_list_cents > 0 for s in sessions)  # metering did happen
    bal = ledger.balance("lab", clock.utcnow())
    assert bal.subsidy_held_cents == 0
    ledger.dispose()
