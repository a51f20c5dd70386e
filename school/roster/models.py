"""The school's people: districts, schools, classes, students, guardians and teachers.

Every imported record keeps the source system's id (OneRoster ``sourcedId``) so a nightly
re-import updates it in place. People and classes are never deleted by an import: they are
deactivated (``active = False``), so past notices keep their history, and inactive people are
never reached.

A student's homeroom (form group) is ``students.class_id``; the scheduled classes they attend are
rows of ``class_students``. An address that is not a valid email is kept in ``invalid_email``
("needs fixing") and ``email`` stays empty, so nobody is mailed at it.
"""
from datetime import datetime

from sqlalchemy import (JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Table, Text,
                        true)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.models import User
from ..extensions import db
from ..timeutil import utcnow

CLASS_KINDS = ("homeroom", "scheduled")

student_guardians = Table(
    "student_guardians",
    db.metadata,
    Column("student_id", ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
    Column("guardian_id", ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_student_guardians_guardian_id", "guardian_id"),
)

class_teachers = Table(
    "class_teachers",
    db.metadata,
    Column("class_id", ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True),
    Column("teacher_id", ForeignKey("teachers.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_class_teachers_teacher_id", "teacher_id"),
)

class_students = Table(
    "class_students",
    db.metadata,
    Column("class_id", ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True),
    Column("student_id", ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_class_students_student_id", "student_id"),
)


def _sourced_id():
    return mapped_column(String(255), unique=True, nullable=True)


def _active():
    # No index: nearly everyone is active, and an index on it leads SQLite to plan joins through it.
    return mapped_column(Boolean, default=True, server_default=true())


class District(db.Model):
    __tablename__ = "districts"

    id: Mapped[int] = mapped_column(primary_key=True)
    sourced_id: Mapped[str | None] = _sourced_id()
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = _active()


class School(db.Model):
    __tablename__ = "schools"

    id: Mapped[int] = mapped_column(primary_key=True)
    sourced_id: Mapped[str | None] = _sourced_id()
    name: Mapped[str] = mapped_column(String(200))
    identifier: Mapped[str | None] = mapped_column(String(100), index=True)
    district_id: Mapped[int | None] = mapped_column(ForeignKey("districts.id"), index=True)
    active: Mapped[bool] = _active()

    district: Mapped[District | None] = relationship()


class SchoolClass(db.Model):
    """A homeroom ("7B") or a scheduled class ("Maths 7 set 1"); ``name`` is its class code."""

    __tablename__ = "classes"

    id: Mapped[int] = mapped_column(primary_key=True)
    sourced_id: Mapped[str | None] = _sourced_id()
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"), index=True)
    grade: Mapped[int | None] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10), default="homeroom", server_default="homeroom")
    active: Mapped[bool] = _active()

    school: Mapped[School | None] = relationship()
    students: Mapped[list["Student"]] = relationship(back_populates="school_class")
    members: Mapped[list["Student"]] = relationship(secondary=class_students, back_populates="scheduled_classes")
    teachers: Mapped[list["Teacher"]] = relationship(secondary=class_teachers, back_populates="classes")

    def __repr__(self) -> str:
        return f"<SchoolClass {self.name}>"


class Person:
    """What every person keeps for later channels: contacts, language and whether they are still here."""

    id: Mapped[int] = mapped_column(primary_key=True)
    sourced_id: Mapped[str | None] = _sourced_id()
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    invalid_email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str | None] = mapped_column(String(35))
    active: Mapped[bool] = _active()


class Student(Person, db.Model):
    __tablename__ = "students"

    grade: Mapped[int | None] = mapped_column(Integer, index=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"), index=True)
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id"), index=True)

    school: Mapped[School | None] = relationship()
    school_class: Mapped[SchoolClass | None] = relationship(back_populates="students")
    scheduled_classes: Mapped[list[SchoolClass]] = relationship(secondary=class_students, back_populates="members")
    guardians: Mapped[list["Guardian"]] = relationship(secondary=student_guardians, back_populates="students")


class Guardian(Person, db.Model):
    __tablename__ = "guardians"

    language: Mapped[str | None] = mapped_column(String(35), default="en")

    students: Mapped[list[Student]] = relationship(secondary=student_guardians, back_populates="guardians")


class Teacher(Person, db.Model):
    __tablename__ = "teachers"

    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"), index=True)

    school: Mapped[School | None] = relationship()
    classes: Mapped[list[SchoolClass]] = relationship(secondary=class_teachers, back_populates="teachers")


IMPORT_STATUSES = ("queued", "running", "done", "refused", "failed")
IMPORT_ENDED = ("done", "refused", "failed")


class RosterImport(db.Model):
    """One import of an uploaded bundle: the truth about it, whichever consumer runs it.

    The upload itself is kept in the row (``bundle``) so a consumer on any machine can read it;
    a real run clears it once done, a dry run keeps it for the "apply" that may follow.
    """

    __tablename__ = "roster_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    created_by: Mapped[User | None] = relationship()

    @property
    def ended(self) -> bool:
        return self.status in IMPORT_ENDED
