from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import current_app


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def school_zone() -> ZoneInfo:
    """The school's time zone (SCHOOL_TIMEZONE): how staff enter times and how people read them."""
    return ZoneInfo(current_app.config["SCHOOL_TIMEZONE"])


def local(value: datetime) -> datetime:
    return aware(value).astimezone(school_zone())


def local_input(value: datetime | None) -> str:
    """A stored time as a ``datetime-local`` field shows it: school time, to the minute."""
    return "" if value is None else local(value).strftime("%Y-%m-%dT%H:%M")
