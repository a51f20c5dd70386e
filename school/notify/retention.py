"""Per-recipient rows of finished jobs are kept RETENTION_DAYS, then removed; the summary stays."""
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select, update

from ..extensions import db
from ..timeutil import utcnow
from .models import JOB_ENDED, Notification, NotificationBatch, NotificationJob, RecipientAddress
from .progress import progress

log = logging.getLogger(__name__)


def purge(now=None) -> int:
    """Remove the rows of jobs that ended more than RETENTION_DAYS ago; returns how many jobs."""
    cutoff = (now or utcnow()) - timedelta(days=current_app.config["RETENTION_DAYS"])
    jobs = db.session.scalars(select(NotificationJob).where(
        NotificationJob.status.in_(JOB_ENDED), NotificationJob.finished_at < cutoff,
        NotificationJob.purged_at.is_(None))).all()
    for job in jobs:
        summary = progress(job)
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job.id).values(
            final_sent=summary.sent, final_failed=summary.failed, final_canceled=summary.canceled,
            purged_at=utcnow()))
        db.session.execute(delete(Notification).where(Notification.job_id == job.id))
        db.session.execute(delete(NotificationBatch).where(NotificationBatch.job_id == job.id))
        db.session.commit()
    if jobs:
        # Addresses no notice row holds any more leave the ledger's search directory too.
        db.session.execute(delete(RecipientAddress).where(~select(Notification.id).where(
            Notification.email == RecipientAddress.email).exists()))
        db.session.commit()
        log.info("purged the recipient rows of %s finished job(s)", len(jobs))
    return len(jobs)
