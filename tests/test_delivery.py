"""Real data and real mail servers cannot keep a notice from the families it is for: one person's
address, a provider's quota or throttling, an outage of the mail server or of Redis, a consumer
whose clock is wrong, a very slow rate: each against real consumers and real servers."""
import random
import threading
import time
from collections import Counter

import pytest

from school.notify.transport import NON_ASCII_REFUSED
from tests.support.host import wait_for
from tests.support.school import WHOLE_SCHOOL, audience
from tests.support.smtp import SmtpServer

GUARDIANS_OF_1A = """
    SELECT DISTINCT g.id, g.email FROM guardians g
    JOIN student_guardians sg ON sg.guardian_id = g.id
    JOIN students s ON s.id = sg.student_id
    JOIN classes c ON c.id = s.class_id
    WHERE c.name = '1A' AND g.email IS NOT NULL ORDER BY g.id
"""
FIRST_GRADES = {"roles": ["guardians"], "grades": [1, 2], "classes": []}


@pytest.fixture
def mail_server():
    """``mail_server(**options)``: an SMTP server of the test's own, started, stopped at the end."""
    started = []

    def start(**options) -> SmtpServer:
        server = SmtpServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def received_once(smtp, expected: set[str]) -> Counter:
    per_address = Counter(m.rcpt for m in smtp.received)
    assert set(per_address) == expected, (set(per_address) ^ expected)
    return per_address


def recipient_rows(school, job_id: int) -> dict[str, tuple]:
    return {email: (status, deferrals, last_error) for email, status, deferrals, last_error in school.sql(
        "SELECT email, status, deferrals, last_error FROM notifications WHERE job_id = :job", job=job_id)}


# --- one recipient never costs another the notice ------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("smtputf8", [True, False], ids=["server-offers-SMTPUTF8", "server-without-SMTPUTF8"])
def test_internationalised_addresses_reach_their_families_and_nobody_else_pays(make_school, mail_server, consumer,
                                                                              smtputf8):
    smtp = mail_server(enable_SMTPUTF8=smtputf8)
    school = make_school(students=300, smtp=smtp)
    guardians = school.sql(GUARDIANS_OF_1A)
    assert len(guardians) > 20
    (idn_id, _), (utf8_id, _) = guardians[:2]
    school.execute("UPDATE guardians SET email = 'aaa@müller.example' WHERE id = :id", id=idn_id)  # sorts first
    school.execute("UPDATE guardians SET email = 'zoë@example.org' WHERE id = :id", id=utf8_id)
    others = {email for _, email in guardians[2:]}

    consumer(school, workers=2)
    created = school.create_event({"roles": ["guardians"], "grades": [], "classes": ["1A"]}, title="Class trip")
    job = school.wait_job_done(created["job_id"], timeout=60)

    expected = others | {"aaa@xn--mller-kva.example"} | ({"zoë@example.org"} if smtputf8 else set())
    per_address = received_once(smtp, expected)
    assert max(per_address.values()) == 1
    (idn_mail,) = [m for m in smtp.received if m.rcpt == "aaa@xn--mller-kva.example"]
    assert "aaa@xn--mller-kva.example" in idn_mail.message["To"]
    rows = recipient_rows(school, created["job_id"])
    if smtputf8:
        (utf8_mail,) = [m for m in smtp.received if m.rcpt == "zoë@example.org"]
        assert "zoë@example.org" in str(utf8_mail.message["To"])
        assert (job["sent"], job["failed"]) == (len(others) + 2, 0)
    else:
        assert (job["sent"], job["failed"]) == (len(others) + 1, 1)
        assert rows["zoë@example.org"][0::2] == ("failed", NON_ASCII_REFUSED)
        page = school.admin().client.get(f"/jobs/{created['job_id']}").get_data(as_text=True)
        assert "zoë@example.org" in page and "cannot take non-ASCII addresses" in page
    assert {status for email, (status, _, _) in rows.items() if email != "zoë@example.org"} == {"sent"}


# --- the reply decides, by its enhanced status code ----------------------------------------------

class Quota:
    """A provider's daily quota: after ``allowed`` messages every RCPT is refused with 5.4.5 for
    ``seconds``; then it accepts again."""

    REPLY = "550 5.4.5 Daily user sending quota exceeded"

    def __init__(self, allowed: int, seconds: float):
        self.allowed, self.seconds = allowed, seconds
        self.accepted = 0
        self.refusing_since = None
        self.refused = 0
        self.lock = threading.Lock()

    def __call__(self, address: str) -> str | None:
        with self.lock:
            if self.accepted < self.allowed:
                self.accepted += 1
                return None
            self.refusing_since = self.refusing_since or time.monotonic()
            if time.monotonic() - self.refusing_since < self.seconds:
                self.refused += 1
                return self.REPLY
            return None


