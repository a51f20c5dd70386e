"""Who an event reaches: roles within a scope, resolved into distinct email addresses.

A scope is the whole district, or some schools (by identifier or sourcedId); within it, either
everyone or the union of some grades and some classes (homeroom or scheduled, by class code).
Students count themselves, guardians count through their children in scope, teachers through the
classes in scope they teach (or, for a whole school, through belonging to it). Inactive people and
classes are never reached. People without an email are counted as skipped.
"""
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import and_, distinct, func, literal, null, or_, select, true, union_all

from ..extensions import db
from ..text import storable
from .models import Guardian, School, SchoolClass, Student, Teacher, class_students, class_teachers, student_guardians

ROLES = ("guardians", "students", "teachers")


class AudienceError(ValueError):
    """The audience names something the school does not have; ``fields`` says what."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(fields.values()))
        self.fields = fields


@dataclass(frozen=True)
class Audience:
    roles: tuple[str, ...]
    grades: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    schools: tuple[str, ...] = ()

    @property
    def whole_school(self) -> bool:
        """Everyone in the chosen schools (or the whole district): no grade or class narrows it."""
        return not self.grades and not self.classes

    def to_dict(self) -> dict:
        data = {"roles": list(self.roles), "grades": list(self.grades), "classes": list(self.classes)}
        if self.schools:
            data["schools"] = list(self.schools)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Audience":
        return cls(tuple(data.get("roles", ())), tuple(data.get("grades", ())), tuple(data.get("classes", ())),
                   tuple(data.get("schools", ())))

    def describe(self) -> str:
        who = ", ".join(self.roles) or "nobody"
        where = (" in school " + ", ".join(self.schools)) if self.schools else ""
        if self.whole_school:
            return f"{who} of " + ("school " + ", ".join(self.schools) if self.schools else "the whole school")
        parts = [f"grade {grade_label(g)}" for g in self.grades] + [f"class {c}" for c in self.classes]
        return f"{who} of " + ", ".join(parts) + where


def validate(roles, grades, classes, schools=()) -> Audience:
    """Check an audience against the roster; raise ``AudienceError`` naming each bad field."""
    errors: dict[str, str] = {}
    roles = list(dict.fromkeys(roles or []))
    unknown_roles = [r for r in roles if r not in ROLES]
    if unknown_roles:
        errors["roles"] = "Unknown role: " + ", ".join(map(str, unknown_roles)) + " (choose from " + ", ".join(ROLES) + ")"
    elif not roles:
        errors["roles"] = "Choose at least one of guardians, students or teachers."
    schools = list(dict.fromkeys(schools or []))
    askable_schools = [s for s in schools if storable(s)]
    known_schools = set()
    if askable_schools:
        for identifier, sourced_id in db.session.execute(select(School.identifier, School.sourced_id).where(
                School.active, or_(School.identifier.in_(askable_schools), School.sourced_id.in_(askable_schools)))):
            known_schools.update((identifier, sourced_id))
    missing_schools = [s for s in schools if s not in known_schools]
    if missing_schools:
        errors["schools"] = "Unknown school: " + ", ".join(missing_schools)
    audience_schools = tuple(schools)
    grades = sorted(set(grades or []))
    known_grades = set(db.session.scalars(select(SchoolClass.grade).where(
        SchoolClass.active, _in_schools(SchoolClass.school_id, audience_schools)).distinct()))
    missing_grades = [g for g in grades if g not in known_grades]
    if missing_grades:
        errors["grades"] = "Unknown grade: " + ", ".join(map(str, missing_grades))
    classes = sorted(set(classes or []))
    # Only names a class could have reach the query: PostgreSQL refuses text with NUL in it.
    askable = [c for c in classes if storable(c)]
    known_classes = set(db.session.scalars(select(SchoolClass.name).where(
        SchoolClass.name.in_(askable), SchoolClass.active,
        _in_schools(SchoolClass.school_id, audience_schools)))) if askable else set()
    missing_classes = [c for c in classes if c not in known_classes]
    if missing_classes:
        errors["classes"] = "Unknown class: " + ", ".join(missing_classes)
    if errors:
        raise AudienceError(errors)
    return Audience(tuple(r for r in ROLES if r in roles), tuple(grades), tuple(classes), audience_schools)


GRADE_LABELS = {-4: "IT", -3: "PR", -2: "PK", -1: "TK", 0: "KG", 14: "PS"}


def grade_label(grade: int | None) -> str:
    """How a grade is written: OneRoster's codes below 1 and above 13, the number otherwise."""
    if grade is None:
        return "ungraded"
    return GRADE_LABELS.get(grade, str(grade))


def _in_schools(column, schools: tuple[str, ...]):
    if not schools:
        return true()
    return column.in_(select(School.id).where(
        School.active, or_(School.identifier.in_(schools), School.sourced_id.in_(schools))))


def _class_ids(audience: Audience):
    return select(SchoolClass.id).where(
        SchoolClass.active, _in_schools(SchoolClass.school_id, audience.schools),
        or_(SchoolClass.grade.in_(audience.grades), SchoolClass.name.in_(audience.classes)),
    )


