"""Creating events: one validation for the form and the API, and one transaction for event and job."""
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask import current_app
from icalendar.prop import vDuration
from sqlalchemy import func, select

from ..caching.versions import EVENTS, changed, remember, version
from ..extensions import db
from ..notify.leases import db_now
from ..notify.models import REMIND_WHO, NotificationJob
from ..notify.schedule import PAST_GRACE, ScheduleError, check_send_at, plan, start
from ..pagination import Page
from ..queue import priority_for
from ..roster.audience import Audience, AudienceError, validate as validate_audience
from ..text import storable
from ..timeutil import school_zone, utcnow
from .models import PRIORITIES, Event, EventReminder
from .translations import parse_translations

LIMITS = {"title": 200, "location": 200, "description": 5000}
MULTILINE = {"description"}
# A school plans within a few years; a date far outside that is a typo (or an attack on every page
# and email that would have to show it).
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
HORIZON_YEARS = 10


class EventError(ValueError):
    """Invalid event input; ``fields`` maps each bad field to its message."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass
class EventInput:
    title: str
    description: str
    location: str
    starts_at: datetime
    ends_at: datetime
    audience: Audience
    priority: str
    rsvp: bool = False  # families are asked to answer yes, no or maybe
    notes: dict[str, str] = field(default_factory=dict)  # per field: what was read into it, e.g. a DST choice
    translations: dict[str, dict[str, str]] = field(default_factory=dict)  # per locale: title, description, location
    send_at: datetime | None = None  # when the notice goes out (UTC); None: at once
    reminders: list[tuple[int, str]] = field(default_factory=list)  # (seconds before the start, to whom)


def latest_date(now: datetime) -> datetime:
    try:
        return now.replace(year=now.year + HORIZON_YEARS)
    except ValueError:  # 29 February
        return now.replace(year=now.year + HORIZON_YEARS, day=28)


def _out_of_range(now: datetime) -> ValueError:
    return ValueError(f"use a date from {EARLIEST:%Y-%m-%d} up to {HORIZON_YEARS} years from now "
                      f"({latest_date(now):%Y-%m-%d})")


def _school_time(naive: datetime) -> tuple[datetime, str | None]:
    """A wall-clock time in the school's zone. One the clocks skip (spring forward) is refused; one
    they pass twice (fall back) is taken the first time, with a note saying so."""
    zone = school_zone()
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first, None
    shown = f"{naive:%Y-%m-%d %H:%M}"
    if first.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != naive:
        raise ValueError(f"{shown} does not exist in {zone.key}: the clocks skip that hour for daylight "
                         "saving time. Choose a time before or after it")
    return first, (f"{shown} happens twice in {zone.key} (the clocks go back an hour that night); "
                   f"the first one was taken, {first:%H:%M %Z} (UTC{first:%z}).")


def parse_datetime(value) -> tuple[datetime, str | None]:
    """ISO 8601, with or without an offset; without one it is the school's local time.

    Returns the moment in UTC, and a note when a local time the clocks pass twice was read as its
    first occurrence.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a date and time is required")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("use a date and time like 2026-12-01T18:00") from None
    now = utcnow()
    note = None
    try:
        if parsed.tzinfo is None:
            parsed, note = _school_time(parsed)
        moment = parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise _out_of_range(now) from None
    if not EARLIEST <= moment <= latest_date(now):
        raise _out_of_range(now)
    return moment, note


def sentence(message: str) -> str:
    """An error message as a field shows it: a capital first (not ``.capitalize()``, which would
    lower-case an example's "T") and a full stop."""
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def text_field(data: dict, name: str, errors: dict, required: bool = False) -> str:
    value = data.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[name] = "must be text"
        return ""
    value = value.strip()
    if required and not value:
        errors[name] = "This field is required."
    elif not storable(value, multiline=name in MULTILINE):
        errors[name] = "Remove the control characters (such as NUL) from this text."
    elif len(value) > LIMITS[name]:
        errors[name] = f"At most {LIMITS[name]} characters (this has {len(value)})."
    return value


