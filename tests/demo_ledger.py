"""Projects and members added to a running demo hub's ledger (`<data>/ledger.sqlite`, seeded by
the quota service's start-up, slicehub/quota/demo.py), for tests that need what the demo does
not have. Call them once the hub has started: its ledger is made and seeded by then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from slicehub.quota.admin import NewMember
from slicehub.quota.ledger import Ledger

DEMO_SCHEME = "hk-ai-subsidy"  # slicehub/quota/demo.py


def add_project(
    data: Path,
    slug: str,
    *,
    grant_cents: int,
    members: dict[str, str],
    grant_until: datetime | None = None,
    windows: tuple[tuple[datetime, datetime], ...] = (),
    **project,
) -> None:
    """Project `slug` valid from a day ago for 30 days, with one grant (until `grant_until`,
    default the project's end), `members` (user -> role) and class `windows`; `project`
    overrides the project's other fields (name, allowed_slice_types, is_course, ...)."""
    now = datetime.now(UTC)
    valid_from, valid_until = now - timedelta(days=1), now + timedelta(days=30)
    spec = dict(
        scheme=DEMO_SCHEME,
        name=slug,
        organisation="Demo University",
        pi="staff",
        valid_from=valid_from,
        valid_until=valid_until,
        allowed_slice_types=["*"],
        max_concurrent_sessions=5,
        now=now,
    )
    spec.update(project)
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        ledger.add_project("staff", slug, **spec)
        ledger.add_grant("staff", slug, grant_cents, valid_from, grant_until or valid_until, now)
        for user, role in members.items():
            ledger.add_member("staff", slug, user, now, role=role)
        for opens, closes in windows:
            ledger.add_class_window("staff", slug, opens, closes, now)
    finally:
        ledger.dispose()


def join_demo_lab(data: Path, *users: str) -> None:
    """`users` join the demo's seeded project demo-lab (as members; once only)."""
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        ledger.add_members("tests", "demo-lab", [NewMember(u) for u in users], datetime.now(UTC))
    finally:
        ledger.dispose()
