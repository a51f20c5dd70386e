"""When a job is over: its fan-out has written every recipient and every batch is done."""
from sqlalchemy import and_, select, update

from ..extensions import db
from ..timeutil import utcnow
from .models import BatchStatus, JobStatus, NotificationBatch, NotificationJob


def finish_if_complete(job_id: int) -> bool:
    """Mark the job done once its fan-out is over and every batch is done."""
    open_batches = select(NotificationBatch.id).where(
        NotificationBatch.job_id == job_id, NotificationBatch.status != BatchStatus.DONE)
    result = db.session.execute(
        update(NotificationJob)
        .where(and_(NotificationJob.id == job_id, NotificationJob.status == JobStatus.RUNNING,
                    NotificationJob.fanout_done.is_(True), ~open_batches.exists()))
        .values(status=JobStatus.DONE, finished_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1
