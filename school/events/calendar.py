"""An event as iCalendar (RFC 5545, RFC 5546): what mail apps and calendars offer to add, move or remove."""
from icalendar import Calendar, Event as CalendarEvent

from ..timeutil import aware, utcnow


def event_uid(event, domain: str) -> str:
    """The same for every email and download of this event and of its follow-ups (reminders,
    updates, its cancellation), so calendars update or remove the entry rather than add another."""
    return f"event-{getattr(event, 'original_id', None) or event.id}@{domain}"


def method(event) -> str:
    """CANCEL once the event is canceled (calendars remove it), PUBLISH otherwise."""
    return "CANCEL" if getattr(event, "canceled_at", None) else "PUBLISH"


def ics(event, domain: str, url: str | None = None, note: str | None = None) -> bytes:
    """``event`` as one reader sees it (see ``events.translations.EventText``); ``note``, a line put
    before the description (which language the original is in).

    ``SEQUENCE`` is the event's: one more with each change, so a calendar replaces what it has
    with what is newer (a follow-up carries the sequence of the change it announces)."""
    calendar = Calendar()
    calendar.add("prodid", f"-//{domain}//school notices//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method(event))
    entry = CalendarEvent()
    entry.add("uid", event_uid(event, domain))
    entry.add("sequence", getattr(event, "sequence", None) or 0)
    stamp = getattr(event, "updated_at", None) or getattr(event, "created_at", None)
    entry.add("dtstamp", aware(stamp) or utcnow())  # a new event not yet saved has none
    entry.add("dtstart", aware(event.starts_at))
    entry.add("dtend", aware(event.ends_at))
    entry.add("summary", event.title)
    if method(event) == "CANCEL":
        entry.add("status", "CANCELLED")
    if event.location:
        entry.add("location", event.location)
    description = "\n\n".join(part for part in (note, event.description) if part)
    if description:
        entry.add("description", description)
    if url:
        entry.add("url", url)
    calendar.add_component(entry)
    return calendar.to_ical()
