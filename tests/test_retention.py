"""Per-recipient rows of finished jobs go after RETENTION_DAYS; the job's summary stays."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from school.events.models import Event
from school.extensions import db
from school.notify.models import Notification, NotificationBatch, NotificationJob
from school.notify.retention import purge
from school.notify.tasks import purge_old_rows
from school.notify.progress import progress


def finished_job(title: str, finished_at: datetime, sent: int, failed: int) -> int:
    event = Event(title=title, starts_at=finished_at, ends_at=finished_at,
                  audience={"roles": ["guardians"], "grades": [], "classes": []})
    job = NotificationJob(event=event, status="done", total=sent + failed, fanout_done=True,
                          started_at=finished_at - timedelta(minutes=1), finished_at=finished_at)
    batch = NotificationBatch(job=job, seq=1, status="done", size=sent + failed, sent=sent, failed=failed)
    db.session.add_all([event, job, batch])
    db.session.flush()
    db.session.add_all(
        [Notification(job_id=job.id, batch_id=batch.id, email=f"p{i}@example.org", name=f"P {i}", roles="guardian",
                      status="sent" if i < sent else "failed", last_error=None if i < sent else "550 no such user")
         for i in range(sent + failed)])
    db.session.commit()
    return job.id


def test_purge_keeps_summaries_and_recent_rows(app):
    now = datetime.now(timezone.utc)
    with app.app_context():
        old = finished_job("Old", now - timedelta(days=app.config["RETENTION_DAYS"], hours=1), sent=5, failed=2)
        recent = finished_job("Recent", now - timedelta(days=1), sent=3, failed=0)

    # The consumer's daily periodic task, run here as the consumer would run it.
    purge_old_rows.call_local()
    with app.app_context():
        remaining = dict(db.session.execute(
            select(Notification.job_id, func.count()).group_by(Notification.job_id)).all())
        assert remaining == {recent: 3}
        summary = progress(db.session.get(NotificationJob, old))
        assert (summary.status, summary.total, summary.sent, summary.failed, summary.pending) == ("done", 7, 5, 2, 0)
        # A second run finds nothing more to do.
        assert purge() == 0