@pytest.mark.slow
def test_a_sending_quota_holds_the_job_and_nobody_fails(make_school, smtp_server, consumer):
    quota = Quota(allowed=30, seconds=20)
    smtp_server.handler.reply_with = quota
    school = make_school(students=300, smtp=smtp_server, NOTIFY_SWEEP_INTERVAL=0.5)
    consumer(school, workers=2)
    created = school.create_event(FIRST_GRADES, title="Swimming lessons")
    job_id = created["job_id"]

    held = wait_for(lambda: (j := school.job(job_id))["status"] == "held" and j, 60,
                    message="the job was never held")
    assert held["reason"] == Quota.REPLY and held["situation"] == "held: the mail server refuses us"
    assert held["failed"] == 0 and held["resumes_at"]
    page = school.admin().client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "held: the mail server refuses us" in page and Quota.REPLY in page
    assert "held: the mail server refuses us" in school.admin().client.get("/admin/queue/panel").get_data(as_text=True)

    job = school.wait_job_done(job_id, timeout=120)
    assert quota.refused > 0
    print(f"\nDELIVERY quota: {job['total']} recipients, {quota.refused} RCPTs refused with 5.4.5 over 20 s, 0 failed, "
          f"done in {job['elapsed_s']} s")
    rows = recipient_rows(school, job_id)
    assert (job["status"], job["failed"], job["sent"]) == ("done", 0, len(rows))
    assert max(received_once(smtp_server, set(rows)).values()) == 1


@pytest.mark.slow
def test_throttling_a_fifth_of_all_recipients_costs_nobody_the_notice(make_school, smtp_server, consumer):
    """With the default retry settings: a request to slow down is not a refusal of the recipient."""
    rng, lock = random.Random(7), threading.Lock()
    throttled = Counter()

    def throttle_a_fifth(address: str) -> str | None:
        with lock:
            if rng.random() < 0.2:
                throttled[address] += 1
                return "451 4.7.1 Try again later: you are sending too fast"
        return None

    smtp_server.handler.reply_with = throttle_a_fifth
    # The school's limit is the ceiling the pace climbs back to between throttles.
    school = make_school(students=300, smtp=smtp_server, MAIL_RATE_LIMIT="100/second")
    consumer(school, workers=2)
    created = school.create_event(FIRST_GRADES, title="Swimming lessons")
    paces = []  # the pace the job page shows while it sends

    def ended():
        seen = school.job(created["job_id"])
        paces.append(seen["pace"])
        return seen["status"] == "done" and seen

    job = wait_for(ended, 120, 0.2, message="the job did not end")

    rows = recipient_rows(school, created["job_id"])
    assert sum(throttled.values()) > len(rows) / 10, "the server hardly throttled"
    assert any(pace is not None for pace in paces), "the throttled pace was never shown"
    assert (job["status"], job["failed"], job["sent"]) == ("done", 0, len(rows))
    assert max(received_once(smtp_server, set(rows)).values()) == 1
    assert {deferrals for _, deferrals, _ in rows.values()} == {0}, "a throttle spent someone's retries"
    print(f"\nDELIVERY throttling: {len(rows)} recipients, {sum(throttled.values())} RCPTs answered 451 4.7.1, "
          f"0 failed, done in {job['elapsed_s']} s")


# --- outages spend no one's retries --------------------------------------------------------------

def sent_once_despite(fault: str, school, smtp, job_id: int, workers: int) -> Counter:
    """Everyone in the audience got the notice, nobody failed or spent a retry; a message in flight
    when the fault struck may arrive twice (same Message-ID), at most one per worker."""
    expected = audience(school)
    per_address = received_once(smtp, expected)
    twice = [address for address, n in per_address.items() if n > 1]
    assert len(twice) <= workers, f"{fault}: {len(twice)} sent twice"
    for address in twice:
        assert len({m.message_id for m in smtp.received if m.rcpt == address}) == 1
    rows = recipient_rows(school, job_id)
    assert {status for status, _, _ in rows.values()} == {"sent"}
    assert {deferrals for _, deferrals, _ in rows.values()} == {0}
    print(f"\nDELIVERY {fault}: {len(expected)} recipients, {len(per_address)} received, "
          f"{sum(per_address.values()) - len(per_address)} twice, 0 failed, 0 retries spent")
    return per_address


