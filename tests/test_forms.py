"""The create-event form: each mistake is named beside its field and nothing is written; the
audience picker's live count matches the roster."""
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from school.events.models import Event
from school.events.services import latest_date
from school.extensions import db
from school.notify.models import NotificationJob
from school.roster.models import Guardian, SchoolClass, Student, Teacher

from tests.support.accounts import STAFF, AuthActions, add_user
from tests.support.pages import field_error, parse

VALID = {"title": "Parents' evening", "description": "Meet the form tutors.", "location": "Main hall",
         "starts_at": "2026-12-01T18:00", "ends_at": "2026-12-01T20:00", "priority": "normal",
         "roles": ["guardians", "students"], "grades": ["7"], "classes": ["9A"]}


OUT_OF_RANGE = f"Use a date from 2000-01-01 up to 10 years from now ({latest_date(datetime.now(timezone.utc)):%Y-%m-%d})."


@pytest.fixture
def staff(auth, staff_user, seeded):
    auth.login_as(staff_user)
    return auth


@pytest.mark.parametrize("change, field, message", [
    ({"title": ""}, "title", "This field is required."),
    ({"title": "   "}, "title", "This field is required."),
    ({"title": "x" * 201}, "title", "At most 200 characters (this has 201)."),
    ({"description": "x" * 5001}, "description", "At most 5000 characters (this has 5001)."),
    ({"location": "x" * 201}, "location", "At most 200 characters (this has 201)."),
    ({"ends_at": "2026-12-01T17:59"}, "ends_at", "The event cannot end before it starts."),
    ({"starts_at": "next tuesday"}, "starts_at", "Use a date and time like 2026-12-01T18:00."),
    ({"ends_at": "2026-13-45T25:00"}, "ends_at", "Use a date and time like 2026-12-01T18:00."),
    ({"starts_at": ""}, "starts_at", "A date and time is required."),
    ({"classes": ["7Z"]}, "classes", "Unknown class: 7Z"),
    ({"grades": ["13"]}, "grades", "Unknown grade: 13"),
    ({"grades": ["seven"]}, "grades", "Unknown grade: seven"),
    ({"roles": []}, "roles", "Choose at least one of guardians, students or teachers."),
    ({"roles": ["parents"]}, "roles", "Unknown role: parents (choose from guardians, students, teachers)"),
    ({"priority": "panic"}, "priority", "Choose normal or urgent."),
])
def test_invalid_event_is_named_beside_its_field_and_nothing_is_written(staff, row_count, change, field, message):
    response = staff.post("/events/new", {**VALID, **change})
    assert response.status_code == 422
    assert field_error(response.data, field) == message
    page = parse(response.data)
    assert page.find(role="alert").text == "Please correct the marked fields."
    assert page.find(id=field) is None or page.find(id=field).attrs.get("aria-invalid") == "true"
    # What was typed is kept, so only the mistake needs fixing.
    if field != "title":
        assert page.find("input", name="title").attrs["value"] == VALID["title"]
    assert row_count(Event) == row_count(NotificationJob) == 0


def test_several_mistakes_are_all_named_at_once(staff, row_count):
    response = staff.post("/events/new", {**VALID, "title": "", "ends_at": "2026-11-30T09:00", "classes": ["7Z"]})
    assert response.status_code == 422
    assert field_error(response.data, "title") == "This field is required."
    assert field_error(response.data, "ends_at") == "The event cannot end before it starts."
    assert field_error(response.data, "classes") == "Unknown class: 7Z"
    assert field_error(response.data, "location") is None
    assert row_count(Event) == 0


def test_valid_event_leads_to_its_page(app, staff, staff_user, row_count):
    response = staff.post("/events/new", VALID)
    assert response.status_code == 302
    with app.app_context():
        event = db.session.scalar(select(Event))
        assert (event.title, event.location) == ("Parents' evening", "Main hall")
        assert event.audience == {"roles": ["guardians", "students"], "grades": [7], "classes": ["9A"]}
        assert event.created_by.email == staff_user.email
        event_id = event.id
    assert response.location.startswith(f"/events/{event_id}")
    page = staff.client.get(response.location)
    assert page.status_code == 200
    assert parse(page.data).find("h1").text == "Parents' evening"
    assert row_count(NotificationJob) == 1


def test_form_offers_every_class_of_the_school(app, staff):
    page = parse(staff.client.get("/events/new").data)
    offered = {box.attrs["value"] for box in page.find_all("input", name="classes")}
    with app.app_context():
        assert offered == set(db.session.scalars(select(SchoolClass.name)))


# --- the audience picker's live count -----------------------------------------------------------

