"""Who gets in: anonymous callers, staff and admins; login, logout, CSRF and where login sends you."""
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from werkzeug.routing import AnyConverter, IntegerConverter

from school.auth.models import User
from school.events.models import Event
from school.extensions import db
from school.notify.models import NotificationJob

from tests.support.accounts import STAFF, AuthActions, add_user
from tests.support.pages import csrf_token, parse

# Open to anyone: the login form, static files, and the health checks that load balancers poll.
PUBLIC_ENDPOINTS = {"static", "auth.login"}
# family: the link's token is the capability, no login; bounces: providers' webhooks, which carry
# the shared secret instead (tests/test_bounces.py checks they refuse a wrong one).
PUBLIC_BLUEPRINTS = {"health", "family", "bounces"}

EVENT_FORM = {"title": "Sports day", "description": "Bring trainers.", "location": "Field",
              "starts_at": "2026-06-12T09:00", "ends_at": "2026-06-12T15:00", "priority": "normal",
              "roles": ["guardians"], "grades": ["7"]}


def _sample(converter) -> str | int:
    if isinstance(converter, IntegerConverter):
        return 1
    if isinstance(converter, AnyConverter):
        return sorted(converter.items)[0]
    return "sample"


def protected_routes(app):
    """(method, url) for every route that needs a login, built from the app's own URL map."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint.split(".")[0] in PUBLIC_BLUEPRINTS:
            continue
        url = rule.build({name: _sample(conv) for name, conv in rule._converters.items()})[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, url


def _is_json_route(url: str) -> bool:
    return url.startswith("/api/")


def test_every_page_sends_anonymous_users_to_login(app, client):
    token = csrf_token(client.get("/login").data)  # so POSTs reach the login check, not the CSRF one
    refused = []
    for method, url in protected_routes(app):
        if _is_json_route(url):
            continue
        response = client.open(url, method=method, data={"csrf_token": token} if method == "POST" else None)
        location = urlsplit(response.location or "")
        if response.status_code != 302 or location.path != "/login" or parse_qs(location.query).get("next") != [url]:
            refused.append((method, url, response.status_code, response.location))
    assert refused == []


def test_json_routes_answer_anonymous_callers_with_401_json(app, client):
    answers = {}
    for method, url in protected_routes(app):
        if _is_json_route(url):
            response = client.open(url, method=method, json={})
            answers[(method, url)] = (response.status_code, response.is_json and "error" in response.json)
    assert answers, "the app has JSON routes"
    assert set(answers.values()) == {(401, True)}, answers


def test_pages_asked_for_json_answer_401_json(client):
    response = client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert "error" in response.json


def test_htmx_polls_after_the_session_ended_send_the_page_to_login(client):
    response = client.get("/jobs/1/progress", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login"


def test_a_login_reaches_the_pages(auth, client, staff_user):
    auth.login_as(staff_user)
    page = client.get("/")
    assert page.status_code == 200
    assert staff_user.email in parse(page.data).find("button").text


# --- staff are not admins -----------------------------------------------------------------------

def user_row(login) -> User:
    return db.session.scalar(select(User).where(User.email == login.email))


@pytest.fixture
def job_id(app, staff_user, seeded):
    from school.events.services import create_event, parse_event
    from school.notify.tasks import enqueue_fanout

    with app.app_context():
        user = user_row(staff_user)
        data = {**EVENT_FORM, "audience": {"roles": ["guardians"], "grades": [7], "classes": []}}
        return create_event(parse_event(data), user, enqueue_fanout).job.id


ADMIN_PAGES = ["/jobs", "/jobs/{job}", "/jobs/rows", "/admin/users", "/admin/queue", "/dev/mailbox"]
ADMIN_POSTS = ["/jobs/{job}/pause", "/jobs/{job}/cancel", "/admin/users", "/admin/users/{admin}"]


def _admin_id(app, admin_user) -> int:
    with app.app_context():
        return user_row(admin_user).id


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_staff_cannot_open_admin_pages_that_admins_can(session_as, staff_user, admin_user, job_id, path):
    url = path.format(job=job_id)
    assert session_as(staff_user).client.get(url).status_code == 403
    assert session_as(admin_user).client.get(url).status_code == 200


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_staff_cannot_use_admin_controls(app, session_as, staff_user, admin_user, job_id, row_count, path):
    staff = session_as(staff_user)
    users_before = row_count(User)
    response = staff.post(path.format(job=job_id, admin=_admin_id(app, admin_user)),
                          {"email": "intruder@example.org", "password": "long-enough-1", "role": "admin",
                           "active": "0"})
    assert response.status_code == 403
    assert row_count(User) == users_before
    with app.app_context():
        assert db.session.get(NotificationJob, job_id).status == "queued"
    assert session_as(admin_user).client.get("/").status_code == 200, "the admin was not deactivated"


def test_staff_see_their_event_and_its_progress(session_as, staff_user, job_id, app):
    with app.app_context():
        event_id = db.session.get(NotificationJob, job_id).event_id
    staff = session_as(staff_user).client
    assert staff.get(f"/events/{event_id}").status_code == 200
    assert staff.get(f"/jobs/{job_id}/progress").status_code == 200


# --- logging in and out -------------------------------------------------------------------------

def _alert(response) -> str:
    return parse(response.data).find(role="alert").text


def test_wrong_credentials_say_so_without_telling_whether_the_account_exists(auth, client, staff_user):
    unknown = auth.login("nobody@school.example.org", staff_user.password)
    wrong_password = auth.login(staff_user.email, "not-the-password")
    assert unknown.status_code == wrong_password.status_code == 401
    assert _alert(unknown) == _alert(wrong_password) == "Wrong email or password."
    # The form keeps what was typed, except the password.
    field = parse(wrong_password.data).find("input", name="email")
    assert field.attrs["value"] == staff_user.email
    assert parse(wrong_password.data).find("input", name="password").attrs.get("value") in (None, "")
    assert client.get("/").status_code == 302, "still logged out"


def test_email_is_matched_whatever_its_case(auth, client, staff_user):
    assert auth.login(staff_user.email.upper(), staff_user.password).status_code == 302


def test_deactivated_user_gets_the_same_message(app, auth, staff_user):
    with app.app_context():
        user_row(staff_user).active = False
        db.session.commit()
    response = auth.login(staff_user.email, staff_user.password)
    assert response.status_code == 401
    assert _alert(response) == "Wrong email or password."


def test_logout_ends_the_session(auth, client, staff_user):
    auth.login_as(staff_user)
    assert client.get("/").status_code == 200
    response = auth.logout()
    assert response.status_code == 302 and urlsplit(response.location).path == "/login"
    assert "You are logged out." in client.get("/login").get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_logout_is_not_a_link_a_page_can_trigger(auth, client, staff_user):
    auth.login_as(staff_user)
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("target", ["/events/new", "/events/new?grade=7", "/jobs/1"])
def test_login_follows_next_within_the_site(auth, staff_user, target):
    response = auth.login(staff_user.email, staff_user.password, next=target)
    assert response.status_code == 302
    location = urlsplit(response.location)
    assert location.netloc in ("", "localhost")
    assert (location.path + (f"?{location.query}" if location.query else "")) == target


@pytest.mark.parametrize("target", [
    "https://evil.example.com/", "//evil.example.com/", "///evil.example.com/", "/\\evil.example.com/",
    "\\\\evil.example.com/", "/\t/evil.example.com/", "javascript:alert(1)", "http:/evil.example.com",
    "evil.example.com",
])
def test_login_never_sends_anyone_off_site(auth, staff_user, target):
    response = auth.login(staff_user.email, staff_user.password, next=target)
    assert response.status_code == 302
    assert response.location == "/"


# --- CSRF ---------------------------------------------------------------------------------------

def test_form_post_without_csrf_token_is_refused_and_writes_nothing(auth, client, staff_user, seeded, row_count):
    auth.login_as(staff_user)
    response = client.post("/events/new", data=EVENT_FORM)
    assert response.status_code == 400
    assert "Reload the page and try again" in response.get_data(as_text=True)
    assert row_count(Event) == row_count(NotificationJob) == 0


def test_csrf_token_of_another_session_is_refused(app, auth, client, staff_user, seeded, row_count):
    auth.login_as(staff_user)
    stranger = app.test_client()
    foreign = csrf_token(stranger.get("/login").data)
    response = client.post("/events/new", data={**EVENT_FORM, "csrf_token": foreign})
    assert response.status_code == 400
    assert row_count(Event) == 0


def test_login_without_csrf_token_is_refused(client, staff_user):
    response = client.post("/login", data={"email": staff_user.email, "password": staff_user.password})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_logout_without_csrf_token_is_refused(auth, client, staff_user):
    auth.login_as(staff_user)
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_htmx_requests_carry_the_token_in_a_header(auth, client, staff_user, seeded, row_count):
    auth.login_as(staff_user)
    page = parse(client.get("/events/new").data)
    headers = json.loads(page.find("body").attrs["hx-headers"])
    response = client.post("/events/new", data=EVENT_FORM, headers={**headers, "HX-Request": "true"})
    assert response.status_code == 302
    assert row_count(Event) == row_count(NotificationJob) == 1


def test_login_with_text_the_database_cannot_compare_is_just_wrong(app_on, db_url):
    app = app_on(db_url)
    user = add_user(app, STAFF)
    auth = AuthActions(app.test_client())
    response = auth.login(user.email.replace("@", "\x00@"), user.password)
    assert response.status_code == 401
    assert _alert(response) == "Wrong email or password."


# --- addresses no row can have ----------------------------------------------------------------------

HUGE = 10**20  # past every database's INTEGER


@pytest.mark.parametrize("url, status", [
    (f"/events/{HUGE}", 404), (f"/jobs/{HUGE}", 404), (f"/jobs/{HUGE}/progress", 404),
    (f"/?page={HUGE}", 200), ("/?page=-3", 200),
])
def test_impossible_numbers_in_addresses_are_not_found_never_an_error(session_as, admin_user, url, status):
    assert session_as(admin_user).client.get(url).status_code == status


def test_impossible_job_number_in_the_api_is_a_json_404(runner, client, staff_user):
    token = runner.invoke(args=["create-token", staff_user.email]).output.strip()
    response = client.get(f"/api/jobs/{HUGE}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert "error" in response.json


# --- sessions end when they should ----------------------------------------------------------------

def test_logging_in_starts_a_fresh_session(auth, client, staff_user):
    """Nothing set before the login survives it (a session planted in the browser beforehand is
    not the one that gets logged in), and the session's id and CSRF token are new."""
    auth.csrf("/login")
    with client.session_transaction() as before:
        before["planted"] = "by someone else"
        before_values = dict(before)
    auth.login_as(staff_user)
    with client.session_transaction() as after:
        assert "planted" not in after
        assert after["sid"] and after["sid"] != before_values.get("sid")
        assert after.get("csrf_token") != before_values["csrf_token"]
    assert client.get("/").status_code == 200

    other = AuthActions(client.application.test_client())
    other.login_as(staff_user)
    with client.session_transaction() as first, other.client.session_transaction() as second:
        assert first["sid"] != second["sid"]


