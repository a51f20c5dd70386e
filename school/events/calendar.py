"""An event as iCalendar (RFC 5545): what mail apps and calendars offer to add."""
from icalendar import Calendar, Event as CalendarEvent

from ..timeutil import aware, utcnow


def event_uid(event, domain: str) -> str:
    """The same for every email and download of this event, so calendars update rather than duplicate."""
    return f"event-{event.id}@{domain}"


def ics(event, domain: str, url: str | None = None, note: str | None = None) -> bytes:
    """``event`` as one reader sees it (see ``events.translations.EventText``); ``note``, a line put
    before the description (which language the original is in)."""
    calendar = Calendar()
    calendar.add("prodid", f"-//{domain}//school notices//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    entry = CalendarEvent()
    entry.add("uid", event_uid(event, domain))
    entry.add("sequence", 0)  # events are not edited after they are announced
    entry.add("dtstamp", aware(getattr(event, "created_at", None)) or utcnow())  # a new event not yet saved has none
    entry.add("dtstart", aware(event.starts_at))
    entry.add("dtend", aware(event.ends_at))
    entry.add("summary", event.title)
    if event.location:
        entry.add("location", event.location)
    description = "\n\n".join(part for part in (note, event.description) if part)
    if description:
        entry.add("description", description)
    if url:
        entry.add("url", url)
    calendar.add_component(entry)
    return calendar.to_ical()