def _list_of(value, kind, name: str, errors: dict) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        errors[name] = f"must be a list of {'whole numbers' if kind is int else 'text'}"
        return []
    return value


def parse_event(data: dict) -> EventInput:
    """Check raw input (already typed: str, list, dict) and return it clean, or raise ``EventError``."""
    if not isinstance(data, dict):
        raise EventError({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    title = text_field(data, "title", errors, required=True)
    description = text_field(data, "description", errors)
    location = text_field(data, "location", errors)
    times, notes = {}, {}
    for name in ("starts_at", "ends_at"):
        try:
            times[name], note = parse_datetime(data.get(name))
        except ValueError as exc:
            errors[name] = sentence(str(exc))
            continue
        if note:
            notes[name] = note
    if len(times) == 2 and times["ends_at"] < times["starts_at"]:
        errors["ends_at"] = "The event cannot end before it starts."
    priority = data.get("priority", "normal") or "normal"
    if priority not in PRIORITIES:
        errors["priority"] = "Choose normal or urgent."
    audience_data = data.get("audience")
    audience = None
    if not isinstance(audience_data, dict):
        errors["audience"] = "must be an object with roles, and optionally schools, grades and classes"
    else:
        unknown = set(audience_data) - {"roles", "grades", "classes", "schools"}
        if unknown:
            errors["audience"] = "unknown key: " + ", ".join(sorted(map(str, unknown)))
        roles = _list_of(audience_data.get("roles"), str, "roles", errors)
        grades = _list_of(audience_data.get("grades"), int, "grades", errors)
        classes = _list_of(audience_data.get("classes"), str, "classes", errors)
        schools = _list_of(audience_data.get("schools"), str, "schools", errors)
        if not {"roles", "grades", "classes", "schools"} & set(errors):
            try:
                audience = validate_audience(roles, grades, classes, schools)
            except AudienceError as exc:
                errors.update(exc.fields)
    rsvp = data.get("rsvp", False)
    if rsvp is None:
        rsvp = False
    if not isinstance(rsvp, bool):
        errors["rsvp"] = "must be true or false"
    translations, translation_errors = parse_translations(data.get("translations"),
                                                          current_app.config["SCHOOL_LANGUAGE"])
    errors.update(translation_errors)
    now = utcnow()
    send_at = None
    if data.get("send_at") not in (None, ""):
        try:
            send_at, note = parse_datetime(data.get("send_at"))
            if note:
                notes["send_at"] = note
            if "ends_at" in times:
                send_at = check_send_at(send_at, times["ends_at"], now)
        except ValueError as exc:
            errors["send_at"] = sentence(exc.fields["send_at"] if isinstance(exc, ScheduleError) else str(exc))
    reminders = parse_reminders(data.get("reminders"), times.get("starts_at"), send_at or now, now, errors)
    if errors:
        raise EventError(errors)
    return EventInput(title, description, location, times["starts_at"], times["ends_at"], audience, priority,
                      rsvp=rsvp, notes=notes, translations=translations, send_at=send_at, reminders=reminders)


MAX_REMINDERS = 5
LONGEST_REMINDER = timedelta(days=60)  # the earliest a reminder may come before its event


def parse_reminders(value, starts_at: datetime | None, first_sent: datetime, now: datetime,
                    errors: dict) -> list[tuple[int, str]]:
    """``[{"before": "P1D", "to": "all"}]`` (ISO 8601 durations; ``to``: all, not_acknowledged,
    rsvp_yes) as (seconds, to) pairs. Each must come after the notice itself and before the event
    starts, and not have passed already; errors go in ``errors`` keyed ``reminders.<n>.before``."""
    if value is None or value == []:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        errors["reminders"] = 'must be a list like [{"before": "P1D", "to": "all"}]'
        return []
    if len(value) > MAX_REMINDERS:
        errors["reminders"] = f"At most {MAX_REMINDERS} reminders."
        return []
    found: list[tuple[int, str]] = []
    for index, item in enumerate(value):
        key = f"reminders.{index}"
        unknown = set(item) - {"before", "to"}
        if unknown:
            errors[key] = "unknown key: " + ", ".join(sorted(map(str, unknown)))
            continue
        to = item.get("to") or "all"
        if to not in REMIND_WHO:
            errors[f"{key}.to"] = "Choose all, not_acknowledged or rsvp_yes."
            continue
        raw = item.get("before")
        try:
            before = vDuration.from_ical(raw.strip().upper()) if isinstance(raw, str) else None
        except ValueError:
            before = None
        if before is None:
            errors[f"{key}.before"] = "Give how long before the event, as an ISO 8601 duration like P1D or PT1H."
            continue
        if before <= timedelta(0):
            errors[f"{key}.before"] = "A reminder comes before the event starts, not after: use a duration like P1D."
            continue
        if before > LONGEST_REMINDER:
            errors[f"{key}.before"] = f"At most {LONGEST_REMINDER.days} days before the event."
            continue
        if starts_at is not None:
            due = starts_at - before
            if due < now - PAST_GRACE:
                errors[f"{key}.before"] = "That time has already passed: the event starts sooner than this."
                continue
            if due < first_sent:
                errors[f"{key}.before"] = "That is before the notice itself goes out."
                continue
        pair = (int(before.total_seconds()), to)
        if pair in found:
            errors[f"{key}.before"] = "The same reminder twice."
            continue
        found.append(pair)
    return found


def create_event(data: EventInput, user, enqueue_fanout) -> Event:
    """Write the event and its notification job in one transaction, then hand the job to the queue
    through ``enqueue_fanout``.

    Nothing here depends on the audience's size: the consumers resolve and count it.
    """
    event = Event(
        title=data.title, description=data.description, location=data.location,
        starts_at=data.starts_at, ends_at=data.ends_at, audience=data.audience.to_dict(),
        priority=data.priority, rsvp=data.rsvp, created_by=user, translations=data.translations or None,
    )
    event.reminders = [EventReminder(before_seconds=seconds, to=to) for seconds, to in data.reminders]
    job = NotificationJob(event=event, priority=priority_for(data.priority == "urgent"))
    plan(job, data.priority == "urgent", data.send_at, db_now())
    db.session.add_all([event, job])
    db.session.commit()
    changed(EVENTS)  # the events list shows it at once, in every process
    start(job, enqueue_fanout)
    return event


def events_page(page: int, per_page: int) -> Page:
    """A page of events, newest first. The events come from the cache; their jobs' statuses, which
    consumers change all the time, are read fresh (one indexed query for the page's jobs)."""
    page = max(page, 1)

    def load() -> dict:
        total = db.session.scalar(select(func.count()).select_from(Event))
        rows = db.session.scalars(select(Event).order_by(Event.created_at.desc(), Event.id.desc())
                                  .limit(per_page).offset((page - 1) * per_page)).all()
        items = [{"id": e.id, "title": e.title, "priority": e.priority, "starts_at": e.starts_at,
                  "ends_at": e.ends_at, "location": e.location, "audience": e.audience,
                  "created_at": e.created_at} for e in rows]
        return {"total": total, "items": items}

    cached = remember(f"events-page:{version(EVENTS)}:{page}:{per_page}", load)
    items = [dict(item) for item in cached["items"]]
    if items:
        statuses = dict(db.session.execute(select(NotificationJob.event_id, NotificationJob.status).where(
            NotificationJob.event_id.in_([item["id"] for item in items]))).all())
        for item in items:
            status = statuses.get(item["id"])
            item["job"] = {"status": status} if status else None
    return Page(items=items, page=page, per_page=per_page, total=cached["total"])