def remembered_only(app, browser) -> "object":
    """A new browser holding only ``browser``'s remember-me cookie (its session cookie expired)."""
    remembered = app.test_client()
    remembered.set_cookie("remember_token", browser.client.get_cookie("remember_token").value)
    return remembered


@pytest.fixture
def staff_everywhere(app, staff_user):
    """The staff user logged in on two browsers, one of them with "remember me", and a third
    browser that has only that remember-me cookie."""
    office, laptop = AuthActions(app.test_client()), AuthActions(app.test_client())
    office.login_as(staff_user)
    assert laptop.post("/login", {"email": staff_user.email, "password": staff_user.password,
                                  "remember": "1"}).status_code == 302
    phone = remembered_only(app, laptop)
    for browser in (office.client, laptop.client, phone):
        assert browser.get("/").status_code == 200
    return office.client, laptop.client, phone


def test_a_new_password_ends_every_session_and_remember_me_cookie(app, runner, staff_user, staff_everywhere):
    result = runner.invoke(args=["create-user", staff_user.email, "--password", "a-new-password-2",
                                 "--role", "staff"])
    assert result.exit_code == 0, result.output
    for browser in staff_everywhere:
        assert browser.get("/").status_code == 302
    assert AuthActions(app.test_client()).login(staff_user.email, "a-new-password-2").status_code == 302


