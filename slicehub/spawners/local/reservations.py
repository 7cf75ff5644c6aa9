"""Durable slice reservations: the allocator's holds, written to the Slicehub database.

One row per reservation (who holds which slice, for how long) and one row per *resource* it
covers (each MIG memory slice of each GPU, each pinned CPU). The resource is the primary key of
its row, so the database itself refuses two holders of one device, whatever the process above
it does: a reservation is written in one transaction or not at all.

SQLAlchemy 2 with Alembic migrations (`slicehub/spawners/local/migrations`); SQLite by default, any
database SQLAlchemy speaks otherwise. Calls are synchronous: the manager runs them off the event
loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from slicehub import db
from slicehub.db import UTCDateTime

from .allocator import AllocationConflict, Assignment

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "slicehub_slices_alembic_version"


class Base(DeclarativeBase):
    pass


class Reservation(Base):
    __tablename__ = "slice_reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    holder: Mapped[str] = mapped_column(String(255), unique=True)
    slice_type: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(255))
    assignment: Mapped[str] = mapped_column(Text)  # Assignment.to_dict() as JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    session_end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReservedResource(Base):
    __tablename__ = "slice_reserved_resources"

    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    reservation_id: Mapped[int] = mapped_column(
        ForeignKey("slice_reservations.id", ondelete="CASCADE"), index=True
    )


@dataclass(frozen=True)
class StoredReservation:
    holder: str
    assignment: Assignment
    created_at: datetime
    session_end: datetime | None


class ReservationStore:
    def __init__(self, url: str):
        self.url = url
        kwargs = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        db.upgrade(self.engine, MIGRATIONS, VERSION_TABLE)

    def add(self, holder: str, a: Assignment, created_at: datetime, session_end=None) -> None:
        """Write one reservation atomically; AllocationConflict if any resource is taken."""
        with Session(self.engine) as s:
            try:
                with s.begin():
                    row = Reservation(
                        holder=holder,
                        slice_type=a.slice_type,
                        node=a.node,
                        assignment=json.dumps(a.to_dict(), sort_keys=True),
                        created_at=created_at,
                        session_end=session_end,
                    )
                    s.add(row)
                    s.flush()
                    s.add_all(
                        ReservedResource(resource=r, reservation_id=row.id)
                        for r in sorted(a.resources())
                    )
            except IntegrityError as e:
                raise AllocationConflict(
                    f"the database already records a holder of part of {a.devices or a.cpu_ids}"
                    f" or of {holder}"
                ) from e

    def remove(self, holder: str) -> bool:
        with Session(self.engine) as s, s.begin():
            rid = s.scalar(select(Reservation.id).where(Reservation.holder == holder))
            if rid is None:
                return False
            s.execute(delete(ReservedResource).where(ReservedResource.reservation_id == rid))
            s.execute(delete(Reservation).where(Reservation.id == rid))
            return True

    def all(self) -> list[StoredReservation]:
        with Session(self.engine) as s:
            rows = s.scalars(select(Reservation).order_by(Reservation.id)).all()
            return [
                StoredReservation(
                    r.holder,
                    Assignment.from_dict(json.loads(r.assignment)),
                    r.created_at,
                    r.session_end,
                )
                for r in rows
            ]

    def resources(self) -> dict[str, str]:
        """resource -> holder, for checks and tests."""
        with Session(self.engine) as s:
            q = select(ReservedResource.resource, Reservation.holder).join(
                Reservation, Reservation.id == ReservedResource.reservation_id
            )
            return dict(s.execute(q).all())

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
