"""Notices on time, as a school plans them: a scheduled send that survives a killed consumer and an
empty Redis, reminders, quiet hours, and changes and cancellations that move or remove the entry
in every recipient's calendar."""
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from icalendar import Calendar

from school.notify.schedule import quiet_end
from school.timeutil import utcnow
from tests.support.host import wait_for
from tests.support.pages import csrf_token, parse
from tests.support.school import EVENT, WHOLE_SCHOOL
from tests.test_family import notices_of, personal_path, post_form

DOMAIN = "springfield-school.example.org"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def calendar_of(message) -> tuple[str, object]:
    """The email's calendar part: its method (from the part's Content-Type) and its one VEVENT."""
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    calendar = Calendar.from_ical(part.get_content().encode())
    assert str(calendar["METHOD"]) == part.get_param("method")
    (entry,) = calendar.walk("VEVENT")
    return str(calendar["METHOD"]), entry


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def first_sent(smtp, subject: str) -> float:
    return min(m.at for m in smtp.received if m.subject == subject)


@pytest.mark.slow
def test_a_scheduled_notice_leaves_on_time_though_its_consumer_is_killed_and_redis_emptied(
        make_school, smtp_server, redis_server, consumer):
    school = make_school(students=6, redis=redis_server, smtp=smtp_server)
    first = consumer(school, workers=2)
    first.wait_started()
    send_at = (utcnow() + timedelta(seconds=25)).replace(microsecond=0)
    created = school.create_event(WHOLE_SCHOOL, title="Term dates", send_at=iso(send_at))
    job = school.job(created["job_id"])
    assert job["status"] == "scheduled" and job["send_at"] == send_at.isoformat()
    assert 15 < job["starts_in_s"] <= 25

    # The only consumer dies hard and Redis loses everything it held; a new consumer comes later.
    time.sleep(3)
    first.kill()
    redis_server.client().flushall()
    time.sleep(5)
    assert school.job(created["job_id"])["status"] == "scheduled" and not smtp_server.received
    consumer(school, workers=2)

    done = school.wait_job_done(created["job_id"], 90)
    assert done["status"] == "done" and done["sent"] == done["total"] > 5 and done["failed"] == 0
    leaves = first_sent(smtp_server, "Term dates")
    assert send_at.timestamp() <= leaves < send_at.timestamp() + 10, "not before its time, and within seconds of it"
    assert len(notices_of(smtp_server, "Term dates")) == done["total"], "each recipient once"


@pytest.mark.slow
def test_a_reminder_to_those_who_have_not_acknowledged_reaches_exactly_them(make_school, smtp_server, consumer):
    school = make_school(students=8, smtp=smtp_server)
    consumer(school, workers=2)
    starts = utcnow() + timedelta(hours=1, seconds=25)
    created = school.create_event(WHOLE_SCHOOL, title="Science fair", starts_at=iso(starts),
                                  ends_at=iso(starts + timedelta(hours=2)), rsvp=True,
                                  reminders=[{"before": "PT1H", "to": "not_acknowledged"},
                                             {"before": "PT1H", "to": "rsvp_yes"}])
    event = school.api("GET", f"/api/events/{created['event_id']}").get_json()
    assert [(r["before"], r["to"], r["job_id"]) for r in event["reminders"]] == [
        ("PT1H", "not_acknowledged", None), ("PT1H", "rsvp_yes", None)]
    first = school.wait_job_done(created["job_id"], 20)
    got = notices_of(smtp_server, "Science fair")
    assert len(got) == first["total"] > 5

    # Two families say they have read it, one answers yes, before the reminders are due.
    readers, yes = sorted(got)[:2], sorted(got)[-1]
    family = school.app.test_client()
    for address in readers:
        path = personal_path(got[address])
        assert post_form(family, path, path + "/ack").status_code == 302
    path = personal_path(got[yes])
    assert post_form(family, path, path + "/rsvp", {"answer": "yes"}).status_code == 302
    assert not notices_of(smtp_server, "Reminder: Science fair"), "nothing before the reminders' time"

    def both_sent():
        jobs = [r["job_id"] for r in school.api("GET", f"/api/events/{created['event_id']}").get_json()["reminders"]]
        return all(jobs) and all(school.job(j)["status"] == "done" for j in jobs)

    wait_for(both_sent, 60, 0.5, "the reminders were not sent")
    reminded = [m.rcpt for m in smtp_server.received if m.subject == "Reminder: Science fair"]
    # Those who had not acknowledged; and, by its own reminder, the one who answered yes (again).
    assert sorted(reminded) == sorted([*(set(got) - set(readers)), yes])
    # A reminder is the same calendar entry as the notice, not a second one.
    method, entry = calendar_of(notices_of(smtp_server, "Reminder: Science fair")[yes])
    assert method == "PUBLISH" and str(entry["UID"]) == f"event-{created['event_id']}@{DOMAIN}"
    assert str(entry["SUMMARY"]) == "Science fair"