def test_the_same_password_again_keeps_the_sessions(app, runner, staff_user, staff_everywhere):
    runner.invoke(args=["create-user", staff_user.email, "--password", staff_user.password, "--role", "staff"])
    assert [browser.get("/").status_code for browser in staff_everywhere] == [200, 200, 200]


def test_deactivating_ends_sessions_for_good(app, staff_user, admin_user, session_as, staff_everywhere):
    admin = session_as(admin_user)
    with app.app_context():
        staff_id = user_row(staff_user).id
    assert admin.post(f"/admin/users/{staff_id}", {"active": "0"}).status_code == 302
    assert admin.post(f"/admin/users/{staff_id}", {"active": "1"}).status_code == 302
    for browser in staff_everywhere:
        assert browser.get("/").status_code == 302, "a session from before the deactivation came back"
    assert session_as(staff_user).client.get("/").status_code == 200  # a new login works


def test_a_deactivated_account_costs_a_full_password_check_like_a_wrong_password(app, staff_user, monkeypatch):
    """Refusing a deactivated account must not be quicker than refusing a wrong password, or the
    time of the answer would tell which accounts exist but are switched off."""
    import school.auth.models as models
    from school.auth.services import authenticate

    checked = []
    real_check = models.check_password_hash
    monkeypatch.setattr(models, "check_password_hash", lambda stored, given: checked.append(
        stored.split("$", 1)[0]) or real_check(stored, given))
    with app.app_context():
        user_row(staff_user).active = False
        db.session.commit()
        for email, password in ((staff_user.email, staff_user.password), (staff_user.email, "wrong-password"),
                                ("nobody@school.example.org", staff_user.password)):
            checked.clear()
            assert authenticate(email, password) is None
            assert checked == ["scrypt:32768:8:1"], (email, password, checked)
