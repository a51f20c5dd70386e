"""What comes after an event's first notice: reminders, changes and its cancellation.

Each follow-up notice is an event of its own (``original_id``: the event it is about) with its own
job (``follow_up_of_id``: the first notice's job, ``follow_up_who``: whom among that job's
recipients it reaches), so it has its own progress and ledger while reading, answering and the
calendar entry stay the original's. The calendar part of every follow-up is the original as it
stands (same UID, its SEQUENCE; CANCEL once canceled), so calendars move or remove one entry.

- reminders: asked for with the event (``EventReminder``), created by ``create_due_reminders``
  when due (every consumer runs it with the scheduler), or at once from the event page;
- ``change_event``: the fields staff change, ``sequence`` one more; with ``notify`` an update
  notice saying what changed (old -> new) to everyone the first notice was sent to;
- ``cancel_event``: what is not yet sent is canceled (the first notice's rest, reminders, pending
  updates); with ``notify`` a cancellation notice to everyone it was sent to.

Change notices of one event go out in the order they were made (``notify.schedule``).
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import select

from ..caching.versions import EVENTS, changed
from ..extensions import db
from ..notify import controls
from ..notify.leases import db_now
from ..notify.models import CHANGE_WHO, JOB_ENDED, REMIND_WHO, JobStatus, NotificationJob
from ..notify.schedule import WAIT_PREVIOUS, plan, start, waiting_change_notice
from ..timeutil import aware
from .models import Event, EventReminder, reminder_due
from .services import LIMITS, EventError, parse_datetime, sentence, text_field
from .translations import canceled_title, changed_title, reminder_title

log = logging.getLogger(__name__)

CHANGEABLE = ("title", "description", "location", "starts_at", "ends_at")
TIMES = ("starts_at", "ends_at")


def _prefixed(message, title: str, locale: str) -> str:
    with force_locale(locale):
        return message(title)[:LIMITS["title"]]


def _follow_up(event: Event, first: NotificationJob, titled, who: str, user, now, **fields) -> Event:
    """A follow-up event and job (unsaved): the event's text now, each title saying what it is in
    the school's language and in each language staff translated it into."""
    school = current_app.config["SCHOOL_LANGUAGE"]
    translations = {locale: {**text, "title": _prefixed(titled, text["title"], locale)}
                    for locale, text in (event.translations or {}).items()} or None
    follow = Event(
        title=_prefixed(titled, event.title, school), description=event.description, location=event.location,
        starts_at=event.starts_at, ends_at=event.ends_at, audience=event.audience, priority=event.priority,
        rsvp=event.rsvp, created_by=user, translations=translations, original_id=event.id,
        sequence=event.sequence, **fields)
    job = NotificationJob(event=follow, priority=first.priority, follow_up_of_id=first.id, follow_up_who=who)
    plan(job, event.urgent, None, now)
    db.session.add_all([follow, job])
    return follow


def create_reminder(event: Event, who, user, enqueue_fanout) -> Event:
    """A reminder now, to the first notice's recipients that ``who`` names (not_acknowledged, all,
    rsvp_yes); ``EventError`` when there is nothing to follow up."""
    if who not in REMIND_WHO:
        raise EventError({"who": "Choose not_acknowledged, all or rsvp_yes."})
    if event.original_id is not None:
        raise EventError({"event": "This is a follow-up already: remind from the first event."})
    if event.canceled_at is not None:
        raise EventError({"event": "The event is canceled."})
    first = event.job
    if first is None or first.purged_at is not None or not first.fanout_done:
        raise EventError({"event": "Its notice has not been sent yet, or its recipients are no longer kept."})
    reminder = _follow_up(event, first, reminder_title, who, user, db_now())
    db.session.commit()
    changed(EVENTS)
    start(reminder.job, enqueue_fanout)
    return reminder


