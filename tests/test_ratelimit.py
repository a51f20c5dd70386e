"""MAIL_RATE_LIMIT is one smooth limit shared by every consumer process, checked on the clock of
the SMTP server that receives the mail."""
import bisect

import pytest

from tests.support.school import server_database

# seed_demo(1200) puts 100 students in each grade and gives students from grade 7 up an address.
FIVE_GRADES = {"roles": ["students"], "grades": [7, 8, 9, 10, 11], "classes": []}
GRADE_SEVEN = {"roles": ["students"], "grades": [7], "classes": []}
ADDRESSES = "SELECT count(DISTINCT email) FROM students WHERE grade BETWEEN 7 AND 11 AND email IS NOT NULL"


def busiest_second(times: list[float]) -> int:
    """The most messages in any one-second window, the window sliding over every message."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def test_busiest_second_counts_across_window_edges():
    # A fixed window starting at 0 would see 2 and 2; the burst straddling 1.0 holds 4.
    assert busiest_second([0.1, 0.9, 0.95, 1.05, 1.1, 2.5]) == 4
    assert busiest_second([0.0, 1.0, 2.0]) == 1


def two_consumers_keep_the_limit(school, smtp, consumer, audience: dict, expected: int, per_second: int) -> list[float]:
    """Two consumers send ``audience`` (``expected`` addresses): everyone once, both consumers
    sending, and no one-second window at the server holding more than the limit allows."""
    consumers = [consumer(school, workers=2), consumer(school, workers=2)]
    created = school.create_event(audience, title="Exam timetable")
    # Watch the SMTP server, not the API, while mail arrives: the server shares this process, and
    # polling the app in the meantime would jitter the very timestamps under test.
    received = smtp.wait_for_count(expected, timeout=90)
    job = school.wait_job_done(created["job_id"], timeout=30)
    assert (job["status"], job["sent"]) == ("done", expected)
    assert len(received) == len({m.rcpt for m in received}) == expected
    times = [m.at for m in received]
    assert busiest_second(times) <= per_second + 1
    for handle in consumers:  # the limit was shared, not just obeyed by a lone consumer
        assert "send_batch" in handle.log(), f"consumer {handle.pid} sent nothing"
    return times


@pytest.mark.slow
def test_two_consumers_share_one_smooth_limit(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=1200, database=server_database(), redis=redis_server, smtp=smtp_server,
                         MAIL_RATE_LIMIT="50/second", NOTIFY_BATCH_SIZE=50)
    assert school.scalar(ADDRESSES) == 500
    times = two_consumers_keep_the_limit(school, smtp_server, consumer, FIVE_GRADES, 500, per_second=50)
    assert max(times) - min(times) >= 9.0


@pytest.mark.slow
def test_two_consumers_without_redis_share_one_limit(make_school, smtp_server, consumer):
    """The embedded default: the limit lives in a file every process on the machine shares."""
    school = make_school(students=1200, smtp=smtp_server, MAIL_RATE_LIMIT="10/second", NOTIFY_BATCH_SIZE=10)
    times = two_consumers_keep_the_limit(school, smtp_server, consumer, GRADE_SEVEN, 100, per_second=10)
    print(f"\nRATE LIMIT without Redis: 2 consumers at 10/second, busiest second {busiest_second(times)}, "
          f"100 received in {max(times) - min(times):.1f} s")
