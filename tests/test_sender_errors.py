"""A recipient whose message cannot be built fails alone; a batch that crashes its worker (not an SMTP
refusal) is retried, then given up, never looped on."""
import pytest
from sqlalchemy import func, select

from school.events.models import Event
from school.extensions import db
from school.notify import delivery, letter
from school.notify.fanout import run_fanout
from school.notify.models import Notification, NotificationBatch, NotificationJob


@pytest.fixture
def one_batch(app_on, sqlite_url, smtp_server):
    from school.roster.seed import seed_demo

    app = app_on(sqlite_url, MAIL_PORT=str(smtp_server.port), NOTIFY_RETRIES="1", NOTIFY_BATCH_SIZE="1000")
    app.extensions["mail"].suppress = False  # a testing app would only record; send to the real server
    with app.app_context():
        seed_demo(24)
        event = Event(title="Crash", starts_at=db.func.now(), ends_at=db.func.now(),
                      audience={"roles": ["teachers"], "grades": [], "classes": []})
        job = NotificationJob(event=event, dispatched_at=db.func.now())
        db.session.add_all([event, job])
        db.session.commit()
        run_fanout(job.id, lambda *args, **kwargs: None)
        batch_id = db.session.scalar(select(NotificationBatch.id).where(NotificationBatch.job_id == job.id))
    return app, job.id, batch_id


def test_a_message_that_cannot_be_composed_fails_alone(one_batch, smtp_server, monkeypatch):
    """One recipient's bad data costs nobody else the notice: that recipient fails with the reason."""
    app, job_id, batch_id = one_batch
    render = letter.Letter.render
    with app.app_context():
        broken_id = db.session.scalar(select(func.min(Notification.id)).where(Notification.job_id == job_id))

    def broken_for_one(self, recipient):
        if recipient.id == broken_id:
            raise RuntimeError("template exploded")
        return render(self, recipient)

    monkeypatch.setattr(letter.Letter, "render", broken_for_one)
    with app.app_context():
        assert delivery.send(batch_id, lambda *args, **kwargs: None) == "done"
        rows = dict(db.session.execute(select(Notification.email, Notification.status)
                                       .where(Notification.job_id == job_id)).all())
        broken = db.session.get(Notification, broken_id)
        assert (broken.status, broken.last_error) == ("failed", "not sent: the message could not be composed (RuntimeError)")
        assert {email for email, status in rows.items() if status == "sent"} == set(rows) - {broken.email}
        assert db.session.get(NotificationJob, job_id).status == "done"
    assert sorted(m.rcpt for m in smtp_server.received) == sorted(set(rows) - {broken.email})


def test_a_batch_that_keeps_crashing_is_failed_with_a_reason(one_batch, smtp_server, monkeypatch):
    app, job_id, batch_id = one_batch

    def broken(self):
        raise RuntimeError("the worker exploded")

    monkeypatch.setattr(delivery.BatchRun, "recipients", broken)
    with app.app_context():
        with pytest.raises(RuntimeError):
            delivery.send(batch_id, lambda *args, **kwargs: None)
        # First crash: handed back, nothing lost, nothing failed yet.
        assert db.session.get(NotificationBatch, batch_id).status == "queued"
        assert set(db.session.scalars(select(Notification.status).where(Notification.job_id == job_id))) == {"pending"}

        with pytest.raises(RuntimeError):
            delivery.send(batch_id, lambda *args, **kwargs: None)
        # Out of retries: every recipient failed with the reason, and the job is over.
        rows = db.session.execute(select(Notification.status, Notification.last_error)
                                  .where(Notification.job_id == job_id)).all()
        assert rows and {status for status, _ in rows} == {"failed"}
        assert all("internal error (RuntimeError)" in error for _, error in rows)
        assert db.session.get(NotificationJob, job_id).status == "done"
    assert smtp_server.received == []
