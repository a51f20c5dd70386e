"""What came back: every bounce and complaint report that named one of our recipients, and the
addresses no notice goes to any more (suppressions)."""
from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..timeutil import utcnow


class ReportKind(StrEnum):
    HARD = "hard"  # the address is dead (5.x.x, the provider's "Permanent")
    SOFT = "soft"  # for now (4.x.x, mailbox full); SOFT_LIMIT of them within SOFT_WINDOW suppress
    COMPLAINT = "complaint"  # the family pressed "spam": an opt-out of normal notices


class BounceReport(db.Model):
    """One report about one address, kept as the history behind a suppression."""

    __tablename__ = "bounce_reports"
    __table_args__ = (Index("ix_bounce_reports_email_received", "email", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    email: Mapped[str] = mapped_column(String(254))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str | None] = mapped_column(String(20))  # the enhanced status code, e.g. 5.1.1
    diagnostic: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # dsn, arf, flufl, ses, postmark
    # The ledger row it names (no foreign key: retention removes rows, the report stays).
    notification_id: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(Integer)


class Suppression(db.Model):
    """An address (lower-cased) the fan-out leaves out of every notice, urgent ones included, until
    it is lifted (by an admin, or by correcting the address in the roster)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lifted_why: Mapped[str | None] = mapped_column(String(200))
