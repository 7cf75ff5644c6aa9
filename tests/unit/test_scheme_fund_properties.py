"""The scheme's fund under any interleaving of approvals, top-ups and staff's grants (property
test, slicehub.quota.scheme.fund): the committed total never exceeds the fund, and each step
passes exactly when what it adds fits in what is left, as a running sum says it should. The
same with threads on PostgreSQL: tests/integration/test_scheme_postgres.py."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.quota.errors import LedgerError
from slicehub.quota.scheme.fund import committed
from slicehub.quota.scheme.workflow import SchemeWorkflow
from tests.unit.rules_ledger import T0, build
from tests.unit.scheme_ledger import DAY, under_review

STEPS = st.lists(
    st.tuples(st.sampled_from(["approve", "top_up", "grant"]), st.integers(1, 3000_00)),
    min_size=1,
    max_size=8,
)


def test_the_fund_is_never_over_committed(tmp_path):
    lg = build(f"sqlite:///{tmp_path / 'fund.sqlite'}")
    wf = SchemeWorkflow(lg)
    schemes = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(fund=st.integers(0, 6000_00), steps=STEPS)
    def interleave(fund, steps):
        n = next(schemes)
        name = f"fund-{n}"
        scheme_id = lg.add_scheme("staff", name, 7000, fund, T0).id
        projects: list[str] = []
        model = 0  # what should be committed
        for i, (kind, amount) in enumerate(steps):
            fits = model + amount <= fund
            try:
                if kind == "approve" or not projects:
                    kind = "approve"
                    app = under_review(wf, scheme=name, title=f"{name} app {i}")
                    wf.decide(
                        "sec",
                        app,
                        "approved_with_changes",
                        T0,
                        amount_cents=amount,
                        reasons="the fund's test",
                        slug=f"{name}-p{i}",
                    )
                    projects.append(f"{name}-p{i}")
                elif kind == "top_up":
                    cr = wf.request_change(
                        "ann", projects[-1], "top_up", "more", T0, amount_cents=amount
                    )
                    wf.decide_change("sec", cr.id, True, T0)
                else:
                    lg.add_grant("staff", projects[0], amount, T0, T0 + DAY, T0)
                passed = True
            except LedgerError as e:
                assert "would over-commit the scheme" in str(e), e
                assert e.status == 409
                passed = False
            assert passed == fits, (kind, amount, model, fund)
            model += amount if passed else 0
            with lg.session() as db:
                assert committed(db, scheme_id) == model <= fund

    try:
        interleave()
    finally:
        lg.dispose()
