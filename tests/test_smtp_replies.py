"""What the SMTP server answers decides what happens to each recipient: a temporary refusal is
tried again, a permanent one is recorded and left alone."""
import time
from collections import Counter

import pytest

from tests.support.host import wait_for
from tests.support.pages import parse
from tests.support.school import TEACHERS

TRY_LATER = "451 4.3.0 Try again later"
NO_SUCH_USER = "550 5.1.1 No such user"


def teacher_addresses(school) -> list[str]:
    return [row[0] for row in school.sql("SELECT email FROM teachers WHERE email IS NOT NULL ORDER BY id")]


def rows_by_email(school, job_id: int) -> dict[str, tuple]:
    return {email: (status, attempts, last_error) for email, status, attempts, last_error in school.sql(
        "SELECT email, status, attempts, last_error FROM notifications WHERE job_id = :job", job=job_id)}


@pytest.mark.slow
def test_temporary_refusals_are_sent_again(make_school, smtp_server, consumer):
    school = make_school(students=120, smtp=smtp_server, NOTIFY_RETRY_DELAY=0.5)
    addresses = teacher_addresses(school)
    greylisted = addresses[3:6]
    for address in greylisted:
        smtp_server.reply_for[address] = [TRY_LATER]  # refused once, then accepted

    consumer(school, workers=2)
    created = school.create_event(TEACHERS, title="Staff meeting")
    job = school.wait_job_done(created["job_id"], timeout=60)

    assert (job["status"], job["sent"], job["failed"], job["total"]) == ("done", len(addresses), 0, len(addresses))
    received = sorted(m.rcpt for m in smtp_server.received)
    assert received == sorted(addresses), "everyone gets it exactly once"
    attempts = smtp_server.rcpt_attempts
    assert {a: attempts[a] for a in greylisted} == {a: 2 for a in greylisted}
    assert all(attempts[a] == 1 for a in addresses if a not in greylisted)
    rows = rows_by_email(school, created["job_id"])
    assert {rows[a][:2] for a in greylisted} == {("sent", 2)}


@pytest.mark.slow
def test_permanent_refusals_fail_with_the_reply_and_are_never_retried(make_school, smtp_server, consumer):
    school = make_school(students=120, smtp=smtp_server, NOTIFY_RETRY_DELAY=0.5)
    addresses = teacher_addresses(school)
    unknown = addresses[2:5]
    for address in unknown:
        smtp_server.reply_for[address] = NO_SUCH_USER
    # Someone in the same batch is refused for now, so the batch itself is tried again.
    smtp_server.reply_for[addresses[-1]] = [TRY_LATER]

    consumer(school, workers=2)
    created = school.create_event(TEACHERS, title="Staff meeting")
    job = school.wait_job_done(created["job_id"], timeout=60)

    assert (job["status"], job["sent"], job["failed"]) == ("done", len(addresses) - len(unknown), len(unknown))
    assert sorted(m.rcpt for m in smtp_server.received) == sorted(a for a in addresses if a not in unknown)
    attempts = smtp_server.rcpt_attempts
    assert {a: attempts[a] for a in unknown} == {a: 1 for a in unknown}, "a permanent refusal was tried again"
    assert attempts[addresses[-1]] == 2
    rows = rows_by_email(school, created["job_id"])
    assert {a for a, (status, _, _) in rows.items() if status == "failed"} == set(unknown)
    assert {rows[a] for a in unknown} == {("failed", 1, NO_SUCH_USER)}

    page = school.admin().client.get(f"/jobs/{created['job_id']}")
    assert page.status_code == 200
    table = parse(page.data).find("table", class_="failed")
    assert table is not None, "the job page lists no failed recipients"
    shown = [row.text for row in table.find_all("tr")[1:]]
    assert len(shown) == len(unknown)
    for address in unknown:
        assert any(address in line and NO_SUCH_USER in line for line in shown), (address, shown)


@pytest.mark.slow
def test_a_server_that_never_answers_is_given_up_on_and_tried_again(make_school, smtp_server, silent_listener,
                                                                    consumer):
    school = make_school(students=120, smtp=smtp_server, MAIL_TIMEOUT=1, NOTIFY_RETRY_DELAY=0.5)
    addresses = teacher_addresses(school)
    smtp_server.stop()
    hung = silent_listener(smtp_server.port)  # takes the connection, never greets

    consumer(school, workers=1)
    created = school.create_event(TEACHERS, title="Staff meeting")
    wait_for(lambda: hung.accepted, 30, message="the consumer never connected")
    hung.stop_listening()  # the first connection stays open and silent: only a timeout ends it
    smtp_server.start()
    job = school.wait_job_done(created["job_id"], timeout=60)

    assert (job["status"], job["sent"], job["failed"]) == ("done", len(addresses), 0)
    assert sorted(m.rcpt for m in smtp_server.received) == sorted(addresses)
    # A server that does not answer is an outage: waited out, with nobody's retries spent.
    assert school.scalar("SELECT max(deferrals) FROM notifications") == 0


@pytest.mark.slow
def test_a_reply_slower_than_the_lease_does_not_get_the_message_sent_twice(make_school, smtp_server, consumer):
    """While one answer takes longer than the batch's lease, the worker keeps renewing its lease,
    so the sweeper never hands the batch to another worker: that recipient gets one copy."""
    school = make_school(students=120, smtp=smtp_server, NOTIFY_LEASE_SECONDS=2, NOTIFY_SWEEP_INTERVAL=0.5)
    addresses = teacher_addresses(school)
    slow = addresses[2]
    smtp_server.delay_for[slow] = [5]  # the first answer only: more than twice the lease

    consumer(school, workers=2)
    created = school.create_event(TEACHERS, title="Staff meeting")
    job = school.wait_job_done(created["job_id"], timeout=60)
    time.sleep(3)  # whatever a second worker would have sent would have arrived by now

    assert (job["status"], job["sent"]) == ("done", len(addresses))
    per_address = Counter(m.rcpt for m in smtp_server.received)
    assert set(per_address) == set(addresses)
    assert [a for a, n in per_address.items() if n > 1] == []
    assert smtp_server.rcpt_attempts[slow] == 1


@pytest.mark.slow
def test_pausing_does_not_use_up_the_retries(make_school, smtp_server, consumer):
    """Retries are for the mail server's refusals: a batch handed back by a pause (or a stopping
    consumer) and taken up again has not been tried and refused."""
    school = make_school(students=120, smtp=smtp_server, MAIL_RATE_LIMIT="8/second", NOTIFY_RETRIES=1,
                         NOTIFY_RETRY_DELAY=0.5)
    addresses = teacher_addresses(school)
    greylisted = addresses[-1]  # refused once, after the pause
    smtp_server.reply_for[greylisted] = [TRY_LATER]

    consumer(school, workers=1)
    created = school.create_event(TEACHERS, title="Staff meeting")
    job_id = created["job_id"]
    smtp_server.wait_for_count(3, timeout=30)
    assert school.api("POST", f"/api/jobs/{job_id}/pause").status_code == 200
    wait_for(lambda: school.scalar("SELECT count(*) FROM notification_batches WHERE status = 'sending'") == 0, 30,
             message="the batch was not handed back")
    assert school.api("POST", f"/api/jobs/{job_id}/resume").status_code == 200
    job = school.wait_job_done(job_id, timeout=60)

    assert (job["status"], job["sent"], job["failed"]) == ("done", len(addresses), 0)
    assert smtp_server.rcpt_attempts[greylisted] == 2
    assert sorted(m.rcpt for m in smtp_server.received) == sorted(addresses)
