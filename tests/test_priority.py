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
