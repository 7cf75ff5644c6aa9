"""Parking in the ledger (slicehub.quota.idle): readings become warnings, a warned idle session
is parked (charged to that moment, the rest of its hold back to the project at once, to the
cent), activity withdraws a warning, a project's own policy and exemption, the idle stretch
recorded at every release."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from slicehub.common.money import subsidy_of
from slicehub.quota.errors import LedgerError
from slicehub.quota.models import AuditEntry, Session
from slicehub.quota.parking import KEEP, PARK, WARN, Reading
from slicehub.quota.site_parking import SiteParking
from tests.unit.rules_ledger import T0, H, project

MIN = timedelta(minutes=1)
SITE = SiteParking(idle=30 * MIN, warning=5 * MIN, check=MIN)
IDLE = Reading  # Reading(idle=...) reads as "idle for"


def started(ledger, slug="lab", user="ann", server="", hours=4):
    """A project `slug` with `user` as member, and their session of `hours` from T0."""
    project(ledger, slug)
    ledger.add_member("staff", slug, user, T0)
    return ledger.open_session(slug, user, server, "h100.1g.10gb", hours * H, T0)


def row(ledger, sid) -> Session:
    with ledger.session() as db:
        return db.get(Session, sid)


def test_warned_then_parked_charged_to_the_moment_and_the_rest_returned(ledger):
    s = started(ledger)
    held = ledger.balance("lab", T0).subsidy_held_cents
    assert held == s.hold_subsidy_cents == subsidy_of(4 * 1000, 7000)  # 4 h at HK$10, 70%

    o = ledger.observe(s.id, "ann", "", IDLE(idle=20 * MIN), SITE, T0 + 20 * MIN)
    assert (o.decision.action, o.project) == (KEEP, "lab")
    o = ledger.observe(s.id, "ann", "", IDLE(idle=25 * MIN), SITE, T0 + 25 * MIN)
    assert (o.decision.action, o.decision.park_at) == (WARN, T0 + 30 * MIN)
    r = row(ledger, s.id)
    assert (r.idle_since, r.idle_warned_at, r.idle_park_at) == (T0, T0 + 25 * MIN, T0 + 30 * MIN)

    park_at = T0 + 30 * MIN
    o = ledger.observe(s.id, "ann", "", IDLE(idle=30 * MIN), SITE, park_at)
    assert o.decision.action == PARK
    ledger.park(s.id, "ann", "", park_at)

    r = row(ledger, s.id)
    assert (r.status, r.stop_reason, r.stopped_at) == ("stopped", "parked", park_at)
    assert r.charged_list_cents == 500  # 30 minutes at HK$10.00 an hour
    assert r.charged_subsidy_cents == 350
    assert (r.idle_seconds, r.idle_list_cents, r.idle_subsidy_cents) == (1800, 500, 350)
    assert r.idle_warned_at is None and r.idle_park_at is None
    b = ledger.balance("lab", park_at)
    assert b.subsidy_held_cents == 0 and b.subsidy_charged_cents == 350  # 2,450 back at once
    with ledger.session() as db:
        actions = [a for (a,) in db.execute(select(AuditEntry.action)) if "session" in a]
        warning = db.scalar(select(AuditEntry).where(AuditEntry.action == "session.idle-warning"))
    assert actions == ["session.idle-warning", "session.release"]
    assert json.loads(warning.detail)["idle_seconds"] == 25 * 60


def test_activity_after_the_warning_withdraws_it_and_parking_is_refused(ledger):
    s = started(ledger)
    ledger.observe(s.id, "ann", "", IDLE(idle=26 * MIN), SITE, T0 + 26 * MIN)
    kept = IDLE(idle=timedelta(seconds=10))  # "Keep working" 10 s ago
    o = ledger.observe(s.id, "ann", "", kept, SITE, T0 + 28 * MIN)
    assert (o.decision.action, o.decision.warned) == (KEEP, False)
    assert row(ledger, s.id).idle_warned_at is None
    with pytest.raises(LedgerError, match="not waiting to be parked") as e:
        ledger.park(s.id, "ann", "", T0 + 31 * MIN)
    assert e.value.status == 409 and row(ledger, s.id).status == "active"


def test_a_busy_reading_is_never_idle(ledger):
    s = started(ledger)
    busy = Reading(idle=5 * H, busy=("kernel train.ipynb (python3) is busy",))
    o = ledger.observe(s.id, "ann", "", busy, SITE, T0 + 3 * H)
    assert (o.decision.action, row(ledger, s.id).idle_since) == (KEEP, None)


def test_a_reading_must_be_of_the_sessions_own_server(ledger):
    s = started(ledger)
    for user, server in (("bo", ""), ("ann", "other")):
        with pytest.raises(LedgerError, match="no active session") as e:
            ledger.observe(s.id, user, server, IDLE(idle=H), SITE, T0 + H)
        assert e.value.status == 404
        with pytest.raises(LedgerError):
            ledger.park(s.id, user, server, T0 + H)
    ledger.close_session(s.id, T0 + H)
    with pytest.raises(LedgerError, match=r"no active session|already ended"):
        ledger.observe(s.id, "ann", "", IDLE(idle=H), SITE, T0 + H)


def test_a_course_has_its_own_window_and_an_exemption_needs_the_sites_leave(ledger):
    s = started(ledger, "course")
    ledger.set_parking("staff", "course", T0, idle_minutes=15, warning_minutes=3)
    assert (
        ledger.observe(s.id, "ann", "", IDLE(12 * MIN), SITE, T0 + 12 * MIN).decision.action == WARN
    )

    ledger.set_parking("staff", "course", T0, opt_out=True)
    o = ledger.observe(s.id, "ann", "", IDLE(45 * MIN), SITE, T0 + 45 * MIN)
    assert o.decision.action == PARK and not o.opted_out  # the site does not allow exemptions
    lenient = SiteParking(idle=30 * MIN, warning=5 * MIN, check=MIN, projects_may_opt_out=True)
    o = ledger.observe(s.id, "ann", "", IDLE(5 * H), lenient, T0 + 5 * H)
    assert (o.decision.action, o.opted_out, o.decision.idle) == (KEEP, True, 5 * H)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(idle_minutes=0), "1 to 1,440"),
        (dict(idle_minutes=True), "whole number"),
        (dict(idle_minutes=10, warning_minutes=10), "shorter than the idle window"),
    ],
)
def test_bad_parking_settings_are_refused_and_change_nothing(ledger, kw, words):
    project(ledger, "lab")
    with pytest.raises(LedgerError, match=words):
        ledger.set_parking("staff", "lab", T0, **kw)
    with pytest.raises(LedgerError, match=r"no project|not a project|There is no"):
        ledger.set_parking("staff", "nope", T0, idle_minutes=10)


def test_a_session_stopped_while_idle_records_what_its_idle_end_cost(ledger):
    s = started(ledger)
    ledger.observe(s.id, "ann", "", IDLE(idle=10 * MIN), SITE, T0 + H)  # idle since 0:50
    ledger.close_session(s.id, T0 + H + 6 * MIN)
    r = row(ledger, s.id)
    assert (r.stop_reason, r.idle_seconds) == ("stopped", 16 * 60)
    assert r.charged_list_cents == 1100 and r.idle_list_cents == 1100 - 833  # 0:50 is HK$8.33


def test_prometheus_has_idle_subsidy_parkings_what_they_returned_and_idle_now(ledger):
    from prometheus_client import CollectorRegistry

    from slicehub.quota.idle_api import Seen
    from slicehub.quota.metrics import LedgerCollector

    s = started(ledger)
    ledger.observe(s.id, "ann", "", IDLE(idle=25 * MIN), SITE, T0 + 25 * MIN)
    ledger.park(s.id, "ann", "", T0 + 30 * MIN)
    other = ledger.open_session("lab", "ann", "nb", "h100.1g.10gb", H, T0 + H)
    readings = {
        other.id: Seen(
            T0 + H,
            "ann",
            "nb",
            "lab",
            7 * MIN,
            (),
            "none",
            "no GPU signal: declared",
            "keep",
            T0 + H + 23 * MIN,
            False,
        ),
    }
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger, readings))

    def value(name):
        return registry.get_sample_value(name, {"project": "lab"})

    assert value("slicehub_idle_subsidy_cents_total") == 350
    assert value("slicehub_parking_returned_subsidy_cents_total") == 2800 - 350
    assert value("slicehub_parked_sessions_total") == 1
    assert (value("slicehub_idle_sessions"), value("slicehub_idle_seconds")) == (1, 420)