def expected_reach(grades=(), classes=()) -> dict[str, int]:
    """Distinct addresses per role, worked out from the roster in plain Python."""
    students = db.session.scalars(select(Student)).all()
    in_scope = [s for s in students
                if (not grades and not classes) or s.grade in grades or s.school_class.name in classes]
    guardians = {g.email for s in in_scope for g in s.guardians if g.email}
    teachers = {t.email for t in db.session.scalars(select(Teacher)).all()
                if t.email and any(c.grade in grades or c.name in classes or (not grades and not classes)
                                   for c in t.classes)}
    return {"guardians": len(guardians), "students": len({s.email for s in in_scope if s.email}),
            "teachers": len(teachers)}


@pytest.mark.parametrize("grades, classes", [((), ()), ((7,), ()), ((), ("9A",)), ((3, 8), ("11A",))])
def test_picker_shows_how_many_people_each_role_reaches(app, staff, grades, classes):
    response = staff.client.get("/events/reach", query_string={
        "roles": ["guardians", "students", "teachers"], "grades": list(grades), "classes": list(classes)})
    assert response.status_code == 200
    with app.app_context():
        want = expected_reach(grades, classes)
    assert min(want.values()) > 0, "the seeded school has people in every role here"
    text = parse(response.data).by_id("reach-count").text
    assert text.startswith(f"Reaches {want['guardians']:,} guardians, {want['students']:,} students, "
                           f"{want['teachers']:,} teachers")


def test_picker_names_people_who_will_be_skipped(app, staff):
    with app.app_context():
        no_email = [s for s in db.session.scalars(select(Student).where(Student.grade == 3))]
        assert all(s.email is None for s in no_email), "young students have no address in the demo school"
    text = parse(staff.client.get("/events/reach", query_string={"roles": ["students"], "grades": ["3"]}).data
                 ).by_id("reach-count").text
    assert text.startswith("Reaches 0 students")
    assert f"{len(no_email)} without an email will be skipped" in text


def test_picker_follows_a_roster_change(app, staff):
    query = {"roles": ["guardians"], "classes": ["9A"]}
    before = parse(staff.client.get("/events/reach", query_string=query).data).by_id("reach-count").text
    with app.app_context():
        from school.roster.services import roster_changed

        student = db.session.scalar(select(Student).join(SchoolClass).where(SchoolClass.name == "9A"))
        student.guardians.append(Guardian(name="New Guardian", email="new.guardian@example.org"))
        db.session.commit()
        roster_changed()
        want = expected_reach(classes=("9A",))["guardians"]
    after = parse(staff.client.get("/events/reach", query_string=query).data).by_id("reach-count").text
    assert after != before
    assert after.startswith(f"Reaches {want} guardians")


def test_picker_explains_an_audience_it_cannot_count(staff):
    response = staff.client.get("/events/reach", query_string={"roles": ["guardians"], "classes": ["7Z"]})
    assert response.status_code == 200
    assert parse(response.data).by_id("reach-count").text == "Unknown class: 7Z"


# --- text and dates that one database or the other cannot take ------------------------------------

@pytest.fixture
def staff_on(app_on, db_url):
    """Logged-in staff on a seeded school, on SQLite and on PostgreSQL."""
    from school.roster.seed import seed_demo

    app = app_on(db_url)
    with app.app_context():
        seed_demo(60)
    return app, AuthActions.logged_in(app, add_user(app, STAFF))


@pytest.mark.parametrize("change, field, message", [
    ({"title": "Sports\x00day"}, "title", "Remove the control characters (such as NUL) from this text."),
    ({"location": "Field\x07"}, "location", "Remove the control characters (such as NUL) from this text."),
    ({"description": "Line one\x00"}, "description", "Remove the control characters (such as NUL) from this text."),
    ({"starts_at": "0001-01-01T00:00+05:00"}, "starts_at", OUT_OF_RANGE),
    ({"ends_at": "9999-12-31T23:00-05:00"}, "ends_at", OUT_OF_RANGE),
    ({"classes": ["9\x00A"]}, "classes", "Unknown class: 9\x00A"),
])
def test_text_and_dates_no_database_can_keep_are_refused(staff_on, change, field, message):
    app, staff = staff_on
    response = staff.post("/events/new", {**VALID, **change})
    assert response.status_code == 422
    assert field_error(response.data, field) == message
    with app.app_context():
        assert db.session.scalar(select(Event)) is None


def test_ordinary_unicode_and_line_breaks_are_kept(staff_on):
    app, staff = staff_on
    title = "Fête de l’école 👨\u200d👩\u200d👧 —\u00a0all welcome"
    description = "Doors open at 17:30.\r\nBring a plate to share.\tThanks!"
    assert staff.post("/events/new", {**VALID, "title": title, "description": description}).status_code == 302
    with app.app_context():
        event = db.session.scalar(select(Event))
        assert event.title == title
        assert event.description == description.strip()


def test_picker_on_a_class_name_with_nul_says_unknown(staff_on):
    _, staff = staff_on
    response = staff.client.get("/events/reach", query_string={"roles": ["guardians"], "classes": ["9\x00A"]})
    assert response.status_code == 200
    assert parse(response.data).by_id("reach-count").text.startswith("Unknown class: 9")
