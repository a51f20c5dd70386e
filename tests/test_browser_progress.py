"""Staff create an event in a real browser and watch its notices go out, live, on one page."""
import re

import pytest

from school.roster.audience import Audience, count
from tests.support.accounts import ADMIN_EMAIL, ADMIN_PASSWORD

GRADE = 8
FAMILY_LINK = re.compile(r"http://school\.test(/n/[A-Za-z0-9_\-.]+)")
# The bar is full when every recipient is handled; read from the page as a user's browser shows it.
BAR_FULL = """() => {
  const bar = document.querySelector('[role=progressbar]');
  return bar !== null && bar.getAttribute('aria-valuemax') !== '0'
      && bar.getAttribute('aria-valuenow') === bar.getAttribute('aria-valuemax');
}"""


@pytest.mark.slow
def test_create_an_event_and_watch_it_reach_everyone(make_school, smtp_server, consumer, live_server, chromium):
    from playwright.sync_api import expect

    # Paced so that sending lasts a few seconds: the page is watched while it happens.
    school = make_school(students=360, smtp=smtp_server, MAIL_RATE_LIMIT="10/second")
    with school.app.app_context():
        whole = count(Audience(("guardians",))).recipients
        reach = count(Audience(("guardians", "students"), grades=(GRADE,))).recipients
    assert 45 <= reach < whole
    consumer(school, workers=2)
    server = live_server(school.app)

    page = chromium.new_page()
    progress_replies = []
    page.on("response", lambda r: progress_replies.append(r.status) if "/progress" in r.url else None)

    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()

    page.goto(f"{server.url}/events/new")
    page.get_by_label("Title").fill("Science fair")
    page.get_by_label("Location").fill("Gym")
    page.get_by_label("Starts").fill("2031-05-04T09:00")
    page.get_by_label("Ends").fill("2031-05-04T12:00")
    picker = page.locator("#reach")
    expect(picker).to_contain_text(f"({whole:,} distinct email addresses)")  # guardians, whole school
    page.get_by_label("Students").check()
    page.get_by_label(f"Grade {GRADE}", exact=True).check()
    expect(picker).to_contain_text(f"({reach:,} distinct email addresses)")
    page.get_by_role("button", name="Create event and notify").click()

    page.wait_for_url(re.compile(r"/events/\d+"))
    expect(page.get_by_role("heading", name="Science fair")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    job_id = school.sql("SELECT id FROM notification_jobs")[0][0]
    assert school.job(job_id)["status"] != "done", "the job ended before the page was watched"

    page.wait_for_function(BAR_FULL, timeout=60_000)
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuetext", f"{reach:,} of {reach:,} sent")
    stats = {name: page.locator(f"[data-stat={name}]").inner_text() for name in ("total", "sent", "failed")}
    assert stats == {"total": f"{reach:,}", "sent": f"{reach:,}", "failed": "0"}
    expect(page.locator("[data-status]")).to_have_text("done")

    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert len(smtp_server.received) == reach
    # Sending has ended, so the page stops asking every second; families still read it until the
    # event, so it keeps asking now and then ...
    polls = len(progress_replies)
    page.wait_for_timeout(2500)
    assert len(progress_replies) <= polls + 1 and progress_replies[-1] == 200
    # ... and a parent who reads it now shows on the page without a reload.
    expect(page.locator("[data-stat=acknowledged]")).to_have_text("0")
    (path,) = set(FAMILY_LINK.findall(smtp_server.received[0].message.get_body(("plain",)).get_content()))
    parent = chromium.new_page()
    parent.goto(server.url + path)
    parent.get_by_role("button", name="I've read this").click()
    expect(parent.get_by_text("You told us you have read this")).to_be_visible()
    expect(page.locator("[data-stat=acknowledged]")).to_have_text("1", timeout=15_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
