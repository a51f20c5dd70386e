"""Events that staff announce to the school."""
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.models import User
from ..extensions import db
from ..timeutil import utcnow

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

    created_by: Mapped[User | None] = relationship()
    job: Mapped["NotificationJob"] = relationship(back_populates="event", uselist=False)  # noqa: F821

    @property
    def urgent(self) -> bool:
        return self.priority == "urgent"
