"""Input that used to end in a 500 or in an event no page could show: JSON nested past the
parser's depth, dates far outside a school's horizon, and local times that daylight saving time
skips or repeats. Each is a 4xx (or, for a repeated time, an event) with a message that says why.
"""
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from school.events.models import Event
from school.events.services import latest_date
from school.extensions import db
from school.notify.models import NotificationJob
from tests.support.accounts import ADMIN, AuthActions, add_user, issue_token
from tests.support.pages import field_error, parse


BERLIN = "Europe/Berlin"
AUDIENCE = {"roles": ["guardians"], "grades": [], "classes": []}
FORM = {"title": "Open day", "priority": "normal", "roles": ["guardians"]}


@pytest.fixture
def berlin(app_on, sqlite_url):
    """A school in Berlin (clocks forward on 2027-03-28 at 02:00, back on 2027-10-31 at 03:00), with
    an admin who holds a token and is logged in to the form."""
    app = app_on(sqlite_url, SCHOOL_TIMEZONE=BERLIN)
    admin = add_user(app, ADMIN)
    token = issue_token(app, admin.email)
    browser = AuthActions(app.test_client())
    browser.login_as(admin)
    return app, token, browser


def post_event(app, token, **times):
    body = {"title": "Open day", "audience": AUDIENCE, **times}
    return app.test_client().post("/api/events", json=body, headers={"Authorization": f"Bearer {token}"})


def counts(app) -> tuple[int, int]:
    with app.app_context():
        return (len(db.session.scalars(select(Event)).all()), len(db.session.scalars(select(NotificationJob)).all()))


def test_json_nested_past_the_parsers_depth_is_a_400_not_a_500(berlin):
    app, token, _ = berlin
    for body in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 30_000 + b"1" + b"}" * 30_000):
        response = app.test_client().post("/api/events", data=body, content_type="application/json",
                                          headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400, response.status_code
        assert response.json == {"error": "the JSON is nested too deeply"}
    assert counts(app) == (0, 0)


@pytest.mark.parametrize("starts_at", ["9999-12-31T10:00", "1999-12-31T23:59:59Z", "0001-01-01T00:00+05:00",
                                       "2150-06-01T09:00Z", "1970-01-01T00:00"])
def test_dates_outside_the_schools_horizon_are_refused_by_field(berlin, starts_at):
    app, token, browser = berlin
    latest = f"{latest_date(datetime.now(timezone.utc)):%Y-%m-%d}"
    expected = f"Use a date from 2000-01-01 up to 10 years from now ({latest})."

    response = post_event(app, token, starts_at=starts_at, ends_at="2031-06-01T10:00Z")
    assert response.status_code == 422
    assert response.json["fields"] == {"starts_at": expected}

    form = browser.post("/events/new", {**FORM, "starts_at": starts_at.removesuffix("Z"), "ends_at": "2031-06-01T10:00"})
    assert form.status_code == 422
    assert field_error(form.data, "starts_at") in (expected, "Use a date and time like 2026-12-01T18:00.")
    assert counts(app) == (0, 0)


def test_the_last_day_of_the_horizon_is_accepted(berlin):
    app, token, _ = berlin
    edge = latest_date(datetime.now(timezone.utc)).replace(hour=0, minute=0, second=0, microsecond=0)
    response = post_event(app, token, starts_at=edge.isoformat(), ends_at=edge.isoformat())
    assert response.status_code == 202, response.json


def test_a_time_the_clocks_skip_is_refused_saying_it_does_not_exist(berlin):
    app, token, browser = berlin
    expected = ("2027-03-28 02:30 does not exist in Europe/Berlin: the clocks skip that hour for daylight "
                "saving time. Choose a time before or after it.")
    response = post_event(app, token, starts_at="2027-03-28T02:30", ends_at="2027-03-28T04:00")
    assert response.status_code == 422
    assert response.json["fields"] == {"starts_at": expected}

    form = browser.post("/events/new", {**FORM, "starts_at": "2027-03-28T01:30", "ends_at": "2027-03-28T02:00"})
    assert form.status_code == 422
    assert field_error(form.data, "ends_at") == expected.replace("02:30", "02:00")
    assert counts(app) == (0, 0)


def test_a_time_the_clocks_pass_twice_takes_the_first_and_says_so(berlin):
    app, token, browser = berlin
    note = ("2027-10-31 02:30 happens twice in Europe/Berlin (the clocks go back an hour that night); "
            "the first one was taken, 02:30 CEST (UTC+0200).")
    response = post_event(app, token, starts_at="2027-10-31T02:30", ends_at="2027-10-31T05:00")
    assert response.status_code == 202, response.json
    assert response.json["notes"] == {"starts_at": note}
    with app.app_context():
        event = db.session.get(Event, response.json["event_id"])
        assert event.starts_at.replace(tzinfo=timezone.utc) == datetime(2027, 10, 31, 0, 30, tzinfo=timezone.utc)

    plain = post_event(app, token, starts_at="2027-10-31T05:00", ends_at="2027-10-31T06:00")
    assert plain.status_code == 202 and "notes" not in plain.json

    form = browser.post("/events/new", {**FORM, "starts_at": "2027-10-31T01:00", "ends_at": "2027-10-31T02:30"})
    assert form.status_code == 302
    page = parse(browser.client.get(form.location).data)
    assert f"Ends: {note}" in [p.text for p in page.find_all("p", role="status")]