def test_quiet_hours_are_school_time_and_may_span_midnight(app_on, sqlite_url):
    app = app_on(sqlite_url, QUIET_HOURS="21:00-07:00", SCHOOL_TIMEZONE="Europe/Berlin")
    at = lambda text: datetime.fromisoformat(text)  # noqa: E731
    with app.app_context():
        assert quiet_end(at("2027-01-11T21:30:00+01:00")) == at("2027-01-12T07:00:00+01:00")
        assert quiet_end(at("2027-01-12T06:59:00+01:00")) == at("2027-01-12T07:00:00+01:00")
        assert quiet_end(at("2027-01-12T07:00:00+01:00")) is None
        assert quiet_end(at("2027-01-12T20:59:00+01:00")) is None
        # The night the clocks go forward: 07:00 is 05:00 UTC, not 06:00.
        assert quiet_end(at("2027-03-27T23:00:00+01:00")) == at("2027-03-28T07:00:00+02:00")


@pytest.mark.slow
def test_a_normal_notice_waits_for_the_end_of_quiet_hours_and_an_urgent_one_does_not(
        make_school, smtp_server, consumer):
    now = datetime.now(timezone.utc)
    start, end = (now - timedelta(hours=1)), (now + timedelta(hours=2))
    school = make_school(students=6, smtp=smtp_server, QUIET_HOURS=f"{start:%H:%M}-{end:%H:%M}")
    consumer(school, workers=2)
    normal = school.create_event(WHOLE_SCHOOL, title="Newsletter")
    urgent = school.create_event(WHOLE_SCHOOL, title="School closed: storm", priority="urgent")
    done = school.wait_job_done(urgent["job_id"], 30)
    assert done["sent"] == done["total"] > 5
    waiting = school.job(normal["job_id"])
    assert waiting["status"] == "scheduled" and waiting["waiting_for"] == "quiet hours"
    assert waiting["situation"] == "waits for the end of the quiet hours"
    assert waiting["send_at"] == end.replace(second=0, microsecond=0).isoformat()
    time.sleep(3)  # the consumer has looked a few times: still nothing of it leaves
    assert not notices_of(smtp_server, "Newsletter")
    assert school.job(normal["job_id"])["status"] == "scheduled"
    # The admins' page says so.
    admin = school.admin()
    page = admin.client.get(f"/jobs/{normal['job_id']}").get_data(as_text=True)
    assert "Inside the quiet hours" in page


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_change_and_a_cancellation_reach_exactly_the_original_recipients(make_school, smtp_server, consumer,
                                                                           database):
    school = make_school(students=8, database=database, smtp=smtp_server)
    consumer(school, workers=2)
    created = school.create_event(WHOLE_SCHOOL, title="Concert", rsvp=True,
                                  starts_at="2031-05-20T18:00:00Z", ends_at="2031-05-20T20:00:00Z")
    event_id = created["event_id"]
    school.wait_job_done(created["job_id"], 30)
    got = notices_of(smtp_server, "Concert")
    # One family opts out of normal notices after the first: it hears of no change.
    quitter = sorted(got)[0]
    provider = school.app.test_client(use_cookies=False)
    unsubscribe = got[quitter]["List-Unsubscribe"].strip("<>").removeprefix("http://school.test")
    assert provider.post(unsubscribe, data="List-Unsubscribe=One-Click",
                         content_type="application/x-www-form-urlencoded").status_code == 200
    # Someone new joins the audience (not on the first notice): the change is not theirs either.
    school.execute("UPDATE teachers SET email = 'newcomer@example.org' WHERE id = (SELECT min(id) FROM teachers)")

    # Without "notify" only the pages change; the calendar's sequence moves all the same.
    response = school.api("PATCH", f"/api/events/{event_id}", json={"location": "Gym"})
    assert response.status_code == 200 and response.get_json()["notice"] is None
    assert response.get_json()["changes"] == {"location": ["Main hall", "Gym"]}

    response = school.api("PATCH", f"/api/events/{event_id}", json={
        "title": "Spring concert", "starts_at": "2031-05-21T18:00:00Z", "ends_at": "2031-05-21T20:00:00Z",
        "notify": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body["changes"]) == {"title", "starts_at", "ends_at"} and body["event"]["sequence"] == 2
    update = school.wait_job_done(body["notice"]["job_id"], 30)
    updates = notices_of(smtp_server, "Changed: Spring concert")
    originals = set(got)
    assert set(updates) == originals - {quitter} and update["opted_out"] == 1 and update["failed"] == 0
    message = updates[sorted(updates)[0]]
    text = text_of(message)
    assert "This event has changed:" in text and "- Title: Concert -> Spring concert" in text
    assert "Tuesday, May 20, 2031" in text and "Wednesday, May 21, 2031" in text
    method, entry = calendar_of(message)
    assert method == "PUBLISH" and str(entry["UID"]) == f"event-{event_id}@{DOMAIN}"
    assert int(entry["SEQUENCE"]) == 2 and str(entry["SUMMARY"]) == "Spring concert"
    assert entry.decoded("DTSTART").isoformat() == "2031-05-21T18:00:00+00:00"
    assert str(entry["LOCATION"]) == "Gym"

    response = school.api("POST", f"/api/events/{event_id}/cancel", json={"notify": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    canceled = school.wait_job_done(response.get_json()["notice"]["job_id"], 30)
    cancellations = notices_of(smtp_server, "Canceled: Spring concert")
    assert set(cancellations) == originals - {quitter} and canceled["sent"] == len(originals) - 1
    message = cancellations[sorted(cancellations)[0]]
    assert "This event is canceled." in text_of(message)
    method, entry = calendar_of(message)
    assert method == "CANCEL" and str(entry["STATUS"]) == "CANCELLED"
    assert str(entry["UID"]) == f"event-{event_id}@{DOMAIN}" and int(entry["SEQUENCE"]) == 3

    # The family's page and calendar file say the same; answers are closed.
    family = school.app.test_client()
    path = personal_path(got[sorted(got)[-1]])
    page = family.get(path).get_data(as_text=True)
    assert "This event is canceled." in page and "Spring concert" in page
    download = Calendar.from_ical(family.get(path + "/event.ics").data)
    assert str(download["METHOD"]) == "CANCEL"
    page = family.get(path)
    refused = family.post(path + "/rsvp", data={"answer": "yes", "csrf_token": csrf_token(page.data)})
    assert refused.status_code == 422 and "This event is canceled." in refused.get_data(as_text=True)

    # A canceled event changes no more, and is not canceled twice.
    assert school.api("PATCH", f"/api/events/{event_id}", json={"title": "Again"}).status_code == 422
    again = school.api("POST", f"/api/events/{event_id}/cancel", json={"notify": True})
    assert again.status_code == 422 and "canceled already" in again.get_json()["fields"]["event"]
    assert len(notices_of(smtp_server, "Canceled: Spring concert")) == len(originals) - 1


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_concurrent_changes_each_send_their_own_update_in_order(make_school, smtp_server, consumer, database):
    school = make_school(students=6, database=database, smtp=smtp_server)
    consumer(school, workers=4)
    created = school.create_event(WHOLE_SCHOOL, title="Open day")
    school.wait_job_done(created["job_id"], 30)
    got = notices_of(smtp_server, "Open day")
    answers = {}

    def change(title):
        client = school.app.test_client()
        answers[title] = client.patch(f"/api/events/{created['event_id']}", json={"title": title, "notify": True},
                                      headers={"Authorization": f"Bearer {school.token}"})

    threads = [threading.Thread(target=change, args=(title,)) for title in ("Open day (morning)", "Open day (evening)")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in answers.values()), {t: r.get_data(as_text=True) for t, r in answers.items()}
    by_sequence = sorted(answers.items(), key=lambda item: item[1].get_json()["sequence"])
    (earlier, first), (later, second) = by_sequence
    assert [r.get_json()["sequence"] for _, r in by_sequence] == [1, 2]
    # The later one read what the earlier one wrote, and wins.
    assert second.get_json()["changes"] == {"title": [earlier, later]}
    assert school.api("GET", f"/api/events/{created['event_id']}").get_json()["title"] == later
    for _, response in by_sequence:
        school.wait_job_done(response.get_json()["notice"]["job_id"], 60)
    for address in got:
        mine = sorted((m for m in smtp_server.received if m.rcpt == address and m.subject.startswith("Changed:")),
                      key=lambda m: m.at)
        assert [m.subject for m in mine] == [f"Changed: {earlier}", f"Changed: {later}"], address
        # Each calendar part is the event as it stood when sent: never older than its own change,
        # and the last one the latest (so the calendar ends with the later title).
        sequences = [int(calendar_of(m.message)[1]["SEQUENCE"]) for m in mine]
        assert sequences[0] >= 1 and sequences[-1] == 2, (address, sequences)
        assert str(calendar_of(mine[-1].message)[1]["SUMMARY"]) == later


def test_bad_schedules_reminders_and_changes_get_clear_422s(make_school):
    school = make_school(students=2)
    soon = utcnow() + timedelta(days=2)
    event = {**EVENT, "starts_at": iso(soon), "ends_at": iso(soon + timedelta(hours=2))}

    def refused(body, field):
        response = school.api("POST", "/api/events", json={**event, **body})
        assert response.status_code == 422, response.get_data(as_text=True)
        return response.get_json()["fields"][field]

    assert "passed" in refused({"send_at": iso(utcnow() - timedelta(minutes=5))}, "send_at")
    assert "over by then" in refused({"send_at": iso(soon + timedelta(hours=3))}, "send_at")
    assert "date and time" in refused({"send_at": "next monday"}, "send_at")
    assert "before the event starts, not after" in refused({"reminders": [{"before": "-P1D"}]}, "reminders.0.before")
    assert "before the event starts, not after" in refused({"reminders": [{"before": "PT0S"}]}, "reminders.0.before")
    assert "ISO 8601" in refused({"reminders": [{"before": "a day"}]}, "reminders.0.before")
    assert "already passed" in refused({"reminders": [{"before": "P3D"}]}, "reminders.0.before")
    assert "before the notice itself" in refused(
        {"send_at": iso(soon - timedelta(hours=2)), "reminders": [{"before": "P1D"}]}, "reminders.0.before")
    assert "Choose all" in refused({"reminders": [{"before": "P1D", "to": "everyone"}]}, "reminders.0.to")
    assert "twice" in refused({"reminders": [{"before": "P1D"}, {"before": "PT24H"}]}, "reminders.1.before")
    assert "list" in refused({"reminders": "P1D"}, "reminders")

    # A scheduled job: shown, rescheduled, refused when the time is bad, canceled.
    created = school.create_event(event["audience"], title=event["title"], send_at=iso(utcnow() + timedelta(hours=5)),
                                  starts_at=event["starts_at"], ends_at=event["ends_at"])
    job_id = created["job_id"]
    assert school.job(job_id)["status"] == "scheduled"
    later = (utcnow() + timedelta(hours=7)).replace(microsecond=0)
    moved = school.api("POST", f"/api/jobs/{job_id}/reschedule", json={"send_at": iso(later)})
    assert moved.status_code == 200 and moved.get_json()["send_at"] == later.isoformat()
    bad = school.api("POST", f"/api/jobs/{job_id}/reschedule", json={"send_at": iso(utcnow() - timedelta(hours=1))})
    assert bad.status_code == 422 and "passed" in bad.get_json()["fields"]["send_at"]
    too_late = school.api("POST", f"/api/jobs/{job_id}/reschedule", json={"send_at": iso(soon + timedelta(days=1))})
    assert too_late.status_code == 422 and "over by then" in too_late.get_json()["fields"]["send_at"]
    # The event cannot move to end before its notice goes out.
    early = school.api("PATCH", f"/api/events/{created['event_id']}", json={
        "starts_at": iso(utcnow() + timedelta(hours=1)), "ends_at": iso(utcnow() + timedelta(hours=2))})
    assert early.status_code == 422 and "reschedule it first" in early.get_json()["fields"]["ends_at"]
    assert school.api("POST", f"/api/jobs/{job_id}/cancel").get_json()["status"] == "canceled"
    gone = school.api("POST", f"/api/jobs/{job_id}/reschedule", json={"send_at": iso(later)})
    assert gone.status_code == 422 and "canceled" in gone.get_json()["fields"]["status"]

    # Changes that cannot be.
    path = f"/api/events/{created['event_id']}"
    for body, field, words in (
            ({"title": ""}, "title", "required"),
            ({"ends_at": iso(soon - timedelta(hours=1))}, "ends_at", "cannot end before it starts"),
            ({"audience": {"roles": ["students"]}}, "body", "cannot be changed: audience"),
            ({"title": "x", "notify": "yes"}, "notify", "true or false"),
            ({"starts_at": "soon"}, "starts_at", "date and time")):
        response = school.api("PATCH", path, json=body)
        assert response.status_code == 422 and words in response.get_json()["fields"][field], (body, response.json)
    assert school.api("PATCH", "/api/events/999999", json={"title": "x"}).status_code == 404
    # Nothing changed: 200 and no notice.
    same = school.api("PATCH", path, json={"title": event["title"]})
    assert same.status_code == 200 and same.get_json()["changes"] == {} and same.get_json()["notice"] is None


def test_staff_schedule_edit_and_cancel_in_the_browser_forms(make_school):
    school = make_school(students=2)
    admin = school.admin()
    starts = (utcnow() + timedelta(days=3)).replace(second=0, microsecond=0)
    form = {"title": "Book fair", "description": "", "location": "Library", "priority": "normal",
            "starts_at": f"{starts:%Y-%m-%dT%H:%M}", "ends_at": f"{starts + timedelta(hours=1):%Y-%m-%dT%H:%M}",
            "roles": "guardians", "reminder-0-before": "", "reminder-1-before": "P1D", "reminder-1-to": "not_acknowledged"}

    # A send time in the past comes back with the message beside its field, the rest kept.
    response = admin.post("/events/new", {**form, "send_at": f"{utcnow() - timedelta(hours=1):%Y-%m-%dT%H:%M}"})
    assert response.status_code == 422
    doc = parse(response.data)
    assert "This time has passed" in doc.find(id="send_at-error").text
    assert doc.find("input", id="title").attrs["value"] == "Book fair"
    # A reminder after the event starts is named on its own row (the second; the first is empty).
    response = admin.post("/events/new", {**form, "reminder-1-before": "-PT1H"})
    assert response.status_code == 422 and parse(response.data).find(id="reminders.1.before-error") is not None

    send_at = utcnow() + timedelta(days=1)
    response = admin.post("/events/new", {**form, "send_at": f"{send_at:%Y-%m-%dT%H:%M}"})
    assert response.status_code == 302, response.get_data(as_text=True)
    event_path = response.headers["Location"].split("?")[0]
    page = parse(admin.client.get(event_path).data)
    (reminder,) = page.find_all("li", data_reminder="P1D")
    assert "not acknowledged" in reminder.text and "due" in reminder.text
    event_id = int(event_path.rsplit("/", 1)[1])
    job_id = school.scalar("SELECT id FROM notification_jobs WHERE event_id = :e", e=event_id)
    job_page = parse(admin.client.get(f"/jobs/{job_id}").data)
    assert "Goes out at" in job_page.find("p", data_scheduled="yes").text
    later = send_at + timedelta(hours=2)
    assert admin.post(f"/jobs/{job_id}/reschedule", {"send_at": f"{later:%Y-%m-%dT%H:%M}"}).status_code == 302
    assert school.job(job_id)["send_at"].startswith(f"{later:%Y-%m-%dT%H:%M}")

    # The edit form: errors re-rendered, then a change without telling anyone.
    edit = parse(admin.client.get(f"{event_path}/edit").data)
    assert edit.find("input", id="location").attrs["value"] == "Library"
    values = {"title": "Book fair", "description": "", "location": "Hall", "starts_at": form["starts_at"],
              "ends_at": form["ends_at"]}
    bad = admin.post(f"{event_path}/edit", {**values, "ends_at": f"{starts - timedelta(hours=1):%Y-%m-%dT%H:%M}"})
    assert bad.status_code == 422 and "cannot end before it starts" in parse(bad.data).find(id="ends_at-error").text
    assert admin.post(f"{event_path}/edit", values).status_code == 302
    assert school.api("GET", f"/api/events/{event_id}").get_json()["location"] == "Hall"

    # Cancel: refused without the confirmation tick, done with it; the scheduled notice never goes.
    assert admin.post(f"{event_path}/cancel", {"notify": "on"}).status_code == 302
    assert school.api("GET", f"/api/events/{event_id}").get_json()["canceled"] is False
    assert admin.post(f"{event_path}/cancel", {"notify": "on", "confirm": "on"}).status_code == 302
    data = school.api("GET", f"/api/events/{event_id}").get_json()
    assert data["canceled"] is True and data["job"]["status"] == "canceled"
    page = parse(admin.client.get(event_path).data)
    assert page.find("p", data_canceled="yes") is not None
    assert "canceled with the event" in page.find("li", data_reminder="P1D").text
