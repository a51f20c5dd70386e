"""The office's view of its people: search, a person's page, and the contacts to fix."""
import pytest
from sqlalchemy import select

from school.extensions import db
from school.roster.importer import import_roster
from school.roster.models import Guardian, SchoolClass, Student, Teacher

from tests.support.pages import csrf_token, parse
from tests.support.roster import MARIA, first_bundle, write_bundle


@pytest.fixture
def roster(app, tmp_path):
    """The two-school bundle, where Ben's only guardian is Nina, whose address needs fixing."""
    files = first_bundle()
    for user in files["users.csv"]:
        if user["sourcedId"] == "st-ben":
            user["agentSourcedIds"] = "g-nina"
        if user["sourcedId"] == "g-maria":
            user["agentSourcedIds"] = "st-ana"
    with app.app_context():
        summary = import_roster(write_bundle(tmp_path / "a", files))
        assert not summary.refused
        ids = {s.sourced_id: s.id for s in db.session.scalars(select(Student))}
        ids |= {g.sourced_id: g.id for g in db.session.scalars(select(Guardian))}
        ids |= {t.sourced_id: t.id for t in db.session.scalars(select(Teacher))}
        ids |= {c.sourced_id: c.id for c in db.session.scalars(select(SchoolClass))}
    return ids


def names(html) -> list[str]:
    return [a.text for a in parse(html).find_all("a") if "/roster/students/" in (a.attrs.get("href") or "")
            or "/roster/guardians/" in (a.attrs.get("href") or "")]


def test_staff_search_people_by_name_or_email(auth, staff_user, roster, client):
    auth.login_as(staff_user)
    page = client.get("/roster/people/students?q=silva")
    assert page.status_code == 200
    assert names(page.data) == ["Ana Silva", "Ben Silva"]
    page = client.get("/roster/people/guardians?q=" + MARIA.split("@")[0])
    assert names(page.data) == ["Maria Silva"]
    page = client.get("/roster/people/guardians?q=nina")
    assert "nina(at)example.org (needs fixing)" in page.get_data(as_text=True)
    classes = client.get("/roster/classes?q=7a").get_data(as_text=True)
    assert classes.count(">7A</a>") == 2  # North's and South's


def test_a_persons_page_shows_links_contacts_language_and_notices(app, auth, admin_user, roster, client):
    from school.events.services import create_event, parse_event
    from school.notify.fanout import run_fanout

    with app.app_context():
        from school.auth.models import User

        admin = db.session.scalar(select(User).where(User.email == admin_user.email))
        event = create_event(parse_event({"title": "Sports day", "starts_at": "2031-06-12T09:00:00Z",
                                          "ends_at": "2031-06-12T15:00:00Z",
                                          "audience": {"roles": ["guardians"], "classes": ["7A"], "schools": ["N"]}}),
                             admin, lambda job_id, priority: None)
        run_fanout(event.job.id, lambda batch_id, priority: None)
    auth.login_as(admin_user)
    html = client.get(f"/roster/students/{roster['st-ana']}").get_data(as_text=True)
    assert "Homeroom" in html and "MATH7-1" in html and "Maria Silva" in html and "pt" in html
    html = client.get(f"/roster/guardians/{roster['g-maria']}").get_data(as_text=True)
    assert "Ana Silva" in html and MARIA in html
    assert "Sports day" in html and "pending" in html
    html = client.get(f"/roster/teachers/{roster['t-tom']}").get_data(as_text=True)
    assert "MATH7-1</a> (scheduled)" in html and "7A</a> (homeroom)" in html
    html = client.get(f"/roster/classes/{roster['c-math']}").get_data(as_text=True)
    assert "Scheduled class" in html and "Ana Silva" in html and "Cara Li" in html and "Tom Baker" in html
    html = client.get(f"/roster/classes/{roster['c-n7a']}").get_data(as_text=True)
    assert "Homeroom class" in html and "Ben Silva" in html and "Cara Li" not in html


def test_contacts_to_fix_lists_unreachable_students_and_an_admin_corrects_one(auth, admin_user, roster, client):
    auth.login_as(admin_user)
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    assert "1 students have no guardian" in html
    assert "North School · 7A" in html and "Ben Silva" in html
    token = csrf_token(html)
    nina = roster["g-nina"]
    bad = client.post(f"/roster/guardians/{nina}/email", data={"email": "nina at example", "csrf_token": token},
                      headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "Enter a valid email address" in bad.get_data(as_text=True)
    good = client.post(f"/roster/guardians/{nina}/email",
                       data={"email": "nina@families.example.org", "csrf_token": token,
                             "next": "/roster/contacts-to-fix"})
    assert good.status_code == 302 and good.location.endswith("/roster/contacts-to-fix")
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    assert "0 students have no guardian" in html and "Ben Silva" not in html


def test_staff_may_look_but_not_correct(auth, staff_user, roster, client):
    auth.login_as(staff_user)
    html = client.get("/roster/contacts-to-fix").get_data(as_text=True)
    assert "Ben Silva" in html and "<form method=\"post\" action=\"/roster/guardians" not in html
    response = client.post(f"/roster/guardians/{roster['g-nina']}/email",
                           data={"email": "x@example.org", "csrf_token": csrf_token(html)})
    assert response.status_code == 403


def test_a_roster_upload_without_a_file_is_re_rendered_with_the_message(auth, admin_user, client):
    auth.login_as(admin_user)
    response = auth.post("/roster/imports", {"mode": "dry-run"})
    assert response.status_code == 422
    assert "Choose a OneRoster .zip" in response.get_data(as_text=True)
