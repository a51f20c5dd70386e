"""Staff's translations of an event's own text, and the event as one reader sees it.

An event is written in the school's language (SCHOOL_LANGUAGE). Staff may add, per language, a
title, description and location; a reader of that language gets them (a field left out is the
original's), and a reader of any other language gets the original with one line saying which
language it was written in.
"""
from flask import current_app
from flask_babel import force_locale, gettext

from ..i18n import LANGUAGES, language_name, supported
from ..text import storable

FIELDS = ("title", "description", "location")
LIMITS = {"title": 200, "location": 200, "description": 5000}


def parse_translations(value, original: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Check ``{"es": {"title": ..., "description": ..., "location": ...}}``; returns the clean
    translations keyed by locale (``pt-BR`` is stored as ``pt``) and the errors, keyed like
    ``translations.es.title``, for a 422."""
    if value is None or value == {}:
        return {}, {}
    if not isinstance(value, dict):
        return {}, {"translations": "must be an object of languages, like {\"es\": {\"title\": ...}}"}
    clean: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    for code, fields in value.items():
        key = f"translations.{code}"
        if isinstance(code, str) and code.endswith(" (twice)"):  # the form's second block for a language
            errors[key.removesuffix(" (twice)")] = "A second translation into this language: give each language once."
            continue
        locale = supported(code) if isinstance(code, str) else None
        if code == "?":
            errors[key] = "Choose the translation's language."
            continue
        if locale is None:
            errors[key] = "Unknown language: choose one the school speaks (" + ", ".join(LANGUAGES) + ")."
            continue
        if locale == original:
            errors[key] = "This is the event's own language: write it in the event itself."
            continue
        if locale in clean:
            errors[key] = f"A second translation into {LANGUAGES[locale]}: give each language once."
            continue
        if not isinstance(fields, dict):
            errors[key] = "must be an object with title, and optionally description and location"
            continue
        unknown = set(fields) - set(FIELDS)
        if unknown:
            errors[key] = "unknown key: " + ", ".join(sorted(map(str, unknown)))
            continue
        checked = {}
        for name in FIELDS:
            text = fields.get(name) or ""
            if not isinstance(text, str):
                errors[f"{key}.{name}"] = "must be text"
                continue
            text = text.strip()
            if name == "title" and not text:
                errors[f"{key}.{name}"] = "This field is required."
            elif not storable(text, multiline=name == "description"):
                errors[f"{key}.{name}"] = "Remove the control characters (such as NUL) from this text."
            elif len(text) > LIMITS[name]:
                errors[f"{key}.{name}"] = f"At most {LIMITS[name]} characters (this has {len(text)})."
            elif text:
                checked[name] = text
        clean[locale] = checked
    return (clean if not errors else {}), errors


def reminder_title(title: str) -> str:
    return gettext("Reminder: %(title)s", title=title)


def changed_title(title: str) -> str:
    return gettext("Changed: %(title)s", title=title)


def canceled_title(title: str) -> str:
    return gettext("Canceled: %(title)s", title=title)


def follow_up_titler(event):
    """How a follow-up's title says what it is (in the current locale): a cancellation, an update
    or a reminder."""
    if getattr(event, "canceled_at", None):
        return canceled_title
    return changed_title if getattr(event, "changes", None) else reminder_title


def _follow_up_title(event, locale: str, original: str) -> str:
    """A follow-up's title for a reader of ``locale`` without a translation of it: its subject in
    the reader's language ("Recordatorio: ...") around the event's own title. The stored title
    says it in the school's language; a title that does not read so is left as it is."""
    titler = follow_up_titler(event)
    with force_locale(original):
        before, _, after = titler("\x00").partition("\x00")
    title = event.title
    if not (title.startswith(before) and title.endswith(after)) or len(title) < len(before) + len(after):
        return title
    with force_locale(locale):
        return titler(title[len(before):len(title) - len(after)])


class EventText:
    """The event as a reader of ``locale`` sees it: its translation when staff wrote one, else the
    original, with ``written_in`` (the original language's name in the reader's language) set."""

    def __init__(self, event, locale: str):
        self._event = event
        original = current_app.config["SCHOOL_LANGUAGE"]
        translation = (getattr(event, "translations", None) or {}).get(locale) if locale != original else None
        self.translated = translation is not None
        self.title = (translation or {}).get("title") or event.title
        if translation is None and locale != original and getattr(event, "original_id", None):
            self.title = _follow_up_title(event, locale, original)
        self.description = (translation or {}).get("description") or event.description
        self.location = (translation or {}).get("location") or event.location
        self.written_in = None if locale == original or self.translated else language_name(original, locale)

    def __getattr__(self, name):
        return getattr(self._event, name)

    def notice_line(self) -> str | None:
        """"This notice was written in English.", in the current locale; None when not needed."""
        if self.written_in is None:
            return None
        return gettext("This notice was written in %(language)s.", language=self.written_in)
