"""Roster reads that pages need, cached in the shared cache until the roster changes."""
from sqlalchemy import select

from ..extensions import cache, db
from .audience import Audience, AudienceCount, count, grade_label
from .models import School, SchoolClass

VERSION_KEY = "roster-version"


def roster_version() -> int:
    return cache.get(VERSION_KEY) or 0


def roster_changed() -> None:
    """Call after any write to the roster: cached counts and choices are then recomputed."""
    cache.set(VERSION_KEY, roster_version() + 1, timeout=0)


def cached_count(audience: Audience) -> AudienceCount:
    key = f"reach:{roster_version()}:{'|'.join(audience.roles)}:{audience.grades}:{audience.classes}:{audience.schools}"
    result = cache.get(key)
    if result is None:
        result = count(audience)
        cache.set(key, result)
    return result


def audience_choices() -> dict:
    key = f"audience-choices:{roster_version()}"
    choices = cache.get(key)
    if choices is None:
        rows = db.session.execute(select(SchoolClass.grade, SchoolClass.name, SchoolClass.kind).where(
            SchoolClass.active).order_by(SchoolClass.grade, SchoolClass.kind, SchoolClass.name)).all()
        grades: dict[int, list[str]] = {}
        scheduled: dict[int, list[str]] = {}
        for grade, name, kind in rows:
            names = grades.setdefault(grade, []) if kind == "homeroom" else scheduled.setdefault(grade, [])
            if name not in names:  # two schools may both have a "7B"; the school choice tells them apart
                names.append(name)
        schools = db.session.execute(select(School.identifier, School.sourced_id, School.name).where(
            School.active).order_by(School.name)).all()
        choices = {
            "grades": {g: grades.get(g, []) for g in sorted({*grades, *scheduled}, key=_grade_order)},
            "scheduled": scheduled,
            "labels": {g: grade_label(g) for g in {*grades, *scheduled}},
            "schools": [(identifier or sourced_id, name) for identifier, sourced_id, name in schools
                        if identifier or sourced_id] if len(schools) > 1 else [],
        }
        cache.set(key, choices)
    return choices


def _grade_order(grade: int | None) -> int:
    return 99 if grade is None else grade
