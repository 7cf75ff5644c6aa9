"""The one clock Slicehub reads. Tests move time by patching `slicehub.common.clock.utcnow`.

Always timezone-aware UTC; callers format for people at the edge.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO 8601 with an explicit offset and whole seconds, e.g. 2026-11-22T14:00:00+00:00."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Slicehub times are always timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()
