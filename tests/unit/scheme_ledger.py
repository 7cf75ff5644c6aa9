"""The small scheme the workflow tests share: the rule tests' ledger (tests/unit/rules_ledger.py:
scheme "s" at 70%, h100.1g.10gb at HK$10.00 and h100.3g.40gb at HK$30.00 an hour from T0) with
two weighted criteria and a fund of `fund` cents; hub users ann (a PI), bo, cy (her team), and
rev1..rev3 (reviewers). `submitted` and `under_review` make an application that far."""

from sqlalchemy import update

from slicehub.quota.models import Scheme
from slicehub.quota.scheme.validate import ApplicationInput, ComputeLine, TeamMember
from slicehub.quota.scheme.workflow import SchemeWorkflow
from tests.unit.rules_ledger import T0, H

HUB_USERS = {"ann", "bo", "cy", "dee", "rev1", "rev2", "rev3", "sec"}
CRITERIA = [
    {"key": "alignment", "title": "Alignment with Hong Kong's innovation needs", "weight": 60},
    {"key": "compute", "title": "Reasonableness of the compute request", "weight": 40},
]
DAY = 24 * H


def known_users(names: list[str]) -> set[str]:
    return set(names) & HUB_USERS


def workflow(lg, fund: int = 10**9) -> SchemeWorkflow:
    with lg.session.begin() as db:
        db.execute(update(Scheme).values(fund_cents=fund))
    wf = SchemeWorkflow(lg)
    wf.configure_scheme("staff", "s", T0, criteria=CRITERIA)
    return wf


def fields(**kw) -> ApplicationInput:
    """A complete application: 100 GPU-hours of h100.1g.10gb (HK$1,000.00 at list price,
    HK$700.00 of subsidy at 70%), from T0's day for 90 days."""
    spec = dict(
        email="ann@uni.hk",
        organisation="HKU",
        org_type="university",
        title="Protein folding for Hong Kong",
        abstract="We fold proteins.",
        ai_area="biology",
        period_start=T0.date(),
        period_end=(T0 + 90 * DAY).date(),
        members=[TeamMember("bo", "bo@uni.hk")],
        requests=[ComputeLine("h100.1g.10gb", 100, "7B model, bf16, training, weekly")],
    )
    spec.update(kw)
    return ApplicationInput(**spec)


def submitted(wf, applicant="ann", now=T0, scheme="s", **kw):
    app = wf.create_draft(applicant, scheme, fields(**kw), known_users, now)
    wf.submit(applicant, app.id, now)
    return app.id


def under_review(wf, reviewers=("rev1", "rev2"), now=T0, **kw) -> int:
    app_id = submitted(wf, now=now, **kw)
    wf.start_review("sec", app_id, list(reviewers), now)
    return app_id
