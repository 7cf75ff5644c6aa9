"""The demo's ledger: a subsidy scheme, two projects and list prices, made once when empty.

Seeded by the quota service's start-up step `seed` (`--seed-demo`; the hub config calls it itself
until it passes the flag) for the embedded demo, so that `make demo` starts with something to
spend: alice is in two projects (the form asks which), bob in one.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from slicehub.common import clock

from .ledger import Ledger
from .models import Scheme
from .statement import priced_slice_types

ACTOR = "slicehub-demo"


def seed_if_empty(ledger: Ledger, prices: dict[str, int]) -> bool:
    """Create the demo scheme, projects, grants, members and prices unless a scheme exists."""
    with ledger.session() as db:
        if db.scalar(select(func.count()).select_from(Scheme)):
            return False
    now = clock.utcnow()
    start, end = now - timedelta(days=1), now + timedelta(days=365)
    ledger.add_scheme(ACTOR, "hk-ai-subsidy", 7000, 100_000_000_00, now)
    for slug, name, grant, members in (
        ("demo-lab", "Demo research lab", 500_00, ("alice", "bob")),
        ("vision-group", "Computer vision group", 200_00, ("alice",)),
    ):
        ledger.add_project(
            ACTOR,
            slug,
            scheme="hk-ai-subsidy",
            name=name,
            organisation="Demo University",
            pi="staff",
            valid_from=start,
            valid_until=end,
            allowed_slice_types=["*"],
            max_concurrent_sessions=10,
            now=now,
        )
        ledger.add_grant(ACTOR, slug, grant, start, end, now, note="demo grant")
        for user in members:
            ledger.add_member(ACTOR, slug, user, now)
    for slice_type, cents in prices.items():
        ledger.set_price(ACTOR, slice_type, cents, now, now)
    return True


def missing_prices(ledger: Ledger, slice_types) -> list[str]:
    """Offered slice types the ledger has no list price for."""
    priced = priced_slice_types(ledger)
    return [t for t in slice_types if t not in priced]
