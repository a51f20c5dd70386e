"""Creating an event does the same work for ten recipients as for ten thousand.

Latency itself belongs in the benchmarks; here the work is counted: the SQL statements the
create request issues, which must not depend on the audience, and must leave the roster and the
per-recipient tables to the consumers.
"""
import re
from contextlib import contextmanager

from sqlalchemy import event

from school.extensions import db
from school.roster.audience import Audience, count

ALL_ROLES = ["guardians", "students", "teachers"]
# Resolving or counting an audience reads these; writing notifications fills the last two.
PER_RECIPIENT = re.compile(
    r"\b(students|guardians|teachers|student_guardians|class_teachers|notifications|notification_batches)\b",
    re.IGNORECASE)


@contextmanager
def statements_of(app):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_create_does_the_same_work_for_any_audience_size(make_school):
    school = make_school(students=7000)
    classes = [row[0] for row in school.sql("SELECT name FROM classes ORDER BY name")]
    one_class = {"roles": ["students"], "grades": [], "classes": ["7A"]}
    every_class = {"roles": ALL_ROLES, "grades": [], "classes": classes}
    with school.app.app_context():
        small = count(Audience.from_dict(one_class)).recipients
        large = count(Audience.from_dict(every_class)).recipients
    assert small <= 30 and large >= 10_000, (small, large)

    work = {}
    for name, audience in (("small", one_class), ("large", every_class)):
        with statements_of(school.app) as seen:
            created = school.create_event(audience, title=f"Concert for the {name} audience")
        work[name] = list(seen)
        assert created["job_id"]

    assert len(work["small"]) == len(work["large"]), work
    for statements in work.values():
        touching = [s for s in statements if PER_RECIPIENT.search(s)]
        assert touching == [], "the create request read the roster or wrote per-recipient rows"

    for job in school.api("GET", "/api/jobs").get_json()["jobs"]:
        assert job["status"] == "queued" and job["total"] == 0  # nobody resolved, counted or notified yet
