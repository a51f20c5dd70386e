"""Filters the templates share."""
from datetime import datetime

from flask import Flask

from .timeutil import local


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return local(value).strftime("%a %d %b %Y, %H:%M %Z")


def number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def audience_text(audience: dict) -> str:
    from .roster.audience import Audience

    return Audience.from_dict(audience or {}).describe()


def init_app(app: Flask) -> None:
    app.add_template_filter(audience_text)
    app.add_template_filter(when)
    app.add_template_filter(number)
    app.add_template_filter(duration)
