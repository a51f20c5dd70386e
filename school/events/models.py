"""Events that staff announce to the school."""
from datetime import datetime, timedelta

from icalendar.prop import vDuration
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.models import User
from ..extensions import db
from ..timeutil import aware, utcnow

PRIORITIES = ("normal", "urgent")


class Event(db.Model):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(String(200), default="")
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # {"roles": [...], "grades": [...], "classes": [...]}; empty grades and classes = whole school
    audience: Mapped[dict] = mapped_column(JSON)
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    rsvp: Mapped[bool] = mapped_column(default=False, server_default=sa_false())  # families answer yes/no/maybe
    # Staff's own translations, by locale: {"es": {"title": ..., "description": ..., "location": ...}}
    translations: Mapped[dict | None] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # Changes after the announcement. ``sequence`` is the iCalendar SEQUENCE: one more with each change
    # the recipients are told of, so calendars move or remove the entry they have.
    sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A follow-up notice (a reminder, an update, a cancellation) is an event of its own with its own
    # job; ``original_id`` names the event it is about, whose calendar UID it carries. ``changes``
    # holds what an update notice says changed: {"field": [old, new]}.
    original_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    changes: Mapped[dict | None] = mapped_column(JSON)

    created_by: Mapped[User | None] = relationship()
    job: Mapped["NotificationJob"] = relationship(back_populates="event", uselist=False)  # noqa: F821
    original: Mapped["Event | None"] = relationship(remote_side=[id])
    reminders: Mapped[list["EventReminder"]] = relationship(back_populates="event", cascade="all, delete-orphan",
                                                            order_by="[EventReminder.before_seconds.desc(), EventReminder.id]")

    @property
    def urgent(self) -> bool:
        return self.priority == "urgent"


REMINDER_TO = ("all", "not_acknowledged", "rsvp_yes")


def reminder_due(starts_at: datetime, before_seconds: int) -> datetime:
    """When a reminder ``before_seconds`` before an event starting at ``starts_at`` is due (UTC)."""
    return aware(starts_at) - timedelta(seconds=before_seconds)


class EventReminder(db.Model):
    """A reminder the event asks for: ``before_seconds`` before it starts, to the original notice's
    recipients that match ``to``. It becomes its own follow-up event and job when it is due
    (``job_id`` then names that job), so a change of the event's times moves it."""

    __tablename__ = "event_reminders"
    __table_args__ = (UniqueConstraint("event_id", "before_seconds", "to"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    before_seconds: Mapped[int] = mapped_column(Integer)
    to: Mapped[str] = mapped_column(String(20), default="all")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("notification_jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    event: Mapped[Event] = relationship(back_populates="reminders")

    @property
    def due_at(self) -> datetime:
        return reminder_due(self.event.starts_at, self.before_seconds)

    @property
    def before(self) -> str:
        """How long before the event, as an ISO 8601 duration: P1D, PT1H."""
        return vDuration(timedelta(seconds=self.before_seconds)).to_ical().decode("ascii")
