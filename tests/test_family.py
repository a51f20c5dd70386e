"""The family side, as a parent lives it: the personal link of a real email, the calendar, "I've
read this", RSVP, one-click unsubscribe (RFC 8058) and what staff then see."""
import csv
import io
import re
from urllib.parse import urlencode

import pytest
from icalendar import Calendar

from school.notify import retention
from school.timeutil import utcnow
from tests.support.pages import csrf_token, parse
from tests.support.school import WHOLE_SCHOOL

LINK = re.compile(r"http://school\.test(/n/[A-Za-z0-9_\-.]+)")


def personal_path(message) -> str:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    (path,) = set(LINK.findall(text))
    assert f'href="http://school.test{path}"' in html
    return path


def post_form(client, page_path: str, action: str, data: dict | None = None):
    """Submit a family page's form the way a browser without JavaScript does."""
    page = client.get(page_path)
    assert page.status_code == 200
    return client.post(action, data={**(data or {}), "csrf_token": csrf_token(page.data)})


def notices_of(smtp, subject: str) -> dict:
    return {m.rcpt: m.message for m in smtp.received if m.subject == subject}


def send(school, title: str, **fields) -> dict:
    created = school.create_event(WHOLE_SCHOOL, title=title, **fields)
    job = school.wait_job_done(created["job_id"], 60)
    assert job["status"] == "done" and job["failed"] == 0
    return {**created, "job": job}


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_family_reads_answers_and_unsubscribes_from_its_email(make_school, smtp_server, consumer, database):
    school = make_school(students=12, database=database, smtp=smtp_server)
    consumer(school, workers=2)
    first = send(school, "Sports day", rsvp=True)
    got = notices_of(smtp_server, "Sports day")
    assert len(got) == first["job"]["total"] > 5
    (ada, ben, cy), others = sorted(got)[:3], sorted(got)[3:]
    paths = {address: personal_path(message) for address, message in got.items()}
    assert len(set(paths.values())) == len(got), "every recipient has a link of their own"

    # The link opens the family's page in a browser with no session at all.
    family = school.app.test_client()
    page = family.get(paths[ada])
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in page.headers["X-Robots-Tag"]
    doc = parse(page.data)
    assert doc.find("h1").text == "Sports day"
    assert doc.find("meta", name="robots").attrs["content"].startswith("noindex")

    # The email's calendar part and the page's download are the same event, read by icalendar.
    (part,) = [p for p in got[ada].walk() if p.get_content_type() == "text/calendar"]
    assert part.get_param("method") == "PUBLISH"
    for data in (part.get_content().encode(), family.get(paths[ada] + "/event.ics").data):
        calendar = Calendar.from_ical(data)
        assert str(calendar["METHOD"]) == "PUBLISH"
        (entry,) = calendar.walk("VEVENT")
        assert str(entry["SUMMARY"]) == "Sports day" and str(entry["LOCATION"]) == "Main hall"
        assert str(entry["UID"]) == f"event-{first['event_id']}@springfield-school.example.org"
        assert entry.decoded("DTSTART").isoformat() == "2031-03-12T18:00:00+00:00"
        assert entry.decoded("DTEND").isoformat() == "2031-03-12T20:00:00+00:00"
        assert int(entry["SEQUENCE"]) == 0

    # "I've read this", twice: it counts once, and staff see it.
    for _ in range(2):
        assert post_form(family, paths[ada], paths[ada] + "/ack").status_code == 302
    assert "You told us you have read this" in family.get(paths[ada]).get_data(as_text=True)
    event = school.api("GET", f"/api/events/{first['event_id']}").get_json()
    assert event["acknowledged"] == 1

    # RSVP: Ada yes, Ben no then maybe.
    assert post_form(family, paths[ada], paths[ada] + "/rsvp", {"answer": "yes"}).status_code == 302
    other_family = school.app.test_client()
    assert post_form(other_family, paths[ben], paths[ben] + "/rsvp", {"answer": "no"}).status_code == 302
    assert post_form(other_family, paths[ben], paths[ben] + "/rsvp", {"answer": "maybe"}).status_code == 302
    assert post_form(other_family, paths[ben], paths[ben] + "/rsvp", {"answer": "often"}).status_code == 422
    event = school.api("GET", f"/api/events/{first['event_id']}").get_json()
    assert event["rsvp"] == {"yes": 1, "no": 0, "maybe": 1}

    # A tampered or unknown token is a 404 that names nothing.
    token = paths[cy].removeprefix("/n/")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for path in (f"/n/{tampered}", "/n/nothing-here", f"/u/{tampered}", f"/n/{tampered}/event.ics"):
        response = family.get(path)
        assert response.status_code == 404, path
        assert cy not in response.get_data(as_text=True) and "Sports day" not in response.get_data(as_text=True)

    # One click, as a mail provider makes it: a POST with no cookie and no CSRF token.
    message = got[cy]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"].endswith("<notices.springfield-school.example.org>")
    (unsubscribe,) = re.findall(r"<http://school\.test(/u/[^>]+)>", message["List-Unsubscribe"])
    provider = school.app.test_client(use_cookies=False)
    response = provider.post(unsubscribe, data="List-Unsubscribe=One-Click",
                             content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200

    # The next normal notice skips that address, and only it.
    second = send(school, "Book fair")
    assert set(notices_of(smtp_server, "Book fair")) == set(got) - {cy}
    assert second["job"]["opted_out"] == 1
    assert school.api("GET", f"/api/events/{second['event_id']}").get_json()["opted_out"] == 1
    # ... and its ledger names the address left out, and why.
    left_out = school.api("GET", f"/api/jobs/{second['job_id']}/recipients?status=opted_out").get_json()
    assert [(r["email"], r["status"]) for r in left_out["recipients"]] == [(cy, "opted_out")]
    not_read = school.api("GET", f"/api/jobs/{second['job_id']}/recipients?status=not_acknowledged&per_page=100")
    assert cy not in {r["email"] for r in not_read.get_json()["recipients"]}

    # An urgent notice reaches everyone, with no way to unsubscribe.
    send(school, "School closed today", priority="urgent")
    urgent = notices_of(smtp_server, "Urgent: School closed today")
    assert set(urgent) == set(got)
    assert "List-Unsubscribe" not in urgent[cy] and "List-Unsubscribe-Post" not in urgent[cy]
    preferences = family.get(paths[cy] + "/preferences").get_data(as_text=True)
    assert "Urgent notices are always sent" in preferences

    # The family's page lists their other notices, newest first.
    doc = parse(family.get(paths[ada]).data)
    listed = [a.text for a in doc.find("ul", class_="notices").find_all("a")]
    assert listed == ["Urgent: School closed today"[len("Urgent: "):], "Book fair"]

    # Turning normal notices back on from the preferences page.
    assert post_form(family, paths[cy] + "/preferences", paths[cy] + "/preferences",
                     {"normal": "on", "language": "fr"}).status_code == 302
    send(school, "Concert")
    assert cy in notices_of(smtp_server, "Concert")

    # Staff: the ledger shows who read it, finds people, and exports everyone.
    staff = school.admin()
    job_id = first["job_id"]
    doc = parse(staff.client.get(f"/jobs/{job_id}/recipients?status=acknowledged").data)
    assert [tr.attrs["data-email"] for tr in doc.find("tbody").find_all("tr")] == [ada]
    doc = parse(staff.client.get(f"/jobs/{job_id}/recipients", query_string={"q": ben.upper()}).data)
    assert [tr.attrs["data-email"] for tr in doc.find("tbody").find_all("tr")] == [ben]
    assert staff.client.get(f"/jobs/{job_id}/recipients?status=bogus").status_code == 422
    # ... by part of a name, too (as the roster wrote it, in any case).
    (ben_row,) = school.api("GET", f"/api/jobs/{job_id}/recipients?q={ben}").get_json()["recipients"]
    by_name = school.api("GET", f"/api/jobs/{job_id}/recipients?" + urlencode({"q": ben_row["name"][1:].upper()}))
    assert ben in {r["email"] for r in by_name.get_json()["recipients"]}
    export = staff.client.get(f"/jobs/{job_id}/recipients.csv")
    lines = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert sorted(line["email"] for line in lines) == sorted(got)
    assert {line["email"]: line["rsvp"] for line in lines if line["rsvp"]} == {ada: "yes", ben: "maybe"}
    listed = school.api("GET", f"/api/jobs/{job_id}/recipients?status=not_acknowledged&per_page=100").get_json()
    assert listed["total"] == len(got) - 1 and ada not in {r["email"] for r in listed["recipients"]}

    # A reminder for those who have not acknowledged reaches exactly the others, and its link
    # counts on the first notice.
    response = school.api("POST", f"/api/events/{first['event_id']}/remind", json={"who": "not_acknowledged"})
    assert response.status_code == 202, response.get_data(as_text=True)
    reminded = school.wait_job_done(response.get_json()["job_id"], 60)
    reminders = notices_of(smtp_server, "Reminder: Sports day")
    # ... each in its reader's language: the family that chose French reads "Rappel".
    assert set(notices_of(smtp_server, "Rappel : Sports day")) == {cy}
    reminders[cy] = notices_of(smtp_server, "Rappel : Sports day")[cy]
    assert set(reminders) == set(got) - {ada} and reminded["sent"] == len(got) - 1
    assert post_form(family, personal_path(reminders[ben]), personal_path(reminders[ben]) + "/ack").status_code == 302
    assert school.api("GET", f"/api/events/{first['event_id']}").get_json()["acknowledged"] == 2
    assert school.api("POST", f"/api/events/{first['event_id']}/remind", json={"who": "some"}).status_code == 422

    # Once retention removes the rows, the link says the notice has expired.
    with school.app.app_context():
        assert retention.purge(now=utcnow().replace(year=utcnow().year + 1)) >= 1
    expired = family.get(paths[ada])
    assert expired.status_code == 200
    assert "This notice has expired" in expired.get_data(as_text=True)


@pytest.mark.slow
def test_the_family_page_fits_a_phone(make_school, live_server, chromium):
    """Written by the fan-out in this process (no mail needed): the page at 390 px, without scrolling sideways."""
    from school.family.tokens import notice_token
    from school.notify.fanout import run_fanout
    from school.notify.models import Notification

    school = make_school(students=6)
    created = school.create_event(WHOLE_SCHOOL, title="A very long title " * 6, rsvp=True,
                                  description="Bring a packed lunch, a water bottle and a hat. " * 10,
                                  location="The playing field behind the sports hall, past the car park")
    with school.app.app_context():
        run_fanout(created["job_id"], lambda batch_id, priority: None)
        row = Notification.query.filter_by(job_id=created["job_id"]).first()
        path = f"/n/{notice_token(row.job_id, row.id)}"
    server = live_server(school.app)
    page = chromium.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server.url + path)
    assert page.locator("h1").inner_text().startswith("A very long title")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.get_by_role("button", name="I've read this").click()
    page.wait_for_load_state()
    assert "You told us you have read this" in page.content()
    page.get_by_label("Yes").check()
    page.get_by_role("button", name="Send my answer").click()
    page.wait_for_load_state()
    assert "Your answer: yes" in page.locator("body").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_the_family_pages_answer_one_address_only_so_often(app_on, sqlite_url):
    app = app_on(sqlite_url, FAMILY_LIMIT_PER_ADDRESS="3 per minute")
    client = app.test_client()
    assert [client.get("/n/not-a-token").status_code for _ in range(4)] == [404, 404, 404, 429]
    assert client.post("/u/not-a-token").status_code == 429
    other = app.test_client()
    assert other.get("/n/x", environ_base={"REMOTE_ADDR": "127.0.0.2"}).status_code == 404


