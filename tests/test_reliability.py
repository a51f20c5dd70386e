"""Never lose a notification: faults injected into real processes while a job is being sent.

Every test breaks something in the middle of a job (a consumer killed or stopped, Redis replaced
by an empty one, the SMTP server gone, an admin pausing or canceling) and then checks, on what
the SMTP server received, that each recipient got the email once, or was failed or canceled on
purpose. Each prints one ``RELIABILITY`` line with its figures (``pytest -s`` shows them); the
figures in docs/reliability.md come from these lines.

Leases are short and consumers sweep every second, so recovery takes seconds, not minutes.
"""
import signal
import time

import pytest

from school.notify.tasks import RELEASE_TIMEOUT
from tests.support.faults import AdminPage, executions, job_messages, settled, tally
from tests.support.host import wait_for
from tests.support.pages import parse
from tests.support.school import WHOLE_SCHOOL, audience, server_database

slow = pytest.mark.slow

QUICK_RECOVERY = {"NOTIFY_LEASE_SECONDS": 3, "NOTIFY_SWEEP_INTERVAL": 1}
# Production's pair (PostgreSQL and Redis) when PostgreSQL is there to test on.
DATABASE = server_database()
QUIET = 3  # seconds a stopped job is watched to see that nothing more arrives


def new_school(make_school, students: int, database: str = DATABASE, **settings):
    return make_school(students=students, database=database, **{**QUICK_RECOVERY, **settings})


def stays_flat(smtp, seconds: float = QUIET) -> int:
    """Watch the SMTP server for ``seconds``; fail if anything arrives. How many it holds."""
    before = smtp.count()
    time.sleep(seconds)
    assert smtp.count() == before, f"{smtp.count() - before} messages arrived after sending should have stopped"
    return before


# --- 1. a consumer killed outright ----------------------------------------------------------

@slow
def test_kill9_consumer_mid_job(make_school, redis_server, smtp_server, consumer):
    """No chance to hand anything back: the killed consumer's leases expire and another picks
    the batches up. Only a message on the wire at the kill can arrive twice (one per thread)."""
    workers = 4
    school = new_school(make_school, 3300, redis=redis_server, smtp=smtp_server, MAIL_RATE_LIMIT="300/second")
    expected = audience(school)
    assert len(expected) >= 5000

    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    doomed = consumer(school, workers=workers)
    smtp_server.wait_for_count(1000, 90)
    doomed.kill()
    at_fault = smtp_server.count()
    assert at_fault < len(expected), "the job ended before the consumer could be killed"

    consumer(school, workers=workers)
    job = school.wait_job_done(job_id, 180)

    result = tally("kill -9 mid-job", school, smtp_server, job_id, expected, received_at_kill=at_fault)
    assert result.lost == 0
    assert set(result.per_recipient) == expected, "someone never got the email"
    assert result.duplicates <= workers, f"{result.twice} got it more than once"
    # Whoever got it twice got the same message twice, so their mail server can drop one.
    assert all(len(ids) == 1 for ids in result.message_ids.values())
    assert (job["status"], job["sent"], job["failed"]) == ("done", len(expected), 0)


# --- 2. Redis replaced by an empty one ------------------------------------------------------

@slow
def test_redis_restarted_empty_mid_job(make_school, redis_server, smtp_server, consumer):
    """Everything queued is gone; the database still knows which batches are not done, and the
    sweeper notices the queue was reset (its marker key vanished) and queues them again."""
    school = new_school(make_school, 1000, redis=redis_server, smtp=smtp_server, MAIL_RATE_LIMIT="200/second")
    expected = audience(school)

    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=4)
    smtp_server.wait_for_count(300, 60)
    redis_server.stop()
    at_fault = smtp_server.count()
    assert at_fault < len(expected), "the job ended before Redis could be stopped"
    time.sleep(2)
    redis_server.start()  # nothing persisted: an empty Redis

    job = school.wait_job_done(job_id, 120)
    result = tally("Redis restarted empty mid-job", school, smtp_server, job_id, expected,
                   received_at_stop=at_fault)
    assert result.lost == 0
    assert set(result.per_recipient) == expected
    assert result.duplicates == 0, f"{result.twice} got it more than once"
    assert (job["status"], job["sent"]) == ("done", len(expected))