def create_due_reminders(enqueue_fanout) -> int:
    """Make a job of every reminder whose time has come (its event not canceled, not yet started,
    and its first notice's recipients written); returns how many. Of several consumers at once,
    one makes each: the reminder is claimed in the transaction that writes its job."""
    now = db_now()
    rows = db.session.execute(
        select(EventReminder.id, EventReminder.before_seconds, Event.starts_at).join(Event)
        .where(EventReminder.job_id.is_(None), Event.canceled_at.is_(None), Event.starts_at > now,
               Event.starts_at <= now + timedelta(days=61))).all()
    db.session.commit()
    made = 0
    for reminder_id, before, starts_at in rows:
        if reminder_due(starts_at, before) > now:
            continue
        reminder = db.session.get(EventReminder, reminder_id, with_for_update=True, populate_existing=True)
        event = reminder.event if reminder is not None else None
        first = event.job if event is not None else None
        if (reminder is None or reminder.job_id is not None or event.canceled_at is not None or first is None
                or not first.fanout_done or first.purged_at is not None):
            db.session.rollback()  # taken meanwhile, or the first notice is not written yet: later
            continue
        follow = _follow_up(event, first, reminder_title, reminder.to, event.created_by, now)
        db.session.flush()
        reminder.job_id = follow.job.id
        db.session.commit()
        log.info("event %s: reminder %s before it starts is due; job %s", event.id,
                 timedelta(seconds=before), follow.job.id)
        changed(EVENTS)
        start(follow.job, enqueue_fanout)
        made += 1
    return made


@dataclass
class Change:
    """What ``change_event`` did: the fields that changed ({"field": [old, new]}) and the update
    notice (None when nobody was told)."""

    event: Event
    changes: dict
    notice: Event | None
    note: str | None = None
    sequence: int | None = None  # the event's calendar SEQUENCE this change gave it


def _iso(value) -> str:
    return aware(value).isoformat()


