"""Creating events: one validation for the form and the API, and one transaction for event and job."""
from dataclasses import dataclass
from datetime import datetime, timezone

from ..extensions import db
from ..text import storable
from ..timeutil import school_zone
from ..roster.audience import Audience, AudienceError, validate as validate_audience
from .models import PRIORITIES, Event

LIMITS = {"title": 200, "location": 200, "description": 5000}
MULTILINE = {"description"}


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


def parse_datetime(value) -> datetime:
    """ISO 8601, with or without an offset; without one it is the school's local time."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a date and time is required")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("use a date and time like 2026-12-01T18:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=school_zone())
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValueError("use a date and time between the years 1 and 9999") from None


def _text(data: dict, name: str, errors: dict, required: bool = False) -> str:
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
    title = _text(data, "title", errors, required=True)
    description = _text(data, "description", errors)
    location = _text(data, "location", errors)
    times = {}
    for name in ("starts_at", "ends_at"):
        try:
            times[name] = parse_datetime(data.get(name))
        except ValueError as exc:
            message = str(exc)  # not .capitalize(): it would lower-case the example's "T"
            errors[name] = message[:1].upper() + message[1:] + "."
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
    if errors:
        raise EventError(errors)
    return EventInput(title, description, location, times["starts_at"], times["ends_at"], audience, priority)


def create_event(data: EventInput, user) -> Event:
    """Write the event and its notification job in one transaction, then hand the job to the queue.

    Nothing here depends on the audience's size: the consumers resolve and count it.
    """
    from ..notify.models import NotificationJob
    from ..notify.services import dispatch
    from ..ops.cache import EVENTS, changed
    from ..queue import priority_for

    event = Event(
        title=data.title, description=data.description, location=data.location,
        starts_at=data.starts_at, ends_at=data.ends_at, audience=data.audience.to_dict(),
        priority=data.priority, created_by=user,
    )
    job = NotificationJob(event=event, priority=priority_for(data.priority == "urgent"))
    db.session.add_all([event, job])
    db.session.commit()
    changed(EVENTS)  # the events list shows it at once, in every process
    dispatch(job)
    return event
