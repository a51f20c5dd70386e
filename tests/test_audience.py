"""Who an event reaches, on SQLite and on PostgreSQL, from a small roster built by hand.

    7A  Ana Silva (ana@)        guardian Maria Silva (maria@)    teachers Tom (tom@)
    8A  Bruno Silva (no email)  guardian Maria Silva (maria@)    teachers Tom (tom@), Vic (no email)
    7B  Chen Li (chen@)         guardians Hong Li (hong@), Wei Li (no email)    teacher Una (una@)
    9A  Mei Li (mei@)           guardians Hong Li (hong@), Wei Li (no email)    teacher Sam Khan (sam@)
    9A  Dara Khan (dara@)       guardian Sam Khan (sam@, who also teaches 9A)
    10A nobody
"""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, update

from school.extensions import db
from school.notify.models import declared_in_models
from school.roster.audience import Audience, AudienceError, count, recipients, validate
from school.roster.models import Guardian, SchoolClass, Student, Teacher

ANA, CHEN, MEI, DARA = ("ana@students.example.org", "chen@students.example.org", "mei@students.example.org",
                        "dara@students.example.org")
MARIA, HONG, SAM = "maria@families.example.org", "hong@families.example.org", "sam.khan@example.org"
TOM, UNA = "tom@staff.example.org", "una@staff.example.org"
ALL_ROLES = ("guardians", "students", "teachers")


def build_roster() -> None:
    classes = {name: SchoolClass(grade=int(name[:-1]), name=name) for name in ("7A", "7B", "8A", "9A", "10A")}
    maria = Guardian(name="Maria Silva", email=MARIA)
    hong = Guardian(name="Hong Li", email=HONG)
    wei = Guardian(name="Wei Li", email=None)
    sam_at_home = Guardian(name="Sam Khan", email=SAM)

    def student(name, class_name, email, *guardians):
        school_class = classes[class_name]
        return Student(name=name, grade=school_class.grade, school_class=school_class, email=email,
                       guardians=list(guardians))

    students = [
        student("Ana Silva", "7A", ANA, maria),
        student("Bruno Silva", "8A", None, maria),
        student("Chen Li", "7B", CHEN, hong, wei),
        student("Mei Li", "9A", MEI, hong, wei),
        student("Dara Khan", "9A", DARA, sam_at_home),
    ]
    teachers = [
        Teacher(name="Tom Baker", email=TOM, classes=[classes["7A"], classes["8A"]]),
        Teacher(name="Vic Moss", email=None, classes=[classes["8A"]]),
        Teacher(name="Una Reed", email=UNA, classes=[classes["7B"]]),
        Teacher(name="Sam Khan", email=SAM, classes=[classes["9A"]]),
    ]
    db.session.add_all([*classes.values(), *students, *teachers])
    db.session.commit()


