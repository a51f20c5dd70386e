"""Roster reads that pages need, cached in the shared cache until the roster changes."""
from sqlalchemy import select

from ..extensions import cache, db
from .audience import Audience, AudienceCount, count
from .models import SchoolClass

VERSION_KEY = "roster-version"


def roster_version() -> int:
    return cache.get(VERSION_KEY) or 0


def roster_changed() -> None:
    """Call after any write to the roster: cached counts and choices are then recomputed."""
    cache.set(VERSION_KEY, roster_version() + 1, timeout=0)


def cached_count(audience: Audience) -> AudienceCount:
    key = f"reach:{roster_version()}:{'|'.join(audience.roles)}:{audience.grades}:{audience.classes}"
    result = cache.get(key)
    if result is None:
        result = count(audience)
        cache.set(key, result)
    return result


def audience_choices() -> dict:
    key = f"audience-choices:{roster_version()}"
    choices = cache.get(key)
    if choices is None:
        rows = db.session.execute(select(SchoolClass.grade, SchoolClass.name).order_by(
            SchoolClass.grade, SchoolClass.name)).all()
        grades: dict[int, list[str]] = {}
        for grade, name in rows:
            grades.setdefault(grade, []).append(name)
        choices = {"grades": grades}
        cache.set(key, choices)
    return choices
