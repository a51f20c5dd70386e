"""What the live progress fragment shows to whom: the counts to any staff member; who failed, at
which address and what their mail server replied, only to admins and the event's creator; the
controls only to admins, whatever the URL asks for."""
import pytest

from school.auth.models import ApiToken
from school.auth.services import save_user
from school.extensions import db
from tests.support.accounts import ADMIN_EMAIL, ADMIN_PASSWORD, AuthActions
from tests.support.pages import parse

pytestmark = pytest.mark.slow

CREATOR = ("teacher-lead@springfield-school.example.org", "creator-password-1")
OTHER = ("office@springfield-school.example.org", "office-password-1")
REFUSAL = "550 5.1.1 No such user here"


@pytest.fixture
def failed_job(make_school, smtp_server, consumer):
    """A finished job of a staff member's event, one of whose recipients the mail server refused."""
    school = make_school(students=12, smtp=smtp_server)
    with school.app.app_context():
        creator, _ = save_user(*CREATOR, "staff")
        save_user(*OTHER, "staff")
        token, secret = ApiToken.issue(creator)
        db.session.add(token)
        db.session.commit()
    refused, name = school.sql("SELECT email, name FROM teachers WHERE email IS NOT NULL ORDER BY email LIMIT 1")[0]
    smtp_server.reply_for[refused] = REFUSAL
    response = school.client.post("/api/events", headers={"Authorization": f"Bearer {secret}"}, json={
        "title": "Staff meeting", "starts_at": "2031-03-12T16:00:00Z", "ends_at": "2031-03-12T17:00:00Z",
        "audience": {"roles": ["teachers"], "grades": [], "classes": []}})
    assert response.status_code == 202, response.json
    job_id = response.json["job_id"]
    consumer(school, workers=2)
    job = school.wait_job_done(job_id, 60)
    assert job["failed"] == 1 and job["sent"] > 0
    return school, job_id, refused, name


def fragment_as(school, email: str, password: str, job_id: int):
    browser = AuthActions(school.app.test_client())
    assert browser.login(email, password).status_code == 302
    response = browser.client.get(f"/jobs/{job_id}/progress", query_string={"controls": "1"})
    # Sending has ended, but families may still read and answer until the event: slower polling.
    assert response.status_code == 200
    assert parse(response.data).find("div", class_="progress").attrs["hx-trigger"] == "every 10s"
    return response.get_data(as_text=True)


def test_the_progress_stops_asking_once_the_event_is_over(failed_job):
    school, job_id, _, _ = failed_job
    school.execute("UPDATE events SET starts_at = '2020-03-12 16:00:00+00', ends_at = '2020-03-12 17:00:00+00'")
    browser = AuthActions(school.app.test_client())
    assert browser.login(*OTHER).status_code == 302
    response = browser.client.get(f"/jobs/{job_id}/progress")
    assert response.status_code == 286  # nothing on it can change any more: htmx stops polling
    assert "hx-trigger" not in response.get_data(as_text=True)


def test_other_staff_see_the_counts_but_no_recipient_and_no_controls(failed_job):
    school, job_id, refused, name = failed_job
    html = fragment_as(school, *OTHER, job_id)
    assert parse(html).find("dd", data_stat="failed").text == "1"
    for private in (refused, name, REFUSAL, "Failed recipients"):
        assert private not in html, private
    assert "hx-post" not in html and not parse(html).find_all("button")


def test_the_events_creator_sees_who_failed_but_no_controls(failed_job):
    school, job_id, refused, name = failed_job
    html = fragment_as(school, *CREATOR, job_id)
    assert refused in html and name in html and REFUSAL in html
    assert "hx-post" not in html and not parse(html).find_all("button")


def test_admins_see_who_failed_and_the_controls(failed_job):
    school, job_id, refused, name = failed_job
    html = fragment_as(school, ADMIN_EMAIL, ADMIN_PASSWORD, job_id)
    assert refused in html and name in html and REFUSAL in html
    assert [button.text for button in parse(html).find_all("button")] == ["Retry failed"]
