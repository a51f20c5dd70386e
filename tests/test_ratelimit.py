"""MAIL_RATE_LIMIT is one smooth limit shared by every consumer process, checked on the clock of
the SMTP server that receives the mail."""
import bisect

import pytest

from tests.support.school import server_database

# seed_demo(1200) puts 100 students in each grade and gives students from grade 7 up an address.
FIVE_GRADES = {"roles": ["students"], "grades": [7, 8, 9, 10, 11], "classes": []}
ADDRESSES = "SELECT count(DISTINCT email) FROM students WHERE grade BETWEEN 7 AND 11 AND email IS NOT NULL"


def busiest_second(times: list[float]) -> int:
    """The most messages in any one-second window, the window sliding over every message."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def test_busiest_second_counts_across_window_edges():
    # A fixed window starting at 0 would see 2 and 2; the burst straddling 1.0 holds 4.
    assert busiest_second([0.1, 0.9, 0.95, 1.05, 1.1, 2.5]) == 4
    assert busiest_second([0.0, 1.0, 2.0]) == 1


@pytest.mark.slow
def test_two_consumers_share_one_smooth_limit(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=1200, database=server_database(), redis=redis_server, smtp=smtp_server,
                         MAIL_RATE_LIMIT="50/second", NOTIFY_BATCH_SIZE=50)
    assert school.scalar(ADDRESSES) == 500

    consumers = [consumer(school, workers=2), consumer(school, workers=2)]
    created = school.create_event(FIVE_GRADES, title="Exam timetable")
    # Watch the SMTP server, not the API, while mail arrives: the server shares this process, and
    # polling the app in the meantime would jitter the very timestamps under test.
    received = smtp_server.wait_for_count(500, timeout=60)
    job = school.wait_job_done(created["job_id"], timeout=30)
    assert (job["status"], job["sent"]) == ("done", 500)
    assert len(received) == len({m.rcpt for m in received}) == 500
    times = [m.at for m in received]
    assert busiest_second(times) <= 51
    assert max(times) - min(times) >= 9.0
    for handle in consumers:  # the limit was shared, not just obeyed by a lone consumer
        assert "send_batch" in handle.log(), f"consumer {handle.pid} sent nothing"
