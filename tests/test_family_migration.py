"""The family revision upgrades a database that already holds sent notices, on SQLite and PostgreSQL,
and goes back down."""
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text

from school.events.models import Event
from school.extensions import db
from school.notify.models import Notification, NotificationJob
from tests.support.migrations import SENT_NOTICE, count_after_downgrade, upgrade_holding

BEFORE = "a7f3c2e91b05-1"


def test_sent_notices_gain_the_family_side(app_on, db_url):
    app = app_on(db_url)
    with app.app_context():
        upgrade_holding(BEFORE, SENT_NOTICE)

        job = db.session.get(NotificationJob, 1)
        assert (job.opted_out, job.acknowledged, job.rsvp_yes, job.rsvp_no, job.rsvp_maybe) == (0, 0, 0, 0, 0)
        assert job.follow_up_of_id is None
        assert db.session.get(Event, 1).rsvp is False
        row = db.session.scalars(select(Notification)).one()
        assert row.acknowledged_at is None and row.rsvp is None
        assert count_after_downgrade(BEFORE, "notifications") == 1
        upgrade()


def test_sent_notices_keep_their_rows_when_left_out_rows_arrive(app_on, db_url):
    """The revision that lets a row stand outside a batch (an opted-out address on the ledger)."""
    app = app_on(db_url)
    with app.app_context():
        upgrade_holding("a7f3c2e91b05", SENT_NOTICE)
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
