"""Every route of the app, called by every kind of caller, with the outcome each one should get.

The table lists each endpoint's access rule; a route missing from it fails the test, so a new page
cannot ship without someone deciding who may reach it.
"""
from urllib.parse import parse_qs, urlsplit

import pytest

from school.auth.models import User
from school.extensions import db

from tests.support import accounts
from tests.support.accounts import AuthActions, add_user, issue_token
from tests.support.pages import csrf_token
from tests.support.school import EVENT

PUBLIC = "anyone"
SESSION = "any logged-in user"
ADMIN = "an admin's session"
TOKEN = "any API token"
ADMIN_TOKEN = "an admin's API token"
ADMIN_OR_TOKEN = "an admin's session or any API token"
WEBHOOK = "the bounce webhook's secret"

ACCESS = {
    "static": PUBLIC,
    "auth.login": PUBLIC,
    "health.health": PUBLIC,
    "health.ready": PUBLIC,
    "auth.logout": SESSION,
    "events.index": SESSION,
    "events.detail": SESSION,
    "events.new": SESSION,
    "events.reach": SESSION,
    "events.translation": SESSION,
    "jobs.fragment": SESSION,  # the progress shown on an event's page
    "jobs.index": ADMIN,
    "jobs.rows": ADMIN,
    "jobs.detail": ADMIN,
    "jobs.control": ADMIN,
    "admin.users": ADMIN,
    "admin.create_user": ADMIN,
    "admin.update_user": ADMIN,
    "admin.queue": ADMIN,
    "admin.queue_panel": ADMIN,
    "dev.mailbox": ADMIN,
    "dev.message": ADMIN,
    "dev.source": ADMIN,
    "api.create": TOKEN,
    "api.jobs": TOKEN,
    "api.job": TOKEN,
    "api.control": ADMIN_TOKEN,
    "health.queue": ADMIN_OR_TOKEN,
    "health.cache": ADMIN_OR_TOKEN,
    "health.prometheus": ADMIN_OR_TOKEN,
    "roster.index": ADMIN,
    "roster.upload": ADMIN,
    "roster.import_detail": ADMIN,
    "roster.import_progress": ADMIN,
    "roster.apply": ADMIN,
    "roster.people": SESSION,
    "roster.classes": SESSION,
    "roster.class_detail": SESSION,
    "roster.person": SESSION,
    "roster.contacts_to_fix": SESSION,
    "roster.correct_email": ADMIN,
    "roster_api.start": ADMIN_TOKEN,
    "roster_api.status": ADMIN_TOKEN,
    # The family pages: the link's token is the capability (a purged notice here, so every caller
    # reaches its "expired" page).
    "family.notice": PUBLIC,
    "family.calendar": PUBLIC,
    "family.acknowledge": PUBLIC,
    "family.rsvp": PUBLIC,
    "family.preferences_page": PUBLIC,
    "family.unsubscribe": PUBLIC,
    "events.remind": SESSION,
    "events.edit": SESSION,
    "events.cancel": SESSION,
    "jobs.reschedule": ADMIN,
    "api.change": TOKEN,
    "api.cancel_event_route": TOKEN,
    "api.reschedule": ADMIN_TOKEN,
    "jobs.ledger": ADMIN,
    "jobs.ledger_csv": ADMIN,
    "api.event": TOKEN,
    "api.remind": TOKEN,
    "api.job_recipients": ADMIN_TOKEN,
    "bounces_api.index": ADMIN_TOKEN,
    "bounces_api.lift": ADMIN_TOKEN,
    # Providers' webhooks: only the shared secret lets in (none is set here, so nobody).
    "bounces.webhook": WEBHOOK,
}

REACHED, LOGIN, UNAUTHORIZED, FORBIDDEN = "reached", "sent to log in", "401", "403"
CALLERS = ("anonymous", "staff", "admin", "staff token", "admin token")
EXPECTED = {
    PUBLIC: dict.fromkeys(CALLERS, REACHED),
    SESSION: {"anonymous": LOGIN, "staff": REACHED, "admin": REACHED, "staff token": LOGIN, "admin token": LOGIN},
    ADMIN: {"anonymous": LOGIN, "staff": FORBIDDEN, "admin": REACHED, "staff token": LOGIN, "admin token": LOGIN},
    TOKEN: {"anonymous": UNAUTHORIZED, "staff": UNAUTHORIZED, "admin": UNAUTHORIZED, "staff token": REACHED,
            "admin token": REACHED},
    ADMIN_TOKEN: {"anonymous": UNAUTHORIZED, "staff": UNAUTHORIZED, "admin": UNAUTHORIZED,
                  "staff token": FORBIDDEN, "admin token": REACHED},
    ADMIN_OR_TOKEN: {"anonymous": UNAUTHORIZED, "staff": FORBIDDEN, "admin": REACHED, "staff token": REACHED,
                     "admin token": REACHED},
    WEBHOOK: dict.fromkeys(CALLERS, FORBIDDEN),
}


