"""What an admin can do to a job: pause, resume, cancel, and send again to the failed recipients.

Resuming and retrying hand batches back to the queue, through the ``enqueue_batch`` they are given.
"""
from sqlalchemy import select, update

from ..extensions import db
from ..timeutil import utcnow
from .completion import finish_if_complete
from .models import (JOB_OPEN, BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob,
                     RecipientStatus)
from .outbox import requeue
from .progress import forget_progress

ACTIONS = ("pause", "resume", "cancel", "retry-failed")


class JobStateError(ValueError):
    """The control does not apply to the job in its current state."""


def apply(job_id: int, action: str, enqueue_batch) -> int | None:
    """Run one of ``ACTIONS`` on the job; for retry-failed, how many recipients are sent again.

    ``LookupError`` for an unknown job, ``JobStateError`` when the job's state does not allow it.
    """
    if action == "pause":
        pause(job_id)
    elif action == "resume":
        resume(job_id, enqueue_batch)
    elif action == "cancel":
        cancel(job_id)
    elif action == "retry-failed":
        return retry_failed(job_id, enqueue_batch)
    else:
        raise ValueError(action)
    return None


def describe(action: str, retried: int | None) -> str:
    """What happened, in the words the admin's page shows."""
    if action == "retry-failed":
        return f"Sending again to {retried:,} failed recipient(s)." if retried else "No failed recipients to retry."
    return {"pause": "Paused.", "resume": "Resumed.", "cancel": "Canceled."}[action]


def _transition(job_id: int, allowed: tuple[str, ...], **values) -> NotificationJob:
    job = db.session.get(NotificationJob, job_id)
    if job is None:
        raise LookupError(job_id)
    done = db.session.execute(update(NotificationJob).where(
        NotificationJob.id == job_id, NotificationJob.status.in_(allowed)).values(**values)).rowcount
    db.session.commit()
    if not done:
        db.session.refresh(job)
        raise JobStateError(f"job {job_id} is {job.status}")
    db.session.refresh(job)
    forget_progress(job_id)
    return job


def pause(job_id: int) -> NotificationJob:
    """Stop sending; each batch being sent stops at its next check (within a second)."""
    return _transition(job_id, (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.HELD), status=JobStatus.PAUSED)


def resume(job_id: int, enqueue_batch) -> NotificationJob:
    """Send again: a paused job, or a held one at once instead of when its hold is over."""
    return _resume(job_id, (JobStatus.PAUSED, JobStatus.HELD), enqueue_batch)


def resume_held(job_id: int, enqueue_batch) -> NotificationJob:
    """A held job whose hold is over tries again (the sweeper calls this)."""
    return _resume(job_id, (JobStatus.HELD,), enqueue_batch)


def _resume(job_id: int, allowed: tuple[str, ...], enqueue_batch) -> NotificationJob:
    job = _transition(job_id, allowed, status=JobStatus.RUNNING, held_until=None)
    _requeue_waiting(job, enqueue_batch)
    # Every batch may have ended while it was paused: then there is nothing to wait for.
    if finish_if_complete(job_id):
        db.session.refresh(job)
    return job


def cancel(job_id: int) -> NotificationJob:
    """Cancel what is not yet sent (a scheduled job before it starts); messages already on the wire finish."""
    job = _transition(job_id, (*JOB_OPEN, JobStatus.SCHEDULED), status=JobStatus.CANCELED, finished_at=utcnow())
    waiting_batches = select(NotificationBatch.id).where(NotificationBatch.job_id == job_id,
                                                         NotificationBatch.status == BatchStatus.QUEUED)
    db.session.execute(update(Notification).where(
        Notification.job_id == job_id, Notification.status == RecipientStatus.PENDING,
        Notification.batch_id.in_(waiting_batches)).values(status=RecipientStatus.CANCELED))
    db.session.execute(update(NotificationBatch).where(
        NotificationBatch.job_id == job_id, NotificationBatch.status == BatchStatus.QUEUED).values(
        status=BatchStatus.DONE, canceled=NotificationBatch.size - NotificationBatch.sent - NotificationBatch.failed))
    db.session.commit()
    return job


def retry_failed(job_id: int, enqueue_batch) -> int:
    """Send again to the failed recipients only; returns how many."""
    job = db.session.get(NotificationJob, job_id)
    if job is None:
        raise LookupError(job_id)
    if job.status not in (JobStatus.DONE, JobStatus.RUNNING, JobStatus.PAUSED) or job.purged_at is not None:
        raise JobStateError(f"job {job_id} is {job.status}" + (" and its rows were purged" if job.purged_at else ""))
    batch_ids = select(NotificationBatch.id).where(NotificationBatch.job_id == job_id,
                                                   NotificationBatch.status == BatchStatus.DONE)
    count = db.session.execute(update(Notification).where(
        Notification.job_id == job_id, Notification.status == RecipientStatus.FAILED,
        Notification.batch_id.in_(batch_ids)
    ).values(status=RecipientStatus.PENDING, last_error=None)).rowcount
    if not count:
        db.session.rollback()
        return 0
    db.session.execute(update(NotificationBatch).where(
        NotificationBatch.job_id == job_id, NotificationBatch.status == BatchStatus.DONE, NotificationBatch.failed > 0
    ).values(status=BatchStatus.QUEUED, failed=0, attempts=0, enqueued_at=None))
    db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id,
                                                     NotificationJob.status == JobStatus.DONE)
                       .values(status=JobStatus.RUNNING, finished_at=None))
    db.session.commit()
    db.session.refresh(job)
    if job.status == JobStatus.RUNNING:
        _requeue_waiting(job, enqueue_batch)
    forget_progress(job_id)
    return count


def _requeue_waiting(job: NotificationJob, enqueue_batch) -> None:
    batch_ids = db.session.scalars(select(NotificationBatch.id).where(
        NotificationBatch.job_id == job.id, NotificationBatch.status == BatchStatus.QUEUED)).all()
    for batch_id in batch_ids:
        requeue(batch_id, job.priority, enqueue_batch)