# --- 3. the outbox: an event created while Redis is down -------------------------------------

@slow
def test_event_created_while_redis_is_down(make_school, redis_server, smtp_server, consumer):
    school = new_school(make_school, 300, redis=redis_server, smtp=smtp_server)
    expected = audience(school)
    redis_server.stop()

    created = school.create_event(WHOLE_SCHOOL)  # asserts the 202
    job_id = created["job_id"]
    assert school.sql("SELECT status, dispatched_at FROM notification_jobs WHERE id = :job",
                      job=job_id) == [("queued", None)]
    page = parse(AdminPage(school).get(f"/events/{created['event_id']}").data)
    notice = page.find(role="status")
    assert notice is not None and "sending will start by itself when it is back" in notice.text

    # A consumer is there before the queue is: it keeps trying, and dispatches once Redis is back.
    early = consumer(school, workers=2)
    time.sleep(2)
    assert school.job(job_id)["status"] == "queued" and smtp_server.count() == 0
    redis_server.start()

    job = school.wait_job_done(job_id, 60)
    result = tally("event created while Redis was down", school, smtp_server, job_id, expected)
    assert result.lost == 0 and result.duplicates == 0
    assert set(result.per_recipient) == expected
    assert job["status"] == "done"
    assert school.scalar("SELECT dispatched_at FROM notification_jobs WHERE id = :job", job=job_id) is not None
    assert executions([early], "fanout") == 1, "the job was dispatched more than once"


# --- 4. the SMTP server unreachable for a while ----------------------------------------------

SMTP_OUTAGE = 10
# Retries 2, 4, 8 and 16 s after each failure: the later ones land after the outage.
PATIENT_RETRIES = {"NOTIFY_RETRY_DELAY": 2, "NOTIFY_RETRY_BACKOFF": 2, "NOTIFY_RETRIES": 4}


@slow
def test_smtp_unreachable_mid_job(make_school, redis_server, smtp_server, consumer):
    workers = 4
    school = new_school(make_school, 600, redis=redis_server, smtp=smtp_server, MAIL_RATE_LIMIT="100/second",
                        **PATIENT_RETRIES)
    expected = audience(school)

    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=workers)
    smtp_server.wait_for_count(150, 60)
    smtp_server.stop()
    at_fault = smtp_server.count()
    time.sleep(SMTP_OUTAGE)
    assert at_fault < len(expected), "the job ended before the SMTP server went away"
    assert school.job(job_id)["status"] == "running"
    smtp_server.start()

    job = school.wait_job_done(job_id, 90)
    result = tally(f"SMTP server unreachable for {SMTP_OUTAGE} s mid-job", school, smtp_server, job_id, expected,
                   received_at_stop=at_fault)
    assert result.lost == 0
    assert set(result.per_recipient) == expected
    # Only a message whose DATA the server took as it went away can arrive again.
    assert result.duplicates <= workers, f"{result.twice} got it more than once"
    assert (job["status"], job["sent"], job["failed"]) == ("done", len(expected), 0)


# --- 5. several consumers on one job -------------------------------------------------------