@pytest.fixture
def app(app_on, sqlite_url, smtp_server):
    """The app with every dependency /health/ready checks up (its SMTP server included), so each
    route answers for who is calling, not for what happens to be listening on this machine."""
    return app_on(sqlite_url, MAIL_PORT=str(smtp_server.port))


@pytest.fixture
def world(app, admin_user, staff_user):
    """Tokens for both users, and an event with its job for the routes that need ids."""
    from school.auth.services import authenticate
    from school.events.services import create_event, parse_event
    from school.family.tokens import notice_token
    from school.notify.tasks import enqueue_fanout

    tokens = {"admin token": issue_token(app, admin_user.email), "staff token": issue_token(app, staff_user.email)}
    with app.app_context():
        admin = authenticate(admin_user.email, admin_user.password)
        staff = authenticate(staff_user.email, staff_user.password)
        event = create_event(parse_event(EVENT), admin, enqueue_fanout)
        ids = {"event_id": event.id, "job_id": event.job.id, "user_id": staff.id,
               "token": notice_token(event.job.id, 2**31 - 1)}
    return {"tokens": tokens, "ids": ids, "users": {"staff": staff_user, "admin": admin_user}}


ARGUMENTS = {"action": "pause", "name": "00000000000000000001-00000000.eml", "filename": "app.css",
             "kind": "students", "import_id": 1, "class_id": 1, "person_id": 1, "guardian_id": 1,
             "provider": "ses", "secret": "not-the-secret", "address": "someone@example.org"}


def routes(app, ids):
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        url = rule.build({name: ids.get(name, ARGUMENTS.get(name)) for name in rule.arguments})[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def call(app, world, caller: str, endpoint: str, method: str, url: str):
    """One request from a fresh client, as that caller would make it."""
    client = app.test_client()
    token = csrf_token(client.get("/login").data)  # everyone's session carries one, so POSTs reach the auth check
    headers = {}
    if caller in ("staff", "admin"):
        AuthActions(client).login_as(world["users"][caller])
        token = csrf_token(client.get("/events/new").data)  # a login starts a new session, with a new token
    elif caller.endswith("token"):
        headers["Authorization"] = f"Bearer {world['tokens'][caller]}"
    if method == "GET":
        return client.get(url, headers=headers)
    if url.startswith("/api/"):
        return client.open(url, method=method, headers=headers, json=EVENT)
    data = {"csrf_token": token}
    if endpoint == "auth.login":
        staff = world["users"]["staff"]
        data.update(email=staff.email, password=staff.password)
    return client.post(url, headers=headers, data=data)


def outcome(response) -> str:
    if response.status_code in (302, 303):
        location = urlsplit(response.location)
        if location.path == "/login" and "next" in parse_qs(location.query):
            return LOGIN
    if response.status_code == 401:
        return UNAUTHORIZED
    if response.status_code == 403:
        return FORBIDDEN
    assert response.status_code < 500, response.get_data(as_text=True)
    return REACHED


def test_every_route_is_in_the_access_table(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - set(ACCESS) == set(), "decide who may reach these routes and add them to ACCESS"
    assert set(ACCESS) - endpoints == set(), "these routes are gone; remove them from ACCESS"


def test_each_caller_reaches_exactly_what_it_should(app, world):
    wrong = []
    checked = 0
    for endpoint, method, url in routes(app, world["ids"]):
        expected = EXPECTED[ACCESS[endpoint]]
        for caller in CALLERS:
            with call(app, world, caller, endpoint, method, url) as response:  # closes streamed files
                got = outcome(response)
            checked += 1
            if got != expected[caller]:
                wrong.append(f"{method} {url} as {caller}: {got}, expected {expected[caller]}")
    assert wrong == []
    assert checked >= 5 * len(ACCESS)


def test_development_pages_do_not_exist_in_production(app_on, sqlite_url, redis_server):
    app = app_on(sqlite_url, APP_ENV="production", REDIS_URL=redis_server.url)
    admin = add_user(app, accounts.ADMIN)
    client = app.test_client()
    token = csrf_token(client.get("/login").data)
    client.post("/login", data={"email": admin.email, "password": admin.password, "csrf_token": token})
    for url in ("/dev/mailbox", "/dev/mailbox/00000000000000000001-00000000.eml"):
        assert client.get(url).status_code == 404, url


def test_a_deactivated_users_token_stops_working(app, world):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {world['tokens']['staff token']}"}
    assert client.get("/api/jobs", headers=headers).status_code == 200
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == world["users"]["staff"].email))
        user.active = False
        db.session.commit()
    assert client.get("/api/jobs", headers=headers).status_code == 401
