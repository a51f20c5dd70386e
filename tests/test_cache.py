"""The shared cache: repeated reads are served from it, and a write shows at once in every process.

Run on the embedded cache (a directory under DATA_DIR) and on Redis. "Another process" is a second
app built from the same settings: it shares nothing with the first but the cache's backend.
"""
import pytest

from tests.support.accounts import AuthActions
from tests.support.pages import parse
from tests.support.school import build_app

ANYONE = {"roles": ["guardians"], "grades": [], "classes": []}


@pytest.fixture(params=["embedded", "redis"])
def school(request, make_school):
    if request.param == "redis":
        return make_school(students=24, redis=request.getfixturevalue("redis_server"))
    return make_school(students=24)


def execute(school, statement: str, **params) -> None:
    """A write behind the app's back, committed in a connection of its own."""
    from sqlalchemy import text

    from school.extensions import db

    with school.app.app_context(), db.engine.begin() as conn:
        conn.execute(text(statement), params)


def listed_titles(client) -> list[str]:
    response = client.get("/")
    assert response.status_code == 200
    table = parse(response.data).find("table")
    return [row.find("a").text for row in table.find("tbody").find_all("tr")] if table else []


def cache_stats(client) -> dict:
    return client.get("/health/cache").json


def test_a_repeated_events_list_is_served_from_the_cache(school):
    client = school.admin().client
    first = school.create_event(ANYONE, title="Parents' evening")
    assert listed_titles(client) == ["Parents' evening"]

    # Changed behind the app's back: a page served from the cache still shows the old title.
    execute(school, "UPDATE events SET title = 'Renamed quietly' WHERE id = :id", id=first["event_id"])
    before = cache_stats(client)
    assert listed_titles(client) == ["Parents' evening"]
    after = cache_stats(client)
    assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"])

    # Any new event invalidates the cached list: both show as they are now.
    school.create_event(ANYONE, title="Sports day")
    assert listed_titles(client) == ["Sports day", "Renamed quietly"]


def test_a_new_event_shows_at_once_in_every_process(school):
    web1 = school.app
    web2 = build_app(school.env)  # another web process on the same settings
    client1, client2 = AuthActions.logged_in(web1).client, AuthActions.logged_in(web2).client

    school.create_event(ANYONE, title="Sports day")
    assert listed_titles(client1) == listed_titles(client2) == ["Sports day"]

    # Created through the other process: both lists show it on the very next request.
    response = client2.post("/api/events", headers={"Authorization": f"Bearer {school.token}"}, json={
        "title": "Book fair", "starts_at": "2031-04-01T09:00:00Z", "ends_at": "2031-04-01T12:00:00Z",
        "audience": ANYONE})
    assert response.status_code == 202
    assert listed_titles(client1) == ["Book fair", "Sports day"]
    assert listed_titles(client2) == ["Book fair", "Sports day"]


def test_job_statuses_on_the_cached_list_stay_current(school):
    client = school.admin().client
    created = school.create_event(ANYONE, title="Concert")
    listed_titles(client)  # cached now
    execute(school, "UPDATE notification_jobs SET status = 'canceled' WHERE id = :id", id=created["job_id"])
    badge = parse(client.get("/").data).find("tbody").find("span", class_="badge canceled")
    assert badge is not None and badge.text == "canceled"


def test_queue_totals_include_a_new_job_at_once(school):
    headers = {"Authorization": f"Bearer {school.token}"}
    client = school.app.test_client()
    assert client.get("/health/queue", headers=headers).json["jobs"]["queued"] == 0
    school.create_event(ANYONE)
    assert client.get("/health/queue", headers=headers).json["jobs"]["queued"] == 1


def test_audience_counts_are_cached_until_the_roster_changes(school):
    from school.roster.services import roster_changed

    client = school.admin().client
    query = {"roles": "students", "grades": "7"}

    def reach() -> str:
        response = client.get("/events/reach", query_string=query)
        assert response.status_code == 200
        return parse(response.data).by_id("reach-count").text

    before = reach()
    class_id = school.scalar("SELECT id FROM classes WHERE grade = 7 ORDER BY id LIMIT 1")
    execute(school, "INSERT INTO students (name, grade, email, class_id) "
            "VALUES ('New Pupil', 7, 'new.pupil@example.org', :c)", c=class_id)
    assert reach() == before  # served from the cache
    with school.app.app_context():
        roster_changed()  # what every roster write calls
    after = reach()
    assert after != before
    assert f"{int(before.split()[1]) + 1} students" in after


def test_the_events_list_works_while_redis_is_down(make_school, redis_server):
    school = make_school(redis=redis_server)
    client = school.admin().client
    school.create_event(ANYONE, title="Open day")
    redis_server.stop()
    assert listed_titles(client) == ["Open day"]


def test_the_events_list_pages_newest_first(app, seeded, auth, staff_user):
    from sqlalchemy import select

    from school.auth.models import User
    from school.events.models import Event
    from school.extensions import db

    with app.app_context():
        author = db.session.scalar(select(User).where(User.email == staff_user.email))
        db.session.add_all([Event(title=f"Event {n:02d}", starts_at=db.func.now(), ends_at=db.func.now(),
                                  audience={"roles": ["guardians"]}, created_by=author) for n in range(25)])
        db.session.commit()
    auth.login(staff_user.email, staff_user.password)
    first = auth.client.get("/").get_data(as_text=True)
    assert "Event 24" in first and "Event 04" not in first and "Page 1 of 2" in first and "Older" in first
    second = auth.client.get("/?page=2").get_data(as_text=True)
    assert "Event 04" in second and "Event 24" not in second and "Page 2 of 2" in second and "Newer" in second
