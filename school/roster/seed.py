"""A deterministic demo school, written with bulk inserts so 100,000 students take seconds."""
import random
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text

from ..extensions import db
from .services import roster_changed
from .models import (District, Guardian, School, SchoolClass, Student, Teacher, class_students, class_teachers,
                     student_guardians)

GRADES = range(1, 13)
STUDENTS_PER_CLASS = 25
FIRST = ("Ada", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kenji", "Lena",
         "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe")
LAST = ("Adams", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen", "Kim",
        "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva", "Tanaka", "Umarov", "Weber", "Yilmaz")
LANGUAGES = ("en", "en", "en", "es", "fr", "de", "ar", "tr")
CHUNK = 10_000
SCHOOL_ID = 1


class RosterExists(RuntimeError):
    pass


@dataclass
class SeedSummary:
    classes: int
    students: int
    guardians: int
    teachers: int


def roster_exists() -> bool:
    return any(db.session.scalar(select(func.count()).select_from(model)) > 0 for model in (Student, SchoolClass, School))


def reset_roster() -> None:
    for table in (student_guardians, class_teachers, class_students, Student.__table__, Guardian.__table__,
                  Teacher.__table__, SchoolClass.__table__, School.__table__, District.__table__):
        db.session.execute(delete(table))


def _bulk(table, rows) -> None:
    for start in range(0, len(rows), CHUNK):
        db.session.execute(insert(table), rows[start:start + CHUNK])


def _fix_sequences() -> None:
    """Explicit ids bypass PostgreSQL's sequences; move them past what was written."""
    if db.engine.dialect.name != "postgresql":
        return
    for table in ("schools", "classes", "students", "guardians", "teachers"):
        db.session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"  # nosec B608  # table from the fixed tuple above
        ))


def seed_demo(students: int, reset: bool = False, seed: int = 42, language: str | None = None) -> SeedSummary:
    """Write a demo school of ``students`` students; refuse if a roster exists unless ``reset``.
    Guardians speak a mix of languages, or all ``language`` when given."""
    if roster_exists():
        if not reset:
            raise RosterExists("A roster already exists; run again with --reset to replace it.")
        reset_roster()
    rng = random.Random(seed)  # nosec B311  # reproducible demo data, not a secret
    per_grade = max(1, -(-students // len(GRADES)))
    classes_per_grade = max(1, -(-per_grade // STUDENTS_PER_CLASS))
    classes = []
    for grade in GRADES:
        for index in range(classes_per_grade):
            classes.append({"id": len(classes) + 1, "grade": grade, "name": f"{grade}{_letters(index)}",
                            "school_id": SCHOOL_ID, "kind": "homeroom"})
    by_grade = {g: [c for c in classes if c["grade"] == g] for g in GRADES}

    student_rows, guardian_rows, links = [], [], []
    next_student = 1
    while next_student <= students:
        # A family: one to three children sharing one or two guardians.
        surname = rng.choice(LAST)
        children = rng.choice((1, 1, 1, 2, 2, 3))
        guardian_ids = []
        for _ in range(rng.choice((1, 2, 2))):
            gid = len(guardian_rows) + 1
            has_email = rng.random() > 0.02
            name = f"{rng.choice(FIRST)} {surname}"
            drawn = rng.choice(LANGUAGES)  # drawn even when ``language`` overrides it: the same school either way
            guardian_rows.append({
                "id": gid, "name": name,
                "email": f"guardian{gid}@example.org" if has_email else None,
                "language": language or drawn,
            })
            guardian_ids.append(gid)
        for _ in range(children):
            if next_student > students:
                break
            sid = next_student
            next_student += 1
            # Spread students evenly over grades and classes, whatever the family draws.
            grade = GRADES[(sid - 1) % len(GRADES)]
            school_class = by_grade[grade][((sid - 1) // len(GRADES)) % classes_per_grade]
            student_rows.append({
                "id": sid, "name": f"{rng.choice(FIRST)} {surname}", "grade": grade,
                "class_id": school_class["id"], "school_id": SCHOOL_ID,
                "email": f"student{sid}@example.org" if grade >= 7 else None,
            })
            links.extend({"student_id": sid, "guardian_id": gid} for gid in guardian_ids)

    teacher_rows, teaching = [], []
    for school_class in classes:
        tid = len(teacher_rows) + 1
        teacher_rows.append({"id": tid, "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                             "email": f"teacher{tid}@example.org", "school_id": SCHOOL_ID})
        teaching.append({"class_id": school_class["id"], "teacher_id": tid})
    # Subject teachers who teach every class of a grade.
    for grade in GRADES:
        tid = len(teacher_rows) + 1
        teacher_rows.append({"id": tid, "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                             "email": f"teacher{tid}@example.org", "school_id": SCHOOL_ID})
        teaching.extend({"class_id": c["id"], "teacher_id": tid} for c in by_grade[grade])

    _bulk(School.__table__, [{"id": SCHOOL_ID, "name": "Demo School", "identifier": "demo"}])
    _bulk(SchoolClass.__table__, classes)
    _bulk(Teacher.__table__, teacher_rows)
    _bulk(class_teachers, teaching)
    _bulk(Guardian.__table__, guardian_rows)
    _bulk(Student.__table__, student_rows)
    _bulk(student_guardians, links)
    _fix_sequences()
    db.session.commit()
    roster_changed()
    return SeedSummary(len(classes), len(student_rows), len(guardian_rows), len(teacher_rows))


def _letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters
