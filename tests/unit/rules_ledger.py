"""The small ledger the rule tests share (test_ledger_rules, test_ledger_extend): scheme "s" at
70%, h100.1g.10gb at HK$10.00 and h100.3g.40gb at HK$30.00 an hour, from T0; `project` adds a
project with a grant. The fixture that builds it is `ledger` in tests/unit/conftest.py."""

from datetime import UTC, datetime, timedelta

from slicehub.quota.ledger import Ledger

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
H = timedelta(hours=1)


def build(url: str) -> Ledger:
    lg = Ledger(url)
    lg.upgrade()
    lg.add_scheme("staff", "s", 7000, 10**9, T0)
    lg.set_price("staff", "h100.1g.10gb", 1000, T0, T0)
    lg.set_price("staff", "h100.3g.40gb", 3000, T0, T0)
    return lg


def project(lg, slug, grant=100_00, **kw):
    spec = dict(
        scheme="s",
        name=slug,
        organisation="U",
        pi="pi",
        valid_from=T0,
        valid_until=T0 + 30 * 24 * H,
        allowed_slice_types=["*"],
        max_concurrent_sessions=5,
        now=T0,
    )
    spec.update(kw)
    lg.add_project("staff", slug, **spec)
    lg.add_grant("staff", slug, grant, T0, T0 + 30 * 24 * H, T0)
