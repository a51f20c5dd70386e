"""The school's people: classes, students, guardians and teachers."""
from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db

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


class SchoolClass(db.Model):
    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    grade: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(20))

    students: Mapped[list["Student"]] = relationship(back_populates="school_class")
    teachers: Mapped[list["Teacher"]] = relationship(secondary=class_teachers, back_populates="classes")

    def __repr__(self) -> str:
        return f"<SchoolClass {self.name}>"


class Student(db.Model):
    __tablename__ = "students"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    grade: Mapped[int] = mapped_column(Integer, index=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"), index=True)
    email: Mapped[str | None] = mapped_column(String(254))

    school_class: Mapped[SchoolClass] = relationship(back_populates="students")
    guardians: Mapped[list["Guardian"]] = relationship(secondary=student_guardians, back_populates="students")


class Guardian(db.Model):
    __tablename__ = "guardians"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    language: Mapped[str] = mapped_column(String(10), default="en")

    students: Mapped[list[Student]] = relationship(secondary=student_guardians, back_populates="guardians")


class Teacher(db.Model):
    __tablename__ = "teachers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))

    classes: Mapped[list[SchoolClass]] = relationship(secondary=class_teachers, back_populates="teachers")
