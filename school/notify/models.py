"""The truth about every notification job: its batches and one row per recipient.

Redis (or the SQLite queue) only carries work; whatever it loses is found again from these rows.
Counters are kept per batch, written in the same transaction as the rows they count and by the one
worker that holds the batch's lease, so a job's progress is a sum over its batches, never a count
of its recipients.
"""
from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..timeutil import utcnow



class JobStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for ``send_at`` (a scheduled send, or quiet hours); the sweep dispatches it
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"
    HELD = "held"  # the mail server refuses us (quota, policy): nobody fails, it resumes by itself


# Why a scheduled job waits, when not for a time staff chose (``waiting_for``).
WAIT_QUIET = "quiet hours"
WAIT_PREVIOUS = "earlier change"

JOB_LIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # may still send
JOB_OPEN = (*JOB_LIVE, JobStatus.PAUSED, JobStatus.HELD)  # not yet ended
JOB_ENDED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELED)


class BatchStatus(StrEnum):
    """queued -> sending (leased) -> done; back to queued to retry."""

    QUEUED = "queued"
    SENDING = "sending"
    DONE = "done"


class RecipientStatus(StrEnum):
    """pending -> sending (in doubt until the reply) -> sent | failed | canceled; back to pending to retry.

    ``opted_out`` rows are never sent: the fan-out writes them, outside any batch, so the ledger
    names every address a notice left out and why."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELED = "canceled"
    OPTED_OUT = "opted_out"
    SUPPRESSED = "suppressed"  # left out like opted_out: the address bounced before (school.bounces)
    BOUNCED = "bounced"  # sent, then bounced back for good (the report came later; see school.bounces)


class NotificationJob(db.Model):
    __tablename__ = "notification_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(10), default=JobStatus.QUEUED, index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    fanout_done: Mapped[bool] = mapped_column(default=False)
    fanout_owner: Mapped[str | None] = mapped_column(String(100))
    fanout_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a scheduled job may start (school time converted to UTC); NULL: at once.
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # Outbox: NULL until the fan-out task is handed to the queue.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # While held: the server's reply, when sending tries again by itself, and how many holds in a row.
    held_reason: Mapped[str | None] = mapped_column(Text)
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    holds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # An outage the job is waiting out ("mail server", "Redis"), and since when; NULL when none.
    waiting_for: Mapped[str | None] = mapped_column(String(20))
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Summary kept after the per-recipient rows are purged.
    final_sent: Mapped[int | None] = mapped_column(Integer)
    final_failed: Mapped[int | None] = mapped_column(Integer)
    final_canceled: Mapped[int | None] = mapped_column(Integer)
    # The families' side, kept as counters written with the row they count (never a count per poll):
    # addresses the fan-out left out because they opted out of normal notices, acknowledgements, RSVPs.
    opted_out: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acknowledged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rsvp_yes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rsvp_no: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rsvp_maybe: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Addresses the fan-out left out because they are suppressed (they bounced), and rows sent
    # that bounced back later (school.bounces).
    suppressed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A follow-up (a reminder, an update, a cancellation): sent to the rows of that job that
    # ``follow_up_who`` names (see ``FOLLOW_UP_WHO``), not to the event's audience; what its families
    # do on their page counts on that first job.
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("notification_jobs.id", ondelete="SET NULL"))
    follow_up_who: Mapped[str | None] = mapped_column(String(20))

    event: Mapped["Event"] = relationship(back_populates="job")  # noqa: F821 (events.models)
    batches: Mapped[list["NotificationBatch"]] = relationship(back_populates="job", cascade="all, delete-orphan")


# Whom a reminder reaches among the first notice's recipients.
REMIND_WHO = ("not_acknowledged", "all", "rsvp_yes")
# ... and an update or cancellation: everyone the first notice was sent (or was being sent) to.
CHANGE_WHO = "sent"
FOLLOW_UP_WHO = (*REMIND_WHO, CHANGE_WHO)


class NotificationBatch(db.Model):
    __tablename__ = "notification_batches"
    __table_args__ = (
        UniqueConstraint("job_id", "seq"),
        Index("ix_notification_batches_status_lease", "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("notification_jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), default=BatchStatus.QUEUED)
    size: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    canceled: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the outage this batch is waiting out began (its pending rows fail after NOTIFY_GIVE_UP_AFTER).
    outage_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[NotificationJob] = relationship(back_populates="batches")


RSVP_ANSWERS = ("yes", "no", "maybe")

# Trigram indexes for the ledger's search, made by a migration on PostgreSQL only and only where the
# pg_trgm extension can be created; not declared here, so schema comparisons leave them out.
MIGRATION_ONLY_INDEXES = frozenset({"ix_recipient_addresses_search_trgm"})


def declared_in_models(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's ``include_object``: everything but the migration-only indexes."""
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)


class RecipientAddress(db.Model):
    """Every address some notice row holds, with the name last written for it: what the ledger's
    search looks in. Written by the fan-out (only new addresses and changed names cost a write),
    emptied of addresses no row holds any more by retention. Kept apart from the notification rows,
    which every send updates, so its search index costs nothing per message."""

    __tablename__ = "recipient_addresses"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # What a search matches: name and address in lower case, one string (one trigram index, one
    # LIKE per address); see ``search_text``.
    search: Mapped[str] = mapped_column(Text)


def search_text(name: str, email: str) -> str:
    return f"{name} {email}".lower()


class Notification(db.Model):
    """One recipient of one job: a distinct email address and the people it stands for."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("job_id", "email"),
        Index("ix_notifications_batch_status", "batch_id", "status"),
        Index("ix_notifications_job_status_email", "job_id", "status", "email"),  # a status page, in address order
        Index("ix_notifications_email", "email"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("notification_jobs.id", ondelete="CASCADE"))
    # NULL for a row the fan-out left out (opted out): nothing sends it.
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("notification_batches.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[str] = mapped_column(String(40))
    children: Mapped[str] = mapped_column(Text, default="")
    # The locale the recipient reads (school.i18n), chosen by the fan-out; NULL: the school's language.
    language: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default=RecipientStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Temporary refusals of this address (4xx about the recipient): what NOTIFY_RETRIES limits.
    deferrals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the family did with the notice on its page.
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rsvp: Mapped[str | None] = mapped_column(String(5))  # yes, no, maybe
