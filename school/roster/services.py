"""Roster reads that pages need, cached in the shared cache until the roster changes."""
from sqlalchemy import select

from ..caching.versions import ROSTER, changed, remember, version
from ..extensions import db
from .audience import Audience, AudienceCount, count
from .models import SchoolClass


def roster_changed() -> None:
    """Call after any write to the roster: cached counts and choices are then recomputed."""
    changed(ROSTER)


def cached_count(audience: Audience) -> AudienceCount:
    key = f"reach:{version(ROSTER)}:{'|'.join(audience.roles)}:{audience.grades}:{audience.classes}"
    return remember(key, lambda: count(audience))


def audience_choices() -> dict:
    return remember(f"audience-choices:{version(ROSTER)}", _audience_choices)


def _audience_choices() -> dict:
    rows = db.session.execute(select(SchoolClass.grade, SchoolClass.name).order_by(
        SchoolClass.grade, SchoolClass.name)).all()
    grades: dict[int, list[str]] = {}
    for grade, name in rows:
        grades.setdefault(grade, []).append(name)
    return {"grades": grades}
