"""Importing a OneRoster bundle: who events reach afterwards, re-sync, dry runs and bad input."""
import shutil
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from school.extensions import db
from school.roster.audience import recipients, validate
from school.roster.importer import import_roster
from school.roster.models import Guardian, School, SchoolClass, Student, Teacher, class_students, class_teachers, \
    student_guardians

from tests.support.roster import (ANA, CARA, DAN, EVE, FINN_PARENT, MARIA, MARIA_NEW, PAUL, SAM, TOM, UNA, ZOE,
                             first_bundle, second_bundle, write_bundle)

HOMEROOM_7A_NORTH = dict(roles=["guardians"], grades=[], classes=["7A"], schools=["N"])
MATHS = dict(roles=["students", "teachers"], grades=[], classes=["MATH7-1"])


@pytest.fixture
def roster_app(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        yield app


def reached(roles, grades=(), classes=(), schools=()) -> dict[str, list[str]]:
    """Each address the audience reaches, with the children it is told about."""
    audience = validate(list(roles), list(grades), list(classes), list(schools))
    return {r.email: sorted(r.children) for r in recipients(audience)}


def snapshot() -> dict:
    """Everything an import may change, to compare before and after."""
    tables = [School.__table__, SchoolClass.__table__, Student.__table__, Guardian.__table__, Teacher.__table__,
              student_guardians, class_teachers, class_students]
    return {t.name: sorted(map(tuple, db.session.execute(select(t)).all()), key=repr) for t in tables}


def test_a_bundle_reaches_exactly_the_addresses_it_implies(roster_app, tmp_path):
    summary = import_roster(write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip"))
    assert not summary.refused, summary.lines()
    assert summary.counts["schools"].added == 2 and summary.counts["districts"].added == 1
    assert summary.counts["classes"].added == 6
    assert (summary.counts["students"].added, summary.counts["guardians"].added,
            summary.counts["teachers"].added) == (5, 5, 3)
    assert summary.links["scheduled class places"] == (4, 0)
    # Nina's address is kept to be fixed, and said so with its file and line.
    assert any(p.file == "users.csv" and p.line == 8 and "nina(at)example.org" in p.message for p in summary.problems)
    nina = db.session.scalar(select(Guardian).where(Guardian.sourced_id == "g-nina"))
    assert (nina.email, nina.invalid_email) == (None, "nina(at)example.org")

    # Homeroom 7A of North only: Maria for both her children; not Paul, whose Dan is in South's 7A.
    assert reached(**HOMEROOM_7A_NORTH) == {MARIA: ["Ana Silva", "Ben Silva"]}
    # The code 7A alone means both schools' 7A.
    assert set(reached(["guardians"], classes=["7A"])) == {MARIA, PAUL}
    # A scheduled class: its students and its teacher, nobody from the homerooms around them.
    assert set(reached(**MATHS)) == {ANA, CARA, TOM}
    assert set(reached(["guardians"], classes=["ART-1"])) == {PAUL, ZOE}
    assert set(reached(["teachers"], schools=["s-south"])) == {SAM}
    assert set(reached(["students", "teachers", "guardians"])) == {ANA, CARA, DAN, EVE, MARIA, PAUL, ZOE, TOM, UNA, SAM}
    assert set(reached(["students"], grades=[8])) == {EVE}
    ana = db.session.scalar(select(Student).where(Student.sourced_id == "st-ana"))
    assert (ana.language, ana.school_class.name, [c.name for c in ana.scheduled_classes]) == ("pt", "7A", ["MATH7-1"])


def test_reimport_follows_the_school_and_then_has_no_changes(roster_app, tmp_path):
    import_roster(write_bundle(tmp_path / "a", first_bundle()))
    again = import_roster(write_bundle(tmp_path / "a", first_bundle()))
    assert again.no_changes and "no changes" in again.lines()

    summary = import_roster(write_bundle(tmp_path / "b", second_bundle(), zip_name="b.zip"))
    assert (summary.counts["students"].added, summary.counts["students"].deactivated) == (1, 1)
    assert (summary.counts["guardians"].added, summary.counts["guardians"].changed,
            summary.counts["guardians"].deactivated) == (1, 1, 1)
    assert reached(**HOMEROOM_7A_NORTH) == {MARIA_NEW: ["Ana Silva"], FINN_PARENT: ["Finn Berg"]}
    assert set(reached(**MATHS)) == {ANA, CARA, TOM}
    ben = db.session.scalar(select(Student).where(Student.sourced_id == "st-ben"))
    assert ben is not None and not ben.active  # kept for history, never reached

    before = snapshot()
    dry = import_roster(write_bundle(tmp_path / "b", second_bundle()), dry_run=True)
    assert dry.no_changes
    assert snapshot() == before


def test_a_dry_run_reports_what_a_real_run_does_and_writes_nothing(roster_app, tmp_path):
    bundle = write_bundle(tmp_path / "a", first_bundle())
    dry = import_roster(bundle, dry_run=True)
    assert db.session.scalar(select(func.count()).select_from(Student)) == 0
    real = import_roster(bundle)
    assert dry.counts == real.counts and dry.links == real.links
    assert dry.dry_run and not real.dry_run

    dry = import_roster(write_bundle(tmp_path / "b", second_bundle()), dry_run=True)
    before = snapshot()
    real = import_roster(write_bundle(tmp_path / "b", second_bundle()))
    assert snapshot() != before
    assert dry.counts == real.counts and dry.links == real.links


def test_a_delta_file_changes_only_what_it_names(roster_app, tmp_path):
    import_roster(write_bundle(tmp_path / "a", first_bundle()))
    manifest = [("manifest.version", "1.0"), ("oneroster.version", "1.1"), ("file.users", "delta"),
                ("file.orgs", "absent"), ("file.classes", "absent"), ("file.enrollments", "delta")]
    files = {
        "users.csv": [
            {"sourcedId": "st-eve", "status": "tobedeleted", "dateLastModified": "2026-12-01T00:00:00Z",
             "orgSourcedIds": "s-south", "role": "student", "givenName": "Eve", "familyName": "Kim"},
            {"sourcedId": "g-zoe", "status": "active", "orgSourcedIds": "s-south", "role": "parent",
             "givenName": "Zoe", "familyName": "Kim", "email": "zoe.kim@families.example.org"},
            {"sourcedId": "st-gus", "status": "active", "orgSourcedIds": "s-north", "role": "student",
             "givenName": "Gus", "familyName": "Li", "email": "gus@students.example.org", "grades": "07",
             "agentSourcedIds": "g-hong"},
        ],
        "enrollments.csv": [
            {"sourcedId": "e-x", "status": "active", "classSourcedId": "c-math", "schoolSourcedId": "s-north",
             "userSourcedId": "st-ben", "role": "student"},
            {"sourcedId": "e-gus", "status": "active", "classSourcedId": "c-n7b", "schoolSourcedId": "s-north",
             "userSourcedId": "st-gus", "role": "student"},
        ],
    }
    bundle = write_bundle(tmp_path / "delta", files, manifest=manifest)
    dry = import_roster(bundle, dry_run=True)
    summary = import_roster(bundle)
    assert (dry.counts, dry.links) == (summary.counts, summary.links)
    assert summary.counts["students"].deactivated == 1 and summary.counts["guardians"].changed == 1
    assert summary.counts["students"].added == 1
    assert set(reached(["students"], classes=["7B"])) == {CARA, "gus@students.example.org"}
    assert import_roster(bundle).no_changes
    assert summary.counts["teachers"].deactivated == 0
    assert set(reached(["students"], classes=["ART-1"])) == {DAN}
    assert reached(["guardians"], classes=["MATH7-1"]) == {MARIA: ["Ana Silva", "Ben Silva"],
                                                          PAUL: ["Cara Li"]}


# --- bad input ----------------------------------------------------------------------------------

def refused(path: Path) -> list[str]:
    summary = import_roster(path)
    assert summary.refused, summary.lines()
    assert db.session.scalar(select(func.count()).select_from(Student)) == 0, "nothing may be half-applied"
    return [str(p) for p in summary.problems]


def test_a_missing_required_column_is_refused_naming_file_and_column(roster_app, tmp_path):
    from tests.support.roster import USERS

    headers = {"users.csv": tuple(c for c in USERS if c != "familyName")}
    problems = refused(write_bundle(tmp_path / "a", first_bundle(), headers=headers))
    assert problems == ["users.csv line 1: missing required column: familyName"]


def test_rows_naming_unknown_classes_or_users_are_skipped_and_listed(roster_app, tmp_path):
    files = first_bundle()
    files["enrollments.csv"].append({"sourcedId": "e-bad", "classSourcedId": "c-nope", "schoolSourcedId": "s-north",
                                     "userSourcedId": "st-ana", "role": "student"})
    files["enrollments.csv"].append({"sourcedId": "e-bad2", "classSourcedId": "c-n7a", "schoolSourcedId": "s-north",
                                     "userSourcedId": "st-ghost", "role": "student"})
    summary = import_roster(write_bundle(tmp_path / "a", files))
    assert not summary.refused
    messages = [str(p) for p in summary.problems]
    line = len(files["enrollments.csv"])  # the header is line 1
    assert f"enrollments.csv line {line}: enrollment e-bad refers to unknown class 'c-nope'; row skipped" in messages
    assert (f"enrollments.csv line {line + 1}: enrollment e-bad2 refers to unknown student 'st-ghost'; row skipped"
            in messages)
    assert set(reached(**MATHS)) == {ANA, CARA, TOM}


def test_more_than_one_percent_of_bad_users_refuses_the_whole_bundle(roster_app, tmp_path):
    files = first_bundle()
    files["users.csv"][4]["orgSourcedIds"] = "s-nowhere"  # Eve: 1 bad user of 13
    problems = refused(write_bundle(tmp_path / "a", files))
    assert any("student st-eve belongs to no known school" in p for p in problems)
    assert any("1 of 13 users have errors" in p for p in problems)


def test_a_byte_order_mark_is_accepted(roster_app, tmp_path):
    summary = import_roster(write_bundle(tmp_path / "a", first_bundle(), encoding="utf-8-sig"))
    assert not summary.refused and summary.counts["students"].added == 5


def test_a_file_that_is_not_utf8_is_refused_with_its_line(roster_app, tmp_path):
    files = first_bundle()
    files["users.csv"][2]["givenName"] = "Cára"
    folder = write_bundle(tmp_path / "a", files)
    text = (folder / "users.csv").read_text(encoding="utf-8")
    (folder / "users.csv").write_bytes(text.encode("cp1252"))
    assert refused(folder) == ["users.csv line 4: the file is not UTF-8 text; export it again as CSV UTF-8"]


def test_a_broken_zip_is_refused(roster_app, tmp_path):
    archive = write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    problems = refused(archive)
    assert len(problems) == 1 and problems[0].startswith("a.zip: not a readable zip archive")


def test_neither_format_is_refused_naming_what_was_found(roster_app, tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", "hello")
    assert refused(archive) == ["x.zip: neither a OneRoster bundle (no manifest.csv) nor the simple CSV "
                                "(no students.csv); found: notes.txt"]


# --- the simple CSV and the command line ----------------------------------------------------------

SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples"


def test_the_documented_simple_csv_sample_imports(roster_app, tmp_path):
    folder = tmp_path / "simple"
    shutil.copytree(SAMPLES / "simple", folder)
    summary = import_roster(folder)
    assert not summary.refused, summary.lines()
    assert summary.counts["students"].added == 6 and summary.counts["teachers"].added == 3
    found = reached(["guardians"], classes=["7A"])
    assert found["lena.weber@example.org"] == ["Jonas Weber", "Mia Weber"]  # siblings share one guardian
    assert set(reached(["students", "teachers"], classes=["Maths 7"])) == {
        "jonas.weber@students.example.org", "amira.haddad@students.example.org", "r.okafor@school.example.org"}
    assert import_roster(folder).no_changes


def test_import_roster_command_prints_the_summary(app, runner, tmp_path):
    bundle = write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip")
    result = runner.invoke(args=["import-roster", str(bundle), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "(dry run: nothing was written)" in result.output
    assert "students: 5 added, 0 changed, 0 deactivated" in result.output
    assert "users.csv line 8: invalid email 'nina(at)example.org' for g-nina; kept as needs fixing" in result.output
    result = runner.invoke(args=["import-roster", str(bundle)])
    assert "students: 5 added" in result.output
    result = runner.invoke(args=["import-roster", str(bundle)])
    assert "no changes" in result.output
    result = runner.invoke(args=["import-roster", str(tmp_path / "missing.zip")])
    assert result.exit_code == 1 and "refused" in result.output


def test_a_bad_row_for_someone_already_here_leaves_them_as_they_were(roster_app, tmp_path):
    files = first_bundle()
    many = [dict(files["users.csv"][4], sourcedId=f"st-extra{n}", givenName=f"Extra{n}") for n in range(120)]
    files["users.csv"].extend(many)  # enough users that one bad row stays under 1%
    import_roster(write_bundle(tmp_path / "a", files))
    files["users.csv"][0]["orgSourcedIds"] = "s-nowhere"  # Ana's row now has an error
    summary = import_roster(write_bundle(tmp_path / "b", files))
    assert not summary.refused and summary.counts["students"].deactivated == 0
    assert any("student st-ana belongs to no known school" in str(p) for p in summary.problems)
    assert ANA in reached(["students"], classes=["MATH7-1"])


def test_an_import_lost_with_its_consumer_is_run_again(roster_app, tmp_path):
    from datetime import timedelta

    from school.roster import imports
    from school.roster.models import RosterImport
    from school.timeutil import utcnow

    bundle = write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip")
    hour_ago = utcnow() - timedelta(hours=1)
    lost = RosterImport(filename="a.zip", bundle=bundle.read_bytes(), status="running", started_at=hour_ago,
                        created_at=hour_ago)
    running = RosterImport(filename="a.zip", bundle=bundle.read_bytes(), status="running", started_at=utcnow(),
                           created_at=hour_ago)
    db.session.add_all([lost, running])
    db.session.commit()
    assert imports.stale() == [lost.id]  # the other one is still within its lease
    imports.run(running.id)
    assert db.session.get(RosterImport, running.id).status == "running", "a live import is not run twice"
    imports.run(lost.id)
    done = db.session.get(RosterImport, lost.id)
    assert done.status == "done" and done.summary["counts"]["students"]["added"] == 5
    assert done.bundle is None  # a real run lets the upload go
    assert set(reached(**MATHS)) == {ANA, CARA, TOM}
