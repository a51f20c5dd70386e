"""An event for the whole school reaches every distinct address exactly once, through a real
queue, a real consumer process and a real SMTP server."""
from collections import Counter

import pytest

from school.family.tokens import notice_token

from tests.support.school import SENDER, WHOLE_SCHOOL, audience, server_database

WITHOUT_EMAIL = """
    SELECT (SELECT count(*) FROM students WHERE email IS NULL)
         + (SELECT count(*) FROM guardians g WHERE g.email IS NULL
              AND EXISTS (SELECT 1 FROM student_guardians sg WHERE sg.guardian_id = g.id))
         + (SELECT count(*) FROM teachers WHERE email IS NULL)
"""
# A guardian with an address and at least two children of different names.
GUARDIAN_OF_SIBLINGS = """
    SELECT g.id, g.email FROM guardians g
    JOIN student_guardians sg ON sg.guardian_id = g.id
    JOIN students s ON s.id = sg.student_id
    WHERE g.email IS NOT NULL
    GROUP BY g.id, g.email HAVING count(DISTINCT s.name) >= 2
    ORDER BY g.id LIMIT 1
"""
CHILDREN_OF = """
    SELECT s.name FROM students s JOIN student_guardians sg ON sg.student_id = s.id
    WHERE sg.guardian_id = :guardian
"""


def whole_school_is_notified(school, smtp, consumer, workers: int, timeout: float) -> None:
    addresses = audience(school)  # worked out from the roster alone
    without_email = school.scalar(WITHOUT_EMAIL)
    assert len(addresses) > 300 and without_email > 0  # a school worth testing

    created = school.create_event(WHOLE_SCHOOL, title="Sports day")
    consumer(school, workers=workers)
    job = school.wait_job_done(created["job_id"], timeout)

    received = smtp.received
    per_address = Counter(m.rcpt for m in received)
    assert set(per_address) == addresses, "the SMTP server did not get exactly the audience's addresses"
    assert [a for a, n in per_address.items() if n > 1] == [], "someone got the notice twice"
    assert len({m.message_id for m in received}) == len(received)

    assert job["status"] == "done"
    assert (job["total"], job["sent"], job["failed"], job["pending"]) == (len(addresses), len(addresses), 0, 0)
    assert job["skipped"] == without_email
    rows = dict(school.sql("SELECT status, count(*) FROM notifications WHERE job_id = :job GROUP BY status",
                           job=created["job_id"]))
    assert rows == {"sent": len(addresses)}
    assert {r[0] for r in school.sql("SELECT email FROM notifications WHERE job_id = :job",
                                     job=created["job_id"])} == addresses

    # One message as a parent reads it.
    guardian_id, guardian_email = school.sql(GUARDIAN_OF_SIBLINGS)[0]
    children = {r[0] for r in school.sql(CHILDREN_OF, guardian=guardian_id)}
    (mail,) = [m for m in received if m.rcpt == guardian_email]
    notification_id = school.scalar("SELECT id FROM notifications WHERE job_id = :job AND email = :email",
                                    job=created["job_id"], email=guardian_email)
    message = mail.message
    assert message["From"] == SENDER
    assert message["Subject"] == "Sports day"
    assert message["Message-ID"].endswith("@springfield-school.example.org>")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    with school.app.app_context():
        link = f"http://school.test/n/{notice_token(created['job_id'], notification_id)}"
    for part in (text, html):
        assert link in part
        assert all(child in part for child in children), f"{children} are not all named"


@pytest.mark.slow
def test_whole_school_on_redis(make_school, redis_server, smtp_server, consumer):
    school = make_school(students=1000, database=server_database(), redis=redis_server, smtp=smtp_server)
    whole_school_is_notified(school, smtp_server, consumer, workers=4, timeout=90)


@pytest.mark.slow
def test_whole_school_embedded(make_school, smtp_server, consumer):
    """The default install: SQLite for the data and for the queue, the consumer a separate process."""
    school = make_school(students=300, smtp=smtp_server)
    assert "REDIS_URL" not in school.env and "DATABASE_URL" not in school.env
    whole_school_is_notified(school, smtp_server, consumer, workers=4, timeout=90)