@slow
@pytest.mark.parametrize("database", ["postgres", "sqlite"])
@slow
def test_two_consumers_share_a_job(database, make_school, smtp_server, consumer, request):
    """Six worker threads in two processes claim batches of one job; each batch is sent by one of
    them, and the rows stay unique per job and address."""
    queue = {"redis": request.getfixturevalue("redis_server")} if database == "postgres" else {}
    school = new_school(make_school, 1000, database=database, smtp=smtp_server, NOTIFY_BATCH_SIZE=50,
                        MAIL_RATE_LIMIT="300/second", **queue)
    expected = audience(school)

    pair = [consumer(school, workers=3), consumer(school, workers=3)]
    for handle in pair:
        handle.wait_started()  # both compete for the job's batches from the start
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    job = school.wait_job_done(job_id, 90)

    result = tally(f"two consumers on {'PostgreSQL + Redis' if queue else 'SQLite + SQLite queue'}",
                   school, smtp_server, job_id, expected)
    rows, addresses = school.sql("SELECT count(*), count(DISTINCT email) FROM notifications WHERE job_id = :job",
                                 job=job_id)[0]
    assert rows == addresses == len(expected), "a recipient has more than one notification row"
    assert result.duplicates == 0, f"{result.twice} got it more than once"
    assert result.lost == 0 and set(result.per_recipient) == expected
    assert job["status"] == "done"
    assert all(executions([c], "send_batch") for c in pair), "one consumer did all the work"


# --- 6. the admin's controls ---------------------------------------------------------------

def controlled_school(make_school, redis_server, smtp_server, students: int = 300):
    return new_school(make_school, students, redis=redis_server, smtp=smtp_server, NOTIFY_BATCH_SIZE=100,
                      MAIL_RATE_LIMIT="50/second")


def control(school, job_id: int, action: str) -> dict:
    response = school.api("POST", f"/api/jobs/{job_id}/{action}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@slow
def test_pause_then_resume(make_school, redis_server, smtp_server, consumer):
    school = controlled_school(make_school, redis_server, smtp_server)
    expected = audience(school)
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=2)
    smtp_server.wait_for_count(60, 60)

    at_pause = smtp_server.count()
    assert control(school, job_id, "pause")["status"] == "paused"
    wait_for(lambda: settled(school, job_id), 10, message="batches kept sending after the pause")
    paused_at = stays_flat(smtp_server)
    batch = school.config["NOTIFY_BATCH_SIZE"]
    assert paused_at - at_pause <= batch, f"{paused_at - at_pause} messages left after the pause"
    job = school.job(job_id)
    assert job["status"] == "paused" and job["pending"] > 0 and paused_at < len(expected)

    # Resume from the job page, as an admin clicks it.
    response = AdminPage(school).press(job_id, "Resume")
    assert response.status_code == 200
    assert parse(response.data).find("span", data_status="running") is not None
    job = school.wait_job_done(job_id, 60)

    result = tally("pause, then resume", school, smtp_server, job_id, expected, received_at_pause=at_pause,
                   after_pause=paused_at - at_pause)
    assert result.lost == 0 and result.duplicates == 0, result.twice
    assert set(result.per_recipient) == expected
    assert (job["status"], job["sent"]) == ("done", len(expected))


@slow
def test_cancel_mid_job(make_school, redis_server, smtp_server, consumer):
    school = controlled_school(make_school, redis_server, smtp_server)
    expected = audience(school)
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=2)
    smtp_server.wait_for_count(60, 60)

    at_cancel = smtp_server.count()
    assert control(school, job_id, "cancel")["status"] == "canceled"
    wait_for(lambda: settled(school, job_id), 10, message="batches kept sending after the cancel")
    canceled_at = stays_flat(smtp_server)

    result = tally("cancel mid-job", school, smtp_server, job_id, expected, received_at_cancel=at_cancel,
                   after_cancel=canceled_at - at_cancel)
    rows = dict(school.sql("SELECT email, status FROM notifications WHERE job_id = :job", job=job_id))
    canceled = {email for email, status in rows.items() if status == "canceled"}
    sent = {email for email, status in rows.items() if status == "sent"}
    assert canceled, "nothing was left to cancel"
    assert set(result.per_recipient) == sent, "the rows do not say who got the email"
    assert not canceled & set(result.per_recipient), "a canceled recipient got the email"
    assert result.lost == 0 and result.duplicates == 0
    job = school.job(job_id)
    assert job["status"] == "canceled"
    assert (job["sent"], job["canceled"], job["pending"]) == (len(sent), len(canceled), 0)
    assert len(sent) + len(canceled) == len(expected)