def _students_in_scope(audience: Audience):
    active = and_(Student.active, _in_schools(Student.school_id, audience.schools))
    if audience.whole_school:
        return active
    targeted = [Student.grade.in_(audience.grades), Student.class_id.in_(_class_ids(audience))]
    if audience.classes:  # grades are homerooms' business; scheduled classes count only when named
        targeted.append(Student.id.in_(select(class_students.c.student_id).where(
            class_students.c.class_id.in_(_class_ids(audience)))))
    return and_(active, or_(*targeted))


def students_in_scope(audience: Audience):
    """The condition on ``Student`` that picks the audience's students (whichever roles it names)."""
    return _students_in_scope(audience)


def _teachers_in_scope(audience: Audience):
    teaching = Teacher.id.in_(select(class_teachers.c.teacher_id).where(class_teachers.c.class_id.in_(_class_ids(audience))))
    if audience.whole_school:
        if not audience.schools:
            return Teacher.active
        teaching = or_(_in_schools(Teacher.school_id, audience.schools), Teacher.id.in_(
            select(class_teachers.c.teacher_id).join(SchoolClass, SchoolClass.id == class_teachers.c.class_id).where(
                SchoolClass.active, _in_schools(SchoolClass.school_id, audience.schools))))
    return and_(Teacher.active, teaching)


def _people(audience: Audience, role: str):
    """(email, name, role, child, pid, language) rows for one role, one row per person-and-child."""
    if role == "students":
        return select(_address("students").label("email"), Student.name.label("name"), literal("student").label("role"),
                      Student.name.label("child"), Student.id.label("pid"), Student.language.label("language")).where(
            _students_in_scope(audience))
    if role == "guardians":
        return (
            select(_address("guardians").label("email"), Guardian.name.label("name"), literal("guardian").label("role"),
                   Student.name.label("child"), Guardian.id.label("pid"), Guardian.language.label("language"))
            .join(student_guardians, student_guardians.c.guardian_id == Guardian.id)
            .join(Student, Student.id == student_guardians.c.student_id)
            .where(Guardian.active, _students_in_scope(audience))
        )
    return select(_address("teachers").label("email"), Teacher.name.label("name"), literal("teacher").label("role"),
                  null().label("child"), Teacher.id.label("pid"), Teacher.language.label("language")).where(
        _teachers_in_scope(audience))


@dataclass
class Recipient:
    email: str
    name: str
    roles: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    language: str | None = None  # as the roster has it (a BCP 47 code); a guardian's wins


def recipients(audience: Audience, chunk: int = 5000) -> Iterator[Recipient]:
    """Stream the audience's distinct addresses in address order, without loading it all."""
    if not audience.roles:
        return
    parts = [_people(audience, role).where(_address(role).is_not(None)) for role in audience.roles]
    stmt = union_all(*parts) if len(parts) > 1 else parts[0]
    stmt = stmt.order_by(stmt.selected_columns.email)
    with db.engine.connect() as conn:
        conn = conn.execution_options(stream_results=True, yield_per=chunk, sqlite_readonly=True)
        current: Recipient | None = None
        for email, name, role, child, _pid, language in conn.execute(stmt):
            if current is None or current.email != email:
                if current is not None:
                    yield current
                current = Recipient(email=email, name=name)
            if role not in current.roles:
                current.roles.append(role)
            if role == "guardian" and child and child not in current.children:
                current.children.append(child)
            if language and (current.language is None or role == "guardian"):
                current.language = language
        if current is not None:
            yield current


def _address(role: str):
    """The person's address as it is compared: trimmed, lower-case, and NULL when blank, so
    ``Parent@x.org`` and ``parent@x.org `` are one recipient and an empty address is skipped."""
    column = {"students": Student.email, "guardians": Guardian.email, "teachers": Teacher.email}[role]
    return func.nullif(func.lower(func.trim(column)), "")


@dataclass
class AudienceCount:
    by_role: dict[str, int]
    recipients: int
    skipped: int
    skipped_by_role: dict[str, int]


def count(audience: Audience) -> AudienceCount:
    """How many distinct addresses the audience reaches, per role and in all, and who is skipped."""
    by_role, skipped_by_role = {}, {}
    for role in audience.roles:
        people = _people(audience, role).subquery()
        email, pid = people.c.email, people.c.pid
        row = db.session.execute(
            select(
                func.count(distinct(email)),
                func.count(distinct(pid)).filter(email.is_(None)),
            )
        ).one()
        by_role[role], skipped_by_role[role] = row[0], row[1]
    if len(audience.roles) > 1:
        emails = union_all(*[_people(audience, r).with_only_columns(_address(r).label("email")).where(_address(r).is_not(None))
                             for r in audience.roles]).subquery()
        total = db.session.scalar(select(func.count(distinct(emails.c.email))))
    else:
        total = sum(by_role.values())
    return AudienceCount(by_role, total or 0, sum(skipped_by_role.values()), skipped_by_role)


__all__ = ["ROLES", "Audience", "AudienceCount", "AudienceError", "Recipient", "count", "grade_label", "recipients",
           "validate"]
