"""A batch that crashes its worker (not an SMTP refusal) is retried, then given up, never looped on."""
import pytest
from sqlalchemy import select

from school.events.models import Event
from school.extensions import db
from school.notify import delivery, letter
from school.notify.fanout import run_fanout
from school.notify.models import Notification, NotificationBatch, NotificationJob


@pytest.fixture
def one_batch(app_on, sqlite_url, smtp_server):
    from school.roster.seed import seed_demo

    app = app_on(sqlite_url, MAIL_PORT=str(smtp_server.port), NOTIFY_RETRIES="1", NOTIFY_BATCH_SIZE="1000")
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


def test_a_batch_that_keeps_crashing_is_failed_with_a_reason(one_batch, smtp_server, monkeypatch):
    app, job_id, batch_id = one_batch

    def broken(self, recipient):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(letter.Letter, "render", broken)
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
