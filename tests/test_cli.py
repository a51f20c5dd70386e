"""The command line: seed-demo, create-user, create-token and revoke-token."""
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from school.auth.models import ApiToken, User
from school.extensions import db
from school.roster.models import Guardian, SchoolClass, Student, Teacher, class_teachers, student_guardians

from tests.support.accounts import AuthActions, Login

ROSTER = (SchoolClass, Student, Guardian, Teacher, student_guardians, class_teachers)


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {table.name if hasattr(table, "name") else table.__tablename__:
                db.session.scalar(select(func.count()).select_from(table)) for table in ROSTER}


def snapshot(app) -> list:
    """Everything a person would see of the roster, in a comparable form."""
    with app.app_context():
        students = db.session.scalars(select(Student).order_by(Student.id)).all()
        teachers = db.session.scalars(select(Teacher).order_by(Teacher.id)).all()
        return [
            [(s.name, s.grade, s.school_class.name, s.email,
              sorted((g.name, g.email, g.language) for g in s.guardians)) for s in students],
            [(t.name, t.email, sorted(c.name for c in t.classes)) for t in teachers],
        ]


def seed(runner, *args):
    return runner.invoke(args=["seed-demo", *args])


def test_seed_demo_builds_a_school_of_that_many_students(app, runner):
    result = seed(runner, "--students", "60")
    assert result.exit_code == 0, result.output
    assert "60 students" in result.output
    with app.app_context():
        students = db.session.scalars(select(Student)).all()
        classes = db.session.scalars(select(SchoolClass)).all()
        assert len(students) == 60
        assert {c.grade for c in classes} == set(range(1, 13)), "classes across every grade"
        assert all(s.school_class.grade == s.grade for s in students)
        assert all(1 <= len(s.guardians) <= 2 for s in students)

        children = defaultdict(set)
        for s in students:
            for g in s.guardians:
                children[g.id].add(s.id)
        siblings = [kids for kids in children.values() if len(kids) > 1]
        assert siblings, "some families have more than one child"
        by_id = {s.id: s for s in students}
        for kids in siblings:  # siblings share their guardians
            assert len({frozenset(g.id for g in by_id[k].guardians) for k in kids}) == 1

        assert all(c.teachers for c in classes), "every class has a teacher"
        emails = [p.email for model in (Student, Guardian, Teacher)
                  for p in db.session.scalars(select(model)) if p.email]
        assert emails and all(e.endswith("@example.org") for e in emails)
        assert len(set(emails)) == len(emails)


def test_seed_demo_is_deterministic(app, runner):
    assert seed(runner, "--students", "80").exit_code == 0
    first = snapshot(app)
    assert seed(runner, "--students", "80", "--reset").exit_code == 0
    assert snapshot(app) == first


def test_seed_demo_twice_refuses_and_changes_nothing(app, runner):
    assert seed(runner, "--students", "40").exit_code == 0
    before, roster = counts(app), snapshot(app)
    result = seed(runner, "--students", "90")
    assert result.exit_code != 0
    assert "A roster already exists; run again with --reset to replace it." in result.output
    assert counts(app) == before
    assert snapshot(app) == roster


def test_seed_demo_reset_replaces_the_roster(app, runner):
    assert seed(runner, "--students", "90").exit_code == 0
    result = seed(runner, "--students", "30", "--reset")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Student)) == 30
        orphans = select(func.count()).select_from(Guardian).where(~Guardian.students.any())
        assert db.session.scalar(orphans) == 0, "no guardians left over from the old roster"


def test_seeded_roster_takes_new_people_afterwards(app_on, db_url):
    """Seeding writes explicit ids; PostgreSQL's sequences must move past them."""
    app = app_on(db_url)
    assert seed(app.test_cli_runner(), "--students", "30").exit_code == 0
    with app.app_context():
        school_class = db.session.scalar(select(SchoolClass).where(SchoolClass.name == "5A"))
        guardian = Guardian(name="Late Arrival", email="late@example.org")
        db.session.add_all([guardian, Teacher(name="New Teacher", email="new.teacher@example.org"),
                            SchoolClass(grade=5, name="5Z"),
                            Student(name="New Student", grade=5, school_class=school_class, guardians=[guardian])])
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Student)) == 31


