"""A school's roster through the API, a real consumer and a real SMTP server, and in Chromium."""
import re
from collections import defaultdict

import pytest

from tests.support.accounts import ADMIN_EMAIL
from tests.support.browser import log_in
from tests.support.host import wait_for

from tests.support.roster import (ANA, CARA, FINN_PARENT, MARIA, MARIA_NEW, TOM, first_bundle, second_bundle,
                             write_bundle)

HOMEROOM_7A_NORTH = {"roles": ["guardians"], "grades": [], "classes": ["7A"], "schools": ["N"]}
MATHS = {"roles": ["students", "teachers"], "grades": [], "classes": ["MATH7-1"]}


def upload(school, bundle, dry_run: bool) -> dict:
    with open(bundle, "rb") as handle:
        response = school.client.post("/api/roster/imports", data={"file": (handle, bundle.name),
                                                                   "dry_run": "true" if dry_run else "false"},
                                      headers={"Authorization": f"Bearer {school.token}"},
                                      content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.headers["Location"] == response.get_json()["url"]
    return response.get_json()


def finished(school, started: dict) -> dict:
    path = started["url"].split("localhost", 1)[-1]
    last = {}

    def ended():
        last.update(school.api("GET", path).get_json())
        return last["status"] in ("done", "refused", "failed")

    wait_for(ended, 60, 0.2, lambda: f"the import did not end: {last}")
    return last


def addresses_by_title(smtp) -> dict[str, set[str]]:
    found = defaultdict(set)
    for message in smtp.received:
        found[message.subject].add(message.rcpt)
    return found


def notify(school, title: str, audience: dict) -> None:
    created = school.create_event(audience, title=title)
    job = school.wait_job_done(created["job_id"], 60)
    assert job["status"] == "done" and job["failed"] == 0


@pytest.mark.slow
def test_events_reach_the_people_the_bundle_names_before_and_after_a_resync(make_school, smtp_server, consumer,
                                                                           tmp_path):
    school = make_school(smtp=smtp_server)
    consumer(school, workers=2)

    dry = finished(school, upload(school, write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip"), True))
    assert dry["status"] == "done" and dry["dry_run"]
    assert dry["summary"]["counts"]["students"] == {"added": 5, "changed": 0, "deactivated": 0}
    assert school.scalar("SELECT count(*) FROM students") == 0, "a dry run writes nothing"

    done = finished(school, upload(school, write_bundle(tmp_path / "a", first_bundle(), zip_name="a.zip"), False))
    assert done["status"] == "done" and done["summary"]["counts"]["guardians"]["added"] == 5
    assert done["created_by"] == ADMIN_EMAIL

    notify(school, "Form 7A trip", HOMEROOM_7A_NORTH)
    notify(school, "Maths test", MATHS)
    received = addresses_by_title(smtp_server)
    assert received["Form 7A trip"] == {MARIA}
    assert received["Maths test"] == {ANA, CARA, TOM}
    to_maria = next(m for m in smtp_server.received if m.rcpt == MARIA)
    body = to_maria.message.get_body(("plain",)).get_content()
    assert "Ana Silva" in body and "Ben Silva" in body  # one message naming both children

    resync = finished(school, upload(school, write_bundle(tmp_path / "b", second_bundle(), zip_name="b.zip"), False))
    assert resync["summary"]["counts"]["students"] == {"added": 1, "changed": 0, "deactivated": 1}
    notify(school, "Form 7A trip, again", HOMEROOM_7A_NORTH)
    notify(school, "Maths test, again", MATHS)
    received = addresses_by_title(smtp_server)
    assert received["Form 7A trip, again"] == {MARIA_NEW, FINN_PARENT}
    assert received["Maths test, again"] == {ANA, CARA, TOM}

    again = finished(school, upload(school, write_bundle(tmp_path / "b", second_bundle(), zip_name="b.zip"), True))
    assert again["summary"]["no_changes"]


def test_the_api_refuses_a_request_without_a_file(make_school):
    school = make_school()
    response = school.client.post("/api/roster/imports", data={"dry_run": "maybe"},
                                  headers={"Authorization": f"Bearer {school.token}"},
                                  content_type="multipart/form-data")
    assert response.status_code == 422
    assert set(response.get_json()["fields"]) == {"file", "dry_run"}
    assert school.api("GET", "/api/roster/imports/99").status_code == 404


@pytest.mark.slow
def test_upload_check_and_apply_a_bundle_in_the_browser(make_school, smtp_server, consumer, live_server, chromium,
                                                        tmp_path):
    from playwright.sync_api import expect

    school = make_school(smtp=smtp_server)
    consumer(school, workers=2)
    server = live_server(school.app)
    bundle = write_bundle(tmp_path / "a", first_bundle(), zip_name="north-and-south.zip")

    page = chromium.new_page()
    progress_replies = []
    page.on("response", lambda r: progress_replies.append(r.status) if r.url.endswith("/progress") else None)
    log_in(page, server.url)
    page.goto(f"{server.url}/roster")
    page.get_by_label("Roster file").set_input_files(str(bundle))
    page.get_by_role("button", name="Check (dry run)").click()
    page.wait_for_url(re.compile(r"/roster/imports/\d+$"))
    page.evaluate("window.stillTheSamePage = true")
    expect(page.get_by_role("heading", name="What an import would change")).to_be_visible(timeout=30_000)
    expect(page.locator("tr[data-kind=students]")).to_contain_text("5")
    expect(page.locator(".problems")).to_contain_text("nina(at)example.org")
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert page.evaluate("window.stillTheSamePage") is True, "the progress came by htmx, not a reload"
    assert progress_replies and progress_replies[-1] == 286, "polling stops once the import has ended"
    assert school.scalar("SELECT count(*) FROM students") == 0

    page.get_by_role("button", name="Apply this import").click()
    expect(page.get_by_role("heading", name="What changed")).to_be_visible(timeout=30_000)
    expect(page.locator("tr[data-kind=guardians]")).to_contain_text("5")
    assert school.scalar("SELECT count(*) FROM students WHERE active") == 5

    page.goto(f"{server.url}/roster")
    rows = page.locator("table.imports tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("import")
    expect(rows.first).to_contain_text(ADMIN_EMAIL)
    expect(rows.nth(1)).to_contain_text("dry run")
