"""Filters the templates share."""
from datetime import datetime, timedelta

from flask import Flask
from babel.dates import format_timedelta
from flask_babel import get_locale

from . import i18n
from .timeutil import local, local_input


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


def ahead(seconds: int) -> str:
    """How long before something, in words: "1 hour", "2 days", "1 week"."""
    return format_timedelta(timedelta(seconds=seconds), threshold=1, locale=_locale())


def audience_text(audience: dict) -> str:
    from .roster.audience import Audience

    return Audience.from_dict(audience or {}).describe()


def _locale() -> str:
    locale = get_locale()
    return str(locale) if locale else "en"


def moment(value: datetime | None) -> str:
    """A date and time in the page's language (a family's) and the school's time zone."""
    return "—" if value is None else i18n.moment(value, _locale())


def page_language() -> dict:
    """The page's ``lang`` and ``dir`` (right to left for Arabic)."""
    locale = _locale()
    return {"page_lang": i18n.bcp47(locale), "page_dir": i18n.direction(locale)}


def init_app(app: Flask) -> None:
    app.add_template_global(moment)
    app.context_processor(page_language)
    app.add_template_filter(audience_text)
    app.add_template_filter(when)
    app.add_template_filter(number)
    app.add_template_filter(duration)
    app.add_template_filter(local_input)
    app.add_template_filter(ahead)
