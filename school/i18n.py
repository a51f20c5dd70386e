"""The languages families read: which ones the school speaks, how a stored code maps onto one of
them, dates in a reader's language, and the compiled catalogs Flask-Babel reads.

The message catalogs' sources (``.po``) live in ``school/translations``; their compiled form
(``.mo``) is made from them when the app starts, under ``DATA_DIR``, so no setup step and no
generated file in the repository can fall out of date.
"""
import functools
import io
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

from babel import Locale
from flask import g, request
from babel.dates import format_date, format_interval, format_time, get_datetime_format
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from .timeutil import local, school_zone

# Every language a family may read, in the order the preferences page offers them, with its own name.
LANGUAGES = {
    "en": "English", "es": "Español", "fr": "Français", "de": "Deutsch", "pt": "Português",
    "pl": "Polski", "uk": "Українська", "ar": "العربية", "zh_Hans": "简体中文", "vi": "Tiếng Việt",
}
RIGHT_TO_LEFT = {"ar"}
SOURCES = Path(__file__).resolve().parent / "translations"
DOMAIN = "messages"

# BCP 47 scripts and regions that pick a catalog of their own; anything else maps by base language.
_BY_SCRIPT = {("zh", "hans"): "zh_Hans", ("zh", "cn"): "zh_Hans", ("zh", "sg"): "zh_Hans", ("zh", ""): "zh_Hans"}


def supported(code: str | None) -> str | None:
    """The school's locale for a stored language code, or None when it speaks no such language.

    Matches by base language: ``pt-BR`` -> ``pt``, ``zh-Hans-CN`` and ``zh-CN`` -> ``zh_Hans``,
    ``EN_us`` -> ``en``. Traditional Chinese (``zh-Hant``, ``zh-TW``) has no catalog of its own.
    """
    if not code or not isinstance(code, str):
        return None
    parts = [p for p in re.split(r"[-_]", code.strip().lower()) if p]
    if not parts:
        return None
    base = parts[0]
    if base == "zh":
        subtags = parts[1:] or [""]
        for tag in subtags:
            if (base, tag) in _BY_SCRIPT:
                return _BY_SCRIPT[(base, tag)]
        return None
    return base if base in LANGUAGES else None


def resolve(code: str | None, default: str) -> str:
    """The locale to write in for a stored code: the supported one it matches, else ``default``
    (the school's language, ``SCHOOL_LANGUAGE``)."""
    return supported(code) or default


def bcp47(locale: str) -> str:
    """The locale as HTML's ``lang`` and the ``Content-Language`` header spell it: ``zh-Hans``."""
    return locale.replace("_", "-")


def direction(locale: str) -> str:
    return "rtl" if locale in RIGHT_TO_LEFT else "ltr"


def language_name(language: str, reader: str) -> str:
    """``language``'s name as a reader of ``reader`` writes it: ``inglés`` for en read in es."""
    return Locale.parse(reader).languages.get(language) or Locale.parse(language).get_display_name(reader)


def moment(value: datetime, locale: str) -> str:
    """A date and time in the reader's language and the school's time zone: ``martes, 12 de enero
    de 2027, 18:00``."""
    return _join(format_date(local(value), "full", locale=locale), format_time(local(value), "short", locale=locale),
                 locale)


def period(start: datetime, end: datetime, locale: str) -> str:
    """From ``start`` to ``end`` as the reader's language writes it: on one day, the date once and
    the hours as a range (``18:00–20:30``, ``6:00 – 8:30 PM``)."""
    first, last = local(start), local(end)
    if first.date() != last.date():
        return f"{moment(start, locale)} – {moment(end, locale)}"
    skeleton = "hm" if "h" in Locale.parse(locale).time_formats["short"].pattern else "Hm"
    hours = format_interval(first, last, skeleton, tzinfo=school_zone(), locale=locale)
    return _join(format_date(first, "full", locale=locale), hours, locale)


def _join(date: str, time: str, locale: str) -> str:
    return get_datetime_format("medium", locale=locale).replace("'", "").replace("{0}", time).replace("{1}", date)


def compile_catalogs(target: Path, sources: Path = SOURCES) -> Path:
    """Write each ``<lang>/LC_MESSAGES/messages.mo`` under ``target`` from its ``.po`` when missing or
    older; returns ``target``. Each file is replaced whole, so processes starting together (web
    workers, consumers) never read a half-written catalog."""
    for po in sorted(sources.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        mo = target / po.relative_to(sources).with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=mo.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(_compiled(str(po), po.stat().st_mtime_ns))
            os.replace(temporary, mo)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return target


@functools.cache
def _compiled(po: str, _mtime_ns: int) -> bytes:
    """A catalog's ``.mo`` bytes, compiled once per process and version of the source (tests and
    benchmarks build many apps, each with a ``DATA_DIR`` of its own)."""
    with open(po, "rb") as source:
        catalog = read_po(source, locale=Path(po).parent.parent.name, domain=DOMAIN)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


def select_locale() -> str:
    """Flask-Babel's choice for a request: the language a family page chose for its reader
    (``g.locale``), else English, the staff pages' language."""
    return g.get("locale") or "en"


def from_browser(default: str) -> str:
    """The first language the browser asks for that the school speaks (for a family page that
    has no notice to take the language from), else ``default``."""
    for code, _quality in request.accept_languages:
        if found := supported(code):
            return found
    return default
