"""The outbox: every e-mail the scheme's workflow sends, written in the same transaction as the
change it tells of, so a change never exists without its mail queued and a failed send never
loses a change. Delivery (`slicehub.quota.scheme.mailer`) sends the pending rows through the
deployment's SMTP server, with retries, and records each attempt.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from slicehub.db import UTCDateTime

from ..models import Base

PENDING, SENT, FAILED = "pending", "sent", "failed"


class OutboxMail(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    to_addr: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    related: Mapped[str] = mapped_column(String(100), default="")  # e.g. "application:12"
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def enqueue(db, now: datetime, to_addr: str, subject: str, body: str, related: str = "") -> None:
    """Queue one mail inside the caller's transaction."""
    db.add(
        OutboxMail(
            created_at=now,
            to_addr=to_addr,
            subject=subject,
            body=body,
            related=related,
            status=PENDING,
            next_attempt_at=now,
        )
    )
