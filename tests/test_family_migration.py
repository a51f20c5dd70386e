"""The family revision upgrades a database that already holds sent notices, on SQLite and PostgreSQL,
and goes back down."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text

from school.events.models import Event
from school.extensions import db
from school.notify.models import Notification, NotificationJob

BEFORE = "a7f3c2e91b05-1"

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


def test_sent_notices_gain_the_family_side(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        downgrade(revision=BEFORE)
        for statement in SENT_NOTICE:
            db.session.execute(text(statement))
        db.session.commit()
        db.session.remove()
        upgrade()

        job = db.session.get(NotificationJob, 1)
        assert (job.opted_out, job.acknowledged, job.rsvp_yes, job.rsvp_no, job.rsvp_maybe) == (0, 0, 0, 0, 0)
        assert job.follow_up_of_id is None
        assert db.session.get(Event, 1).rsvp is False
        row = db.session.scalars(select(Notification)).one()
        assert row.acknowledged_at is None and row.rsvp is None
        db.session.remove()

        downgrade(revision=BEFORE)
        assert db.session.execute(text("SELECT count(*) FROM notifications")).scalar() == 1
        db.session.remove()
        upgrade()
