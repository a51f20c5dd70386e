"""A family's notice, reached by its personal link: reading it, acknowledging it, answering it.

Every counter a staff page shows (acknowledged, RSVP yes/no/maybe) changes in the same transaction
as the row it counts, and only when the row really changed, so a double click counts once and a
page that polls never counts rows.
"""
from dataclasses import dataclass
from types import SimpleNamespace
from datetime import timedelta

from flask import current_app
from flask_babel import gettext
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from ..events.models import Event
from ..extensions import db
from ..i18n import resolve
from ..notify.models import RSVP_ANSWERS, Notification, NotificationJob, RecipientStatus
from ..timeutil import aware, utcnow
from .preferences import preference
from .tokens import notice_token, read_token

HISTORY_DAYS = 90
HISTORY_SHOWN = 50


class UnknownNotice(LookupError):
    """A token this app did not sign, or not for this row: the page says nothing about it."""


class ExpiredNotice(LookupError):
    """A real notice whose rows retention has removed."""


class RsvpClosed(ValueError):
    """The event has started (or asks no RSVP)."""


@dataclass
class Notice:
    token: str
    recipient: Notification
    event: Event

    @property
    def children(self) -> list[str]:
        return [c for c in (self.recipient.children or "").split(", ") if c]

    @property
    def language(self) -> str:
        """The locale the family reads: its choice on the preferences page, else the one the notice
        was written for (the roster's), else the school's."""
        chosen = preference(self.recipient.email)
        return resolve((chosen.language if chosen else None) or self.recipient.language,
                       current_app.config["SCHOOL_LANGUAGE"])

    @property
    def rsvp_open(self) -> bool:
        return self.event.rsvp and not self.event.canceled_at and utcnow() < aware(self.event.starts_at)


def notice(token: str) -> Notice:
    """The notice a personal link stands for; ``UnknownNotice`` or ``ExpiredNotice`` otherwise."""
    ids = read_token(token)
    if ids is None:
        raise UnknownNotice
    job_id, notification_id = ids
    row = db.session.get(Notification, notification_id)
    if row is None or row.job_id != job_id:
        # Signed by us, so it was real: the rows went with retention (or the event was removed).
        if row is None:
            raise ExpiredNotice
        raise UnknownNotice
    job = db.session.get(NotificationJob, job_id, options=[joinedload(NotificationJob.event)])
    if job.follow_up_of_id is not None:
        # A reminder's link stands for the first notice: reading and answering count there.
        first = db.session.scalar(select(Notification).where(
            Notification.job_id == job.follow_up_of_id, Notification.email == row.email))
        if first is not None:
            row, job = first, db.session.get(NotificationJob, job.follow_up_of_id)
    return Notice(token, row, job.event)


def acknowledge(found: Notice) -> bool:
    """Record that the family has read the notice; False when it already had."""
    now = utcnow()
    changed = db.session.execute(update(Notification).where(
        Notification.id == found.recipient.id, Notification.acknowledged_at.is_(None)).values(acknowledged_at=now))
    if changed.rowcount:
        db.session.execute(update(NotificationJob).where(NotificationJob.id == found.recipient.job_id)
                           .values(acknowledged=NotificationJob.acknowledged + 1))
    db.session.commit()
    db.session.refresh(found.recipient)
    return bool(changed.rowcount)


def answer_label(answer: str | None) -> str:
    """An RSVP answer as the family's language says it."""
    return {"yes": gettext("yes"), "no": gettext("no"), "maybe": gettext("maybe")}.get(answer, answer or "")


def _rsvp_counter(answer: str):
    return getattr(NotificationJob, f"rsvp_{answer}")


def answer_rsvp(found: Notice, answer: str) -> None:
    """Set or change the family's answer (yes, no, maybe) until the event starts."""
    if answer not in RSVP_ANSWERS:
        raise ValueError(gettext("Choose yes, no or maybe."))
    if not found.rsvp_open:
        if found.event.canceled_at:
            raise RsvpClosed(gettext("This event is canceled."))
        raise RsvpClosed(gettext("Answers are closed: the event has started.") if found.event.rsvp
                         else gettext("This event asks for no answer."))
    previous = found.recipient.rsvp
    if previous == answer:
        return
    # Compare and set: of two answers racing, one wins and the counters follow it.
    old = Notification.rsvp.is_(None) if previous is None else Notification.rsvp == previous
    changed = db.session.execute(update(Notification).where(Notification.id == found.recipient.id, old)
                                 .values(rsvp=answer))
    if changed.rowcount:
        counters = {f"rsvp_{answer}": _rsvp_counter(answer) + 1}
        if previous:
            counters[f"rsvp_{previous}"] = _rsvp_counter(previous) - 1
        db.session.execute(update(NotificationJob).where(NotificationJob.id == found.recipient.job_id)
                           .values(**counters))
    db.session.commit()
    db.session.refresh(found.recipient)


def other_notices(found: Notice) -> list[dict]:
    """The same address's other notices of the last HISTORY_DAYS days, newest first, with their links."""
    since = utcnow() - timedelta(days=HISTORY_DAYS)
    rows = db.session.execute(
        select(Notification.id, Notification.job_id, Event.title, Event.translations, Event.starts_at,
               Event.original_id, Event.changes, Event.canceled_at)
        .join(NotificationJob, NotificationJob.id == Notification.job_id)
        .join(Event, Event.id == NotificationJob.event_id)
        .where(Notification.email == found.recipient.email, Notification.id != found.recipient.id,
               Notification.status.not_in((RecipientStatus.OPTED_OUT, RecipientStatus.SUPPRESSED)),
               NotificationJob.created_at >= since)
        .order_by(NotificationJob.created_at.desc(), Notification.id.desc()).limit(HISTORY_SHOWN)).all()
    return [{"title": title, "starts_at": starts_at, "token": notice_token(job_id, notification_id),
             "event": SimpleNamespace(title=title, description="", location="", translations=translations,
                                      original_id=original_id, changes=changes, canceled_at=canceled_at)}
            for notification_id, job_id, title, translations, starts_at, original_id, changes, canceled_at in rows]