@slow
def test_retry_failed_sends_only_to_the_failed(make_school, redis_server, smtp_server, consumer):
    school = controlled_school(make_school, redis_server, smtp_server, students=200)
    expected = audience(school)
    refused = set(sorted(expected)[::40])
    for address in refused:
        smtp_server.reply_for[address] = "550 5.1.1 No such user here"
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=2, MAIL_RATE_LIMIT="0")
    job = school.wait_job_done(job_id, 60)
    assert (job["status"], job["failed"]) == ("done", len(refused))
    assert not refused & {m.rcpt for m in job_messages(smtp_server, job_id)}

    smtp_server.reply_for.clear()  # the addresses were fixed
    before = smtp_server.count()
    assert control(school, job_id, "retry-failed")["retried"] == len(refused)
    job = school.wait_job_done(job_id, 60)
    assert sorted(m.rcpt for m in smtp_server.received[before:]) == sorted(refused)

    result = tally("retry-failed after 550s", school, smtp_server, job_id, expected, refused=len(refused),
                   sent_by_retry=smtp_server.count() - before)
    assert result.duplicates == 0, f"{result.twice} got it more than once"
    assert set(result.per_recipient) == expected and result.lost == 0
    attempts = smtp_server.rcpt_attempts
    assert {a: attempts[a] for a in refused} == {a: 2 for a in refused}, "a refused address was not retried once"
    assert (job["status"], job["sent"], job["failed"]) == ("done", len(expected), 0)


# --- 7. a consumer told to stop -------------------------------------------------------------

SHUTDOWN_TIMEOUT = 2


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@slow
def test_graceful_stop_mid_batch(sig, make_school, redis_server, smtp_server, consumer):
    """SIGINT waits ``-t`` seconds for the batch to finish, SIGTERM does not wait; either way the
    batch hands back what it has not sent before the process exits, and nothing is sent twice."""
    school = new_school(make_school, 100, redis=redis_server, smtp=smtp_server, NOTIFY_BATCH_SIZE=50,
                        MAIL_RATE_LIMIT="10/second")
    expected = audience(school)
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    stopping = consumer(school, workers=2, extra_args=("-t", str(SHUTDOWN_TIMEOUT)))
    smtp_server.wait_for_count(10, 60)
    assert not settled(school, job_id), "no batch is being sent"

    code = stopping.stop(sig, timeout=SHUTDOWN_TIMEOUT + RELEASE_TIMEOUT + 5)
    assert code is not None, "the consumer did not exit"
    assert settled(school, job_id), "the consumer exited holding a batch"
    assert school.scalar("SELECT count(*) FROM notifications WHERE job_id = :job AND status = 'sending'",
                         job=job_id) == 0
    at_fault = smtp_server.count()
    assert at_fault < len(expected)

    consumer(school, workers=2, MAIL_RATE_LIMIT="0")
    job = school.wait_job_done(job_id, 60)
    result = tally(f"{signal.Signals(sig).name} mid-batch", school, smtp_server, job_id, expected,
                   received_at_exit=at_fault)
    assert result.lost == 0 and result.duplicates == 0, result.twice
    assert set(result.per_recipient) == expected
    assert job["status"] == "done"


# --- 8. waiting for a slow rate limit longer than the lease ---------------------------------

