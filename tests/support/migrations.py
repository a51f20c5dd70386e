"""Upgrading a database that already holds data: go down to the revision before the one under
test, write rows as the old schema had them, and come back up (on SQLite or PostgreSQL)."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from school.extensions import db

# One sent notice to one guardian, as the schema before the family side held it.
SENT_NOTICE = [
    "INSERT INTO events (id, title, description, location, starts_at, ends_at, audience, priority, created_at)"
    " VALUES (1, 'Sports day', '', 'Field', '2031-03-12 18:00:00+00', '2031-03-12 20:00:00+00',"
    " '{\"roles\": [\"guardians\"]}', 'normal', '2026-12-01 10:00:00+00')",
    "INSERT INTO notification_jobs (id, event_id, status, priority, total, skipped, fanout_done, created_at, holds)"
    " VALUES (1, 1, 'done', 0, 1, 0, true, '2026-12-01 10:00:00+00', 0)",
    "INSERT INTO notification_batches (id, job_id, seq, status, size, sent, failed, canceled, attempts)"
    " VALUES (1, 1, 1, 'done', 1, 1, 0, 0, 1)",
    "INSERT INTO notifications (id, job_id, batch_id, email, name, roles, children, status, attempts, deferrals)"
    " VALUES (1, 1, 1, 'maria@families.example.org', 'Maria Silva', 'guardian', 'Ana Silva', 'sent', 1, 0)",
]


def upgrade_holding(before: str, statements: list[str]) -> None:
    """In an app context: downgrade to ``before`` (a revision, or ``<rev>-1`` for the one before
    it), write ``statements``, then upgrade to the head."""
    downgrade(revision=before)
    for statement in statements:
        db.session.execute(text(statement))
    db.session.commit()
    db.session.remove()
    upgrade()


def count_after_downgrade(before: str, table: str) -> int:
    """Go back down to ``before`` and count ``table``'s rows: a downgrade keeps what was there."""
    db.session.remove()
    downgrade(revision=before)
    count = db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar()  # nosec B608  # test's own table name
    db.session.remove()
    return count
