"""The scheme's fund on a real PostgreSQL: twelve approvals decided at once from twelve threads,
each its own transaction, against a fund that affords five; the scheme's row lock lets exactly
five pass and refuses the others with the amounts (slicehub.quota.scheme.fund)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from slicehub.quota.errors import LedgerError
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Grant, Member, Project
from slicehub.quota.scheme.fund import committed
from slicehub.quota.scheme.models import Application
from slicehub.quota.scheme.workflow import SchemeWorkflow
from tests.unit.rules_ledger import T0, H
from tests.unit.scheme_ledger import CRITERIA, under_review

N, AFFORDABLE, EACH = 12, 5, 700_00  # 100 GPU-hours at HK$10.00, 70% subsidy


def test_concurrent_approvals_pass_exactly_as_far_as_the_fund_goes(pg_url):
    lg = Ledger(pg_url, pool_size=N, max_overflow=N)
    try:
        lg.upgrade()
        scheme = lg.add_scheme("staff", "s", 7000, AFFORDABLE * EACH, T0)
        lg.set_price("staff", "h100.1g.10gb", 1000, T0, T0)
        wf = SchemeWorkflow(lg)
        wf.configure_scheme("staff", "s", T0, criteria=CRITERIA)
        apps = [under_review(wf, title=f"Study {i}") for i in range(N)]
        barrier = threading.Barrier(N)

        def approve(app_id: int) -> str:
            barrier.wait(timeout=10)
            try:
                wf.decide("sec", app_id, "approved", T0 + H)
                return "approved"
            except LedgerError as e:
                assert e.status == 409
                return str(e)

        with ThreadPoolExecutor(N) as pool:
            results = list(pool.map(approve, apps))
        passed = [a for a, r in zip(apps, results, strict=True) if r == "approved"]
        refused = [r for r in results if r != "approved"]
        assert len(passed) == AFFORDABLE and len(refused) == N - AFFORDABLE
        for said in refused:
            assert "for HK$700.00 would over-commit the scheme s" in said
            assert "its fund is HK$3,500.00, HK$3,500.00 is committed and HK$0.00 is left" in said
        with lg.session() as db:
            assert committed(db, scheme.id) == AFFORDABLE * EACH
            assert db.scalar(select(func.count()).select_from(Project)) == AFFORDABLE
            assert db.scalar(select(func.count()).select_from(Grant)) == AFFORDABLE
            assert db.scalar(select(func.count()).select_from(Member)) == 2 * AFFORDABLE
            statuses = dict(db.execute(select(Application.id, Application.status)).all())
        assert {a for a, s in statuses.items() if s == "approved"} == set(passed)
        assert {s for a, s in statuses.items() if a not in passed} == {"under_review"}
    finally:
        lg.dispose()