def parse_changes(data) -> tuple[dict, bool]:
    """The fields a PATCH or the edit form changes, checked (``EventError`` otherwise), and
    whether to tell the recipients."""
    if not isinstance(data, dict):
        raise EventError({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    unknown = set(data) - {*CHANGEABLE, "notify"}
    if unknown:
        errors["body"] = ("these cannot be changed: " + ", ".join(sorted(map(str, unknown)))
                          + " (change title, description, location, starts_at, ends_at)")
    notify = data.get("notify", False)
    if not isinstance(notify, bool):
        errors["notify"] = "must be true or false"
    fields = {}
    for name in ("title", "description", "location"):
        if name in data:
            fields[name] = text_field(data, name, errors, required=name == "title")
    for name in TIMES:
        if name in data:
            try:
                fields[name], _note = parse_datetime(data.get(name))
            except ValueError as exc:
                errors[name] = sentence(str(exc))
    if errors:
        raise EventError(errors)
    return fields, notify


def _locked_event(event_id: int) -> Event:
    """The event, its row locked until the transaction ends (PostgreSQL; SQLite's writers take
    turns anyway), read afresh: of two changes at once the later one reads what the first wrote."""
    event = db.session.execute(select(Event).where(Event.id == event_id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one_or_none()
    if event is None:
        raise LookupError(event_id)
    return event


def change_event(event_id: int, fields: dict, notify: bool, user, enqueue_fanout) -> Change:
    """Change the event's fields; with ``notify``, an update notice to everyone its first notice
    was sent to. ``LookupError``, or ``EventError`` for a change that cannot be.

    Each of two changes at once says what it changed, and their notices go out in order."""
    event = _locked_event(event_id)
    try:
        result = _change(event, fields, notify, user)
    except EventError:
        db.session.rollback()
        raise
    db.session.commit()
    changed(EVENTS)
    if result.notice is not None:
        start(result.notice.job, enqueue_fanout)
    return result


def _change(event: Event, fields: dict, notify: bool, user) -> Change:
    if event.canceled_at is not None:
        raise EventError({"event": "This event is canceled; it can no longer be changed."})
    if event.original_id is not None:
        raise EventError({"event": "This is a follow-up notice: change the event it is about."})
    starts, ends = fields.get("starts_at", aware(event.starts_at)), fields.get("ends_at", aware(event.ends_at))
    if ends < starts:
        raise EventError({"ends_at": "The event cannot end before it starts."})
    first = event.job
    now = db_now()
    if (first is not None and first.status == JobStatus.SCHEDULED and first.send_at is not None
            and aware(first.send_at) > ends):
        raise EventError({"ends_at": "The notice is scheduled for after the event would end: reschedule it first."})
    changes = {}
    for name, value in fields.items():
        old = aware(getattr(event, name)) if name in TIMES else getattr(event, name)
        if old != value:
            changes[name] = [_iso(old), _iso(value)] if name in TIMES else [old, value]
            setattr(event, name, value)
    if not changes:
        return Change(event, {}, None, "Nothing changed.")
    event.sequence += 1
    event.updated_at = now
    notice, note = None, None
    if notify:
        notice, note = _notice_of_change(event, first, changed_title, user, now, changes=changes)
    return Change(event, changes, notice, note, event.sequence)


def _notice_of_change(event: Event, first: NotificationJob | None, titled, user, now, **fields):
    """The follow-up that tells those the first notice reached; (None, why) when nobody to tell."""
    if first is None or first.status == JobStatus.SCHEDULED or (first.status == JobStatus.CANCELED
                                                               and first.started_at is None):
        return None, "The notice has not gone out yet: it will carry the new details."
    if first.purged_at is not None:
        raise EventError({"notify": "This notice's recipients are no longer kept (RETENTION_DAYS): change it "
                                    "without telling them."})
    notice = _follow_up(event, first, titled, CHANGE_WHO, user, now, **fields)
    db.session.flush()
    if notice.job.status != JobStatus.SCHEDULED and waiting_change_notice(notice.job):
        notice.job.status, notice.job.send_at = JobStatus.SCHEDULED, now
        notice.job.waiting_for, notice.job.waiting_since = WAIT_PREVIOUS, now
    return notice, None


def _check_cancel(event: Event, first: NotificationJob | None, notify) -> None:
    if not isinstance(notify, bool):
        raise EventError({"notify": "must be true or false"})
    if event.canceled_at is not None:
        raise EventError({"event": "This event is canceled already."})
    if event.original_id is not None:
        raise EventError({"event": "This is a follow-up notice: cancel the event it is about."})
    if notify and first is not None and first.purged_at is not None:
        raise EventError({"notify": "This notice's recipients are no longer kept (RETENTION_DAYS): cancel it "
                                    "without telling them."})


def cancel_event(event_id: int, notify: bool, user, enqueue_fanout) -> Change:
    """Cancel the event: everything of it not yet sent is canceled; with ``notify``, a
    cancellation notice (its calendar part METHOD:CANCEL) to everyone it was sent to."""
    event = _locked_event(event_id)
    first = event.job
    try:
        _check_cancel(event, first, notify)
    except EventError:
        db.session.rollback()
        raise
    now = db_now()
    event.canceled_at, event.updated_at = now, now
    event.sequence += 1
    sequence = event.sequence
    open_jobs = db.session.scalars(select(NotificationJob.id).where(
        NotificationJob.status.not_in(JOB_ENDED),
        (NotificationJob.event_id == event.id) | NotificationJob.event_id.in_(
            select(Event.id).where(Event.original_id == event.id)))).all()
    db.session.commit()  # the event is canceled before anything of it is stopped: nothing new starts
    for job_id in open_jobs:
        try:
            controls.cancel(job_id)
        except controls.JobStateError:  # ended meanwhile
            pass
    db.session.refresh(event)
    notice, note = None, None
    if notify:
        notice, note = _notice_of_change(event, db.session.get(NotificationJob, first.id) if first else None,
                                         canceled_title, user, now, canceled_at=now)
        db.session.commit()
    changed(EVENTS)
    if notice is not None:
        start(notice.job, enqueue_fanout)
    return Change(event, {"canceled": True}, notice, note, sequence)