def test_seed_demo_refuses_a_silly_size(runner):
    result = seed(runner, "--students", "0")
    assert result.exit_code == 2
    assert "--students" in result.output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_seed_demo_writes_a_hundred_thousand_students(app, runner):
    result = seed(runner, "--students", "100000")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Student)) == 100_000
        assert db.session.scalar(select(func.count(func.distinct(Student.class_id)))) == db.session.scalar(
            select(func.count()).select_from(SchoolClass))


# --- users and tokens ---------------------------------------------------------------------------

def user(app, email: str) -> User | None:
    with app.app_context():
        return db.session.scalar(select(User).where(User.email == email))


@pytest.mark.parametrize("role, admin_page", [("admin", 200), ("staff", 403)])
def test_create_user_makes_someone_who_can_log_in(app, runner, client, role, admin_page):
    result = runner.invoke(args=["create-user", "Teacher@School.example.org", "--password", "correct-horse",
                                 "--role", role])
    assert result.exit_code == 0, result.output
    assert f"Created {role} teacher@school.example.org." in result.output
    AuthActions(client).login_as(Login("teacher@school.example.org", "correct-horse", role))
    assert client.get("/admin/users").status_code == admin_page


def test_create_user_again_sets_a_new_password(app, runner, client):
    runner.invoke(args=["create-user", "a@school.example.org", "--password", "first-password", "--role", "staff"])
    result = runner.invoke(args=["create-user", "a@school.example.org", "--password", "second-password",
                                 "--role", "admin"])
    assert result.exit_code == 0
    assert "Updated admin a@school.example.org." in result.output
    auth = AuthActions(client)
    assert auth.login("a@school.example.org", "first-password").status_code == 401
    assert auth.login("a@school.example.org", "second-password").status_code == 302


@pytest.mark.parametrize("args, code, message", [
    (["--password", "long-enough-1", "--role", "owner"], 2, "Invalid value for '--role'"),
    (["--password", "short", "--role", "staff"], 1, "The password needs at least 8 characters."),
])
def test_create_user_refuses_bad_input_and_creates_nobody(app, runner, args, code, message):
    result = runner.invoke(args=["create-user", "b@school.example.org", *args])
    assert result.exit_code == code
    assert message in result.output
    assert user(app, "b@school.example.org") is None


def test_create_user_refuses_a_bad_address(app, runner, row_count):
    result = runner.invoke(args=["create-user", "not-an-address", "--password", "long-enough-1"])
    assert result.exit_code == 1
    assert "Not a valid email address" in result.output
    assert row_count(User) == 0


def test_create_token_prints_a_token_for_the_api_and_revoke_token_ends_it(runner, client, staff_user):
    result = runner.invoke(args=["create-token", staff_user.email])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": token}).status_code == 401

    revoked = runner.invoke(args=["revoke-token", token])
    assert revoked.exit_code == 0
    assert "Revoked 1 token(s)." in revoked.output
    response = client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "error" in response.json


def test_revoke_token_by_email_ends_every_token_of_that_user(app, runner, client, staff_user, admin_user):
    staff_tokens = [runner.invoke(args=["create-token", staff_user.email]).output.strip() for _ in range(2)]
    admin_token = runner.invoke(args=["create-token", admin_user.email]).output.strip()
    result = runner.invoke(args=["revoke-token", staff_user.email])
    assert "Revoked 2 token(s)." in result.output
    for token in staff_tokens:
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200


def test_tokens_are_stored_only_as_hashes(app, runner, staff_user):
    token = runner.invoke(args=["create-token", staff_user.email]).output.strip()
    with app.app_context():
        stored = db.session.scalar(select(ApiToken))
        assert token not in (stored.token_hash, stored.prefix)
        assert stored.prefix == token[:10]


def test_token_commands_refuse_what_they_do_not_know(runner):
    result = runner.invoke(args=["create-token", "nobody@school.example.org"])
    assert result.exit_code == 1
    assert "No user nobody@school.example.org" in result.output
    result = runner.invoke(args=["revoke-token", "sk_not-a-token"])
    assert result.exit_code == 1
    assert "No matching active token." in result.output