@pytest.mark.slow
def test_a_mail_server_down_for_longer_than_every_retry_loses_nobody(make_school, smtp_server, consumer):
    """170 s is longer than the retries' 5 + 25 + 125 s: an outage must not spend them."""
    school = make_school(students=660, smtp=smtp_server, MAIL_RATE_LIMIT="40/second", NOTIFY_WAIT_MAX=15)
    consumer(school, workers=4)
    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    job_id = created["job_id"]
    assert len(audience(school)) >= 1000
    smtp_server.wait_for_count(300, timeout=60)
    smtp_server.stop()
    waiting = wait_for(lambda: (j := school.job(job_id))["waiting_for"] and j, 30,
                       message="the job never said it was waiting for the mail server")
    assert waiting["situation"] == "waiting for the mail server"
    page = school.admin().client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "waiting for the mail server" in page
    time.sleep(170)
    assert school.job(job_id)["failed"] == 0
    smtp_server.start()
    job = school.wait_job_done(job_id, timeout=120)

    assert (job["status"], job["failed"]) == ("done", 0)
    assert job["situation"] is None
    sent_once_despite("SMTP down 170 s", school, smtp_server, job_id, workers=4)


@pytest.mark.slow
def test_redis_restarted_four_times_during_a_job_fails_nobody(make_school, smtp_server, redis_server, consumer):
    school = make_school(students=500, smtp=smtp_server, redis=redis_server, MAIL_RATE_LIMIT="40/second",
                         NOTIFY_SWEEP_INTERVAL=1, NOTIFY_WAIT_MAX=5)
    consumer(school, workers=4)
    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    job_id = created["job_id"]
    for restart in range(4):
        smtp_server.wait_for_count(150 * (restart + 1), timeout=60)
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
    job = school.wait_job_done(job_id, timeout=180)

    assert (job["status"], job["failed"]) == ("done", 0)
    sent_once_despite("Redis restarted 4 times", school, smtp_server, job_id, workers=4)


# --- leases that hold on every machine ----------------------------------------------------------

@pytest.mark.slow
def test_a_consumer_whose_clock_runs_two_minutes_ahead_takes_nothing_it_should_not(
        make_school, smtp_server, redis_server, consumer):
    """Leases run on the database's clock: a consumer two minutes in the future, beside a normal
    one, neither thinks the other's leases ran out nor loses anything. Each answer takes a while,
    so a lease taken away mid-exchange would show as a message sent twice."""
    smtp_server.handler.rcpt_delay = 0.05
    school = make_school(students=300, database="postgres", smtp=smtp_server, redis=redis_server,
                         NOTIFY_SWEEP_INTERVAL=0.5, NOTIFY_BATCH_SIZE=50)
    consumer(school, workers=2)
    # Its wall clock is two minutes ahead; its timers (sleeps, waits) run true, as on a real machine.
    consumer(school, workers=2, prefix=("env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", "+2m"))
    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    job = school.wait_job_done(created["job_id"], timeout=120)

    per_address = received_once(smtp_server, audience(school))
    assert [a for a, n in per_address.items() if n > 1] == []
    assert (job["status"], job["failed"]) == ("done", 0)
    # Nobody's row was taken from one worker and handed to another.
    assert school.scalar("SELECT max(attempts) FROM notifications WHERE job_id = :job", job=created["job_id"]) == 1


# --- slow limits ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_six_a_minute_to_a_server_that_closes_idle_connections(make_school, mail_server, consumer):
    smtp = mail_server(timeout=5)  # closes a connection idle for 5 s; a message leaves every 10 s
    school = make_school(students=12, smtp=smtp, MAIL_RATE_LIMIT="6/minute")
    consumer(school, workers=1)
    created = school.create_event({"roles": ["guardians"], "grades": [], "classes": ["1A", "2A", "3A"]},
                                  title="Class trip")
    rows = recipient_rows(school, created["job_id"]) or wait_for(
        lambda: recipient_rows(school, created["job_id"]), 30)
    assert len(rows) >= 3
    job = school.wait_job_done(created["job_id"], timeout=90)

    assert (job["status"], job["failed"]) == ("done", 0)
    assert max(received_once(smtp, set(rows)).values()) == 1
    rows = recipient_rows(school, created["job_id"])
    assert {last_error for _, _, last_error in rows.values()} == {None}, "a message waited out an outage"
