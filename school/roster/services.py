"""Roster reads that pages need, cached in the shared cache until the roster changes."""
from sqlalchemy import select

from ..caching.versions import ROSTER, changed, remember, version
from ..extensions import db
from .audience import Audience, AudienceCount, count, grade_label
from .models import School, SchoolClass


def roster_changed() -> None:
    """Call after any write to the roster: cached counts and choices are then recomputed."""
    changed(ROSTER)


def cached_count(audience: Audience) -> AudienceCount:
    key = (f"reach:{version(ROSTER)}:{'|'.join(audience.roles)}:{audience.grades}:{audience.classes}"
           f":{audience.schools}")
    return remember(key, lambda: count(audience))


def audience_choices() -> dict:
    return remember(f"audience-choices:{version(ROSTER)}", _audience_choices)


def _audience_choices() -> dict:
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
    return {
        "grades": {g: grades.get(g, []) for g in sorted({*grades, *scheduled}, key=_grade_order)},
        "scheduled": scheduled,
        "labels": {g: grade_label(g) for g in {*grades, *scheduled}},
        "schools": [(identifier or sourced_id, name) for identifier, sourced_id, name in schools
                    if identifier or sourced_id] if len(schools) > 1 else [],
    }


def _grade_order(grade: int | None) -> int:
    return 99 if grade is None else grade
