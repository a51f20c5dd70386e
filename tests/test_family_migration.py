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


def test_sent_notices_keep_their_rows_when_left_out_rows_arrive(app_on, db_url):
    """The revision that lets a row stand outside a batch (an opted-out address on the ledger)."""
    app = app_on(db_url)
    with app.app_context():
        downgrade(revision="a7f3c2e91b05")
        for statement in SENT_NOTICE:
            db.session.execute(text(statement))
        db.session.commit()
        db.session.remove()
        upgrade()
        # The ledger's search directory starts with the addresses already there.
        assert db.session.execute(text("SELECT email, name, search FROM recipient_addresses")).all() == [
            ("maria@families.example.org", "Maria Silva", "maria silva maria@families.example.org")]

        db.session.add(Notification(id=2, job_id=1, batch_id=None, email="cy@families.example.org", name="Cy Jones",
                                    roles="guardian", children="", status="opted_out"))
        db.session.commit()
        assert db.session.scalars(select(Notification.status).order_by(Notification.id)).all() == ["sent", "opted_out"]
        db.session.remove()

        # Going back down drops only the row no batch holds; the sent notice stays.
        downgrade(revision="a7f3c2e91b05")
        assert db.session.execute(text("SELECT email FROM notifications")).scalars().all() == [
            "maria@families.example.org"]
        db.session.remove()
        upgrade()