@slow
def test_waiting_for_the_rate_limit_keeps_the_lease(make_school, redis_server, smtp_server, consumer):
    """Eight threads share 3 messages a second, so each waits about 2.7 s for a slot, longer than
    the 2 s lease: a worker must keep its lease while it waits, or the sweeper hands its batch to
    another worker and both send it."""
    school = new_school(make_school, 6, redis=redis_server, smtp=smtp_server, NOTIFY_LEASE_SECONDS=2,
                        NOTIFY_BATCH_SIZE=2, MAIL_RATE_LIMIT="3/second")
    expected = audience(school)
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    consumer(school, workers=8)
    job = school.wait_job_done(job_id, 60)

    result = tally("rate-limit waits longer than the lease", school, smtp_server, job_id, expected)
    assert result.duplicates == 0, f"{result.twice} got it more than once"
    assert result.lost == 0 and set(result.per_recipient) == expected
    assert job["status"] == "done"

# --- the sweep itself -----------------------------------------------------------------------

def test_a_sweep_notices_a_reset_queue_and_dispatches_a_waiting_job_once(app, seeded, admin_user):
    """A queue that lost everything is noticed by the first sweep after it, and by that one only.
    The sweep that dispatches a waiting job must not then take its fan-out (which has no lease
    yet) for one the reset queue lost, and queue it a second time."""
    from sqlalchemy import select, update

    from school.auth.models import User
    from school.events.services import create_event, parse_event
    from school.extensions import db
    from school.notify.models import NotificationJob
    from school.notify.tasks import enqueue_fanout, sweep_now
    from school.queue import huey

    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == admin_user.email))
        create_event(parse_event({"title": "Fire drill", "starts_at": "2031-03-12T09:00:00Z",
                                  "ends_at": "2031-03-12T09:30:00Z", "audience": WHOLE_SCHOOL}), user, enqueue_fanout)
        # As if the queue had been down when the event was created, and had come back empty.
        db.session.execute(update(NotificationJob).values(dispatched_at=None))
        db.session.commit()
        huey.flush()

        report = sweep_now()
        assert (report.queue_reset, report.dispatched, report.fanouts) == (True, 1, 0)
        assert huey.pending_count() == 1

        report = sweep_now()  # nothing happened since: nothing to do
        assert (report.queue_reset, report.dispatched, report.fanouts) == (False, 0, 0)
        assert huey.pending_count() == 1

        huey.flush()  # the queue loses the fan-out before any consumer took it
        report = sweep_now()
        assert (report.queue_reset, report.dispatched, report.fanouts) == (True, 0, 1)
        assert huey.pending_count() == 1


def test_a_job_dispatched_after_a_reset_was_seen_is_not_taken_for_lost(app, seeded, admin_user, monkeypatch):
    """Two sweeps at once (a consumer's periodic one and its sweeper thread, or two consumers):
    one sees the reset, the other then dispatches a waiting job into the new queue. The first,
    carrying on with what it saw, must not queue that job's fan-out a second time."""
    from sqlalchemy import select, update

    from school.auth.models import User
    from school.events.services import create_event, parse_event
    from school.extensions import db
    from school.notify import recovery
    from school.notify.tasks import enqueue_fanout, sweep_now
    from school.notify.models import NotificationJob
    from school.queue import huey
    from school.timeutil import utcnow

    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == admin_user.email))
        create_event(parse_event({"title": "Fire drill", "starts_at": "2031-03-12T09:00:00Z",
                                  "ends_at": "2031-03-12T09:30:00Z", "audience": WHOLE_SCHOOL}), user, enqueue_fanout)
        db.session.execute(update(NotificationJob).values(dispatched_at=None))
        db.session.commit()
        huey.flush()

        first_began = utcnow()
        assert recovery._queue_was_reset(huey)  # the first sweep sees the reset ...
        other = sweep_now()  # ... and another one dispatches the waiting job meanwhile
        assert (other.queue_reset, other.dispatched, other.fanouts) == (False, 1, 0)

        # The first sweep carries on with the time it began at and the reset it saw.
        monkeypatch.setattr(recovery, "db_now", lambda: first_began)
        monkeypatch.setattr(recovery, "_queue_was_reset", lambda queue: True)
        first = sweep_now()
        assert (first.dispatched, first.fanouts) == (0, 0)
        assert huey.pending_count() == 1, "the fan-out is queued once"