def test_a_long_ledger_counts_only_so_far_past_the_page(make_school, monkeypatch):
    """Written by the fan-out in this process (no mail needed): the ledger of a whole school, counted
    only a little past the page asked for, says "more than", and its last page is still reached."""
    from school.notify import recipients
    from school.notify.fanout import run_fanout

    monkeypatch.setattr(recipients, "COUNT_AHEAD", 5)
    school = make_school(students=24)
    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    with school.app.app_context():
        run_fanout(created["job_id"], lambda batch_id, priority: None)
    everyone = school.scalar("SELECT count(*) FROM notifications WHERE job_id = :job", job=created["job_id"])
    assert everyone > 50 + 5  # more than the web page's 50 rows and the 5 counted past them
    path = f"/api/jobs/{created['job_id']}/recipients?per_page=5"

    first = school.api("GET", path).get_json()
    assert (first["total"], first["total_exact"], first["has_next"]) == (5 + 5, False, True)
    staff = school.admin()
    html = staff.client.get(f"/jobs/{created['job_id']}/recipients").get_data(as_text=True)
    assert "Page 1 of 2+ · more than 55 recipient(s)" in " ".join(html.split())

    # Paging on while there is a next page reaches every row, and the last page's count is exact.
    seen, number, listed = set(), 1, first
    while True:
        seen |= {r["email"] for r in listed["recipients"]}
        if not listed["has_next"]:
            break
        number += 1
        listed = school.api("GET", f"{path}&page={number}").get_json()
    assert len(seen) == everyone and listed["total_exact"] and listed["total"] == everyone