@pytest.fixture
def school(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        build_roster()
        yield app


def reach(roles=ALL_ROLES, grades=(), classes=()):
    """Resolve an audience as an event would; also check that counting agrees with the stream."""
    audience = validate(list(roles), list(grades), list(classes))
    found = list(recipients(audience, chunk=2))
    emails = [r.email for r in found]
    assert emails == sorted(set(emails)), "each address once, in address order"
    counted = count(audience)
    assert counted.recipients == len(found)
    return {r.email: r for r in found}, counted


def test_whole_school_reaches_every_address_once(school):
    found, counted = reach()
    assert set(found) == {ANA, CHEN, MEI, DARA, MARIA, HONG, SAM, TOM, UNA}
    assert counted.by_role == {"guardians": 3, "students": 4, "teachers": 3}
    assert counted.recipients == 9


def test_people_without_email_are_counted_as_skipped_once_each(school):
    _, counted = reach()
    # Wei Li has two children in the school but is one person skipped.
    assert counted.skipped_by_role == {"guardians": 1, "students": 1, "teachers": 1}
    assert counted.skipped == 3


def test_siblings_guardian_is_one_recipient_naming_both_children(school):
    found, counted = reach(roles=["guardians"], grades=[7, 8])
    assert set(found) == {MARIA, HONG}
    assert sorted(found[MARIA].children) == ["Ana Silva", "Bruno Silva"]
    assert found[MARIA].roles == ["guardian"]
    assert counted.by_role == {"guardians": 2}
    assert counted.skipped_by_role == {"guardians": 1}


def test_a_guardian_is_told_only_about_children_in_scope(school):
    found, _ = reach(roles=["guardians"], grades=[7])
    assert found[MARIA].children == ["Ana Silva"]
    assert found[HONG].children == ["Chen Li"]


def test_guardian_who_also_teaches_gets_one_message_in_both_roles(school):
    found, counted = reach(grades=[9])
    assert set(found) == {MEI, DARA, HONG, SAM}
    assert sorted(found[SAM].roles) == ["guardian", "teacher"]
    assert found[SAM].children == ["Dara Khan"]
    assert counted.by_role == {"guardians": 2, "students": 2, "teachers": 1}
    assert counted.recipients == 4


def test_addresses_differing_only_in_case_or_spaces_are_one_recipient(school):
    db.session.execute(update(Teacher).where(Teacher.email == SAM).values(email=" Sam.Khan@Example.ORG "))
    db.session.execute(update(Student).where(Student.email == DARA).values(email=""))
    db.session.commit()
    found, counted = reach(grades=[9])
    assert set(found) == {MEI, HONG, SAM}
    assert sorted(found[SAM].roles) == ["guardian", "teacher"]
    # A blank address is no address: Dara is skipped, not mailed at "".
    assert counted.skipped_by_role["students"] == 1


def test_teacher_of_two_targeted_classes_is_one_recipient(school):
    found, counted = reach(roles=["teachers"], classes=["7A", "8A"])
    assert list(found) == [TOM]
    assert counted.by_role == {"teachers": 1}
    assert counted.skipped_by_role == {"teachers": 1}


def test_class_scope_reaches_only_that_class(school):
    found, counted = reach(classes=["7B"])
    assert set(found) == {CHEN, HONG, UNA}
    assert counted.by_role == {"guardians": 1, "students": 1, "teachers": 1}
    assert counted.skipped_by_role == {"guardians": 1, "students": 0, "teachers": 0}


def test_grade_scope_covers_all_its_classes(school):
    found, counted = reach(roles=["students", "teachers"], grades=[7])
    assert set(found) == {ANA, CHEN, TOM, UNA}
    assert counted.by_role == {"students": 2, "teachers": 2}


def test_grades_and_classes_together_are_a_union(school):
    found, counted = reach(grades=[9], classes=["7B"])
    assert set(found) == {CHEN, MEI, DARA, HONG, SAM, UNA}
    assert sorted(found[HONG].children) == ["Chen Li", "Mei Li"]
    assert counted.by_role == {"guardians": 2, "students": 3, "teachers": 2}
    assert counted.skipped_by_role == {"guardians": 1, "students": 0, "teachers": 0}


def test_a_class_with_nobody_in_it_reaches_nobody(school):
    found, counted = reach(classes=["10A"])
    assert found == {}
    assert (counted.recipients, counted.skipped) == (0, 0)


def test_audience_naming_what_the_school_does_not_have_is_refused(school):
    with pytest.raises(AudienceError) as refused:
        validate(["parents"], [13], ["7Z"])
    assert set(refused.value.fields) == {"roles", "grades", "classes"}
    assert "7Z" in refused.value.fields["classes"] and "13" in refused.value.fields["grades"]
    with pytest.raises(AudienceError) as refused:
        validate([], [], [])
    assert set(refused.value.fields) == {"roles"}


def test_validated_audience_keeps_only_what_was_asked_in_a_stable_order(school):
    assert validate(["teachers", "guardians", "teachers"], [9, 7, 9], ["7B"]) == Audience(
        ("guardians", "teachers"), (7, 9), ("7B",))


# --- the schema the migrations build ----------------------------------------------------------

def test_migrations_build_exactly_the_models(app_on, db_url):
    app = app_on(db_url)
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": declared_in_models})
        assert compare_metadata(context, db.metadata) == []


def test_migrations_go_down_and_up_again(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        build_roster()
        db.session.remove()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert "students" in inspect(db.engine).get_table_names()
        assert db.session.scalars(select(Student)).all() == []


def test_flask_db_upgrade_builds_the_schema(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        downgrade(revision="base")
        db.session.remove()
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert {"classes", "students", "guardians", "teachers", "users", "events", "notification_jobs"} <= tables
