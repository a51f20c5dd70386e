"""Urgent notices jump the queue: they do not wait behind a long job already waiting."""
import pytest

from tests.support.school import WHOLE_SCHOOL, server_database

GRADE_ONE_TEACHERS = {"roles": ["teachers"], "grades": [1], "classes": []}


@pytest.mark.slow
def test_urgent_notices_start_before_a_long_normal_job_ends(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=2000, database=server_database(), redis=redis_server, smtp=smtp_server,
                         MAIL_RATE_LIMIT="200/second")
    consumer(school, workers=1)  # one worker: whatever it takes next is what the queue ranks first

    normal = school.create_event(WHOLE_SCHOOL, title="Term dates")
    # Sending has begun once the fan-out is over, so the normal job's batches wait in the queue.
    smtp_server.wait_for_count(20, timeout=60)
    urgent = school.create_event(GRADE_ONE_TEACHERS, priority="urgent", title="Burst pipe: grade 1 closed")
    urgent_job = school.wait_job_done(urgent["job_id"], timeout=60)
    normal_job = school.job(normal["job_id"])

    assert urgent_job["status"] == "done" and urgent_job["sent"] == urgent_job["total"] > 0
    assert normal_job["status"] == "running", "the normal job ended before the urgent one was sent"
    assert normal_job["total"] > 3000
    assert normal_job["pending"] > normal_job["total"] // 2, "the urgent notices only just beat the normal job"
    urgent_received = [m for m in smtp_server.received if m.subject.startswith("Urgent: ")]
    assert len(urgent_received) == urgent_job["total"]

    # The rest of the normal job is of no interest here: stop it rather than wait for it.
    assert school.api("POST", f"/api/jobs/{normal['job_id']}/cancel").status_code == 200
    assert school.wait_job_done(normal["job_id"], timeout=30)["status"] == "canceled"


# seed_demo(1200) gives every grade 100 students, and students from grade 7 up an address.
FIVE_GRADES = {"roles": ["students"], "grades": [7, 8, 9, 10, 11], "classes": []}
GRADE_SEVEN_GUARDIANS = {"roles": ["guardians"], "grades": [7], "classes": []}
# A normal message permitted before the urgent demand reached the limit may still arrive after the
# first urgent one: per worker thread, the one whose content waits to travel with the next message
# (pipelining) and the one just permitted.
IN_FLIGHT_PER_THREAD = 2


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_an_urgent_notice_takes_the_rate_from_a_normal_one_already_sending(backend, make_school, smtp_server,
                                                                          consumer, request):
    """Both notices sent at the school's rate limit: once the urgent notice's first email arrives,
    the normal notice's stop arriving until the urgent one is all delivered, then go on to the end."""
    if backend == "redis":
        school = make_school(students=1200, database=server_database(), smtp=smtp_server,
                             redis=request.getfixturevalue("redis_server"),
                             MAIL_RATE_LIMIT="50/second", NOTIFY_BATCH_SIZE=20)
    else:  # no Redis: the queue and the limit live in files under DATA_DIR
        school = make_school(students=1200, smtp=smtp_server, MAIL_RATE_LIMIT="50/second", NOTIFY_BATCH_SIZE=20)
    consumers, workers = 2, 2  # two consumer processes share the limit (and its urgent demand)
    for _ in range(consumers):
        consumer(school, workers=workers)

    normal = school.create_event(FIVE_GRADES, title="Exam timetable")
    smtp_server.wait_for_count(60, timeout=60)  # the normal notice is under way, on every thread
    urgent = school.create_event(GRADE_SEVEN_GUARDIANS, priority="urgent", title="Burst pipe: grade 7 closed")
    urgent_job = school.wait_job_done(urgent["job_id"], timeout=90)
    normal_job = school.wait_job_done(normal["job_id"], timeout=90)

    assert urgent_job["status"] == normal_job["status"] == "done"
    assert urgent_job["sent"] == urgent_job["total"] > 2 * school.config["NOTIFY_BATCH_SIZE"]
    assert normal_job["sent"] == normal_job["total"] == 500
    received = smtp_server.received
    urgent_at = [i for i, m in enumerate(received) if m.subject.startswith("Urgent: ")]
    assert len(urgent_at) == urgent_job["total"]
    assert len({m.rcpt for m in received}) == len(received) == 500 + urgent_job["total"]
    normal_between = [m for m in received[urgent_at[0]:urgent_at[-1]] if not m.subject.startswith("Urgent: ")]
    print(f"\nURGENT FIRST ({backend}): {len(normal_between)} normal emails among {len(urgent_at)} urgent ones")
    assert len(normal_between) <= consumers * workers * IN_FLIGHT_PER_THREAD, (
        f"{len(normal_between)} normal emails arrived among the urgent ones")
    # The normal notice was sending before and went on after: given way, not finished early nor stuck.
    assert urgent_at[0] >= 60 and len(received) - urgent_at[-1] - 1 > 100
