"""The roster revision upgrades a database that already holds a school, on SQLite and PostgreSQL."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text

from school.extensions import db
from school.roster.audience import count, validate
from school.roster.models import School, SchoolClass, Student, Teacher

BEFORE_SCHOOLS = "f29079db1434-1"  # the revision before the roster one, whichever it is

OLD_ROSTER = [
    "INSERT INTO classes (id, grade, name) VALUES (1, 7, '7A'), (2, 8, '8A')",
    "INSERT INTO teachers (id, name, email) VALUES (1, 'Tom Baker', 'tom@staff.example.org')",
    "INSERT INTO class_teachers (class_id, teacher_id) VALUES (1, 1), (2, 1)",
    "INSERT INTO guardians (id, name, email, language) VALUES (1, 'Maria Silva', 'maria@families.example.org', 'pt')",
    "INSERT INTO students (id, name, grade, class_id, email) VALUES (1, 'Ana Silva', 7, 1, 'ana@example.org'),"
    " (2, 'Bruno Silva', 8, 2, NULL)",
    "INSERT INTO student_guardians (student_id, guardian_id) VALUES (1, 1), (2, 1)",
]


def test_an_existing_roster_becomes_one_school_and_keeps_its_links(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        downgrade(revision=BEFORE_SCHOOLS)
        for statement in OLD_ROSTER:
            db.session.execute(text(statement))
        db.session.commit()
        db.session.remove()
        upgrade()

        school = db.session.scalars(select(School)).one()
        assert school.active and school.sourced_id is None
        assert {c.school_id for c in db.session.scalars(select(SchoolClass))} == {school.id}
        assert {s.school_id for s in db.session.scalars(select(Student))} == {school.id}
        assert db.session.scalars(select(Teacher)).one().school_id == school.id
        ana = db.session.get(Student, 1)
        assert ana.active and [g.name for g in ana.guardians] == ["Maria Silva"]
        assert ana.guardians[0].language == "pt"
        assert {c.kind for c in db.session.scalars(select(SchoolClass))} == {"homeroom"}
        assert [c.name for c in db.session.get(Teacher, 1).classes] == ["7A", "8A"]
        reached = count(validate(["guardians", "students", "teachers"], [], []))
        assert reached.recipients == 3  # ana, maria, tom
        assert count(validate(["guardians"], [], ["8A"], [])).recipients == 1


def test_seed_demo_still_writes_one_school(app, runner):
    result = runner.invoke(args=["seed-demo", "--students", "50"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert [s.name for s in db.session.scalars(select(School))] == ["Demo School"]
        assert count(validate(["students"], [], [], ["demo"])).by_role["students"] > 0
