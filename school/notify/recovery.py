"""The sweep: find the work the queue lost and hand it back. Safe to run anywhere, any number of times.

It runs as named passes, each over what the database says is waiting:

- ``dispatch_saved_jobs``: jobs never dispatched (the queue was down when they were created);
- ``redispatch_lost_fanouts``: fan-outs whose lease expired before they finished, or that the queue lost;
- ``release_expired_batches``: batches whose lease expired (their consumer died): pending and in-doubt
  rows go back;
- ``requeue_lost_batches``: batches waiting in the database that the queue no longer holds: all of
  them after the queue was reset, otherwise those waiting past ``stale_after`` while the queue is empty;
- ``resume_held_jobs``: jobs held because the mail server refused us, once their hold is over;
- ``cancel_leftovers``: what a canceled job still had waiting (a batch its dead consumer held, or
  one its fan-out wrote as it was canceled), so a canceled job never keeps pending recipients.
"""
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from ..extensions import db
from .controls import JobStateError, resume_held
from .delivery import UNSETTLED, cancel_batch, recount, release
from .leases import db_now, new_owner
from .models import (JOB_LIVE, JOB_OPEN, BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob,
                     RecipientStatus)
from .outbox import dispatch, requeue

log = logging.getLogger(__name__)

EPOCH_KEY = "school:queue-epoch"
SWEEPER = "sweeper"
SWEEPER_HOLD = timedelta(seconds=30)  # how long the sweeper holds an expired batch while releasing it


@dataclass
class SweepReport:
    dispatched: int = 0
    fanouts: int = 0
    expired: int = 0
    requeued: int = 0
    resumed: int = 0
    canceled: int = 0
    queue_reset: bool = False


@dataclass(frozen=True)
class QueueSight:
    """What one sweep saw when it began: the time, whether the queue was reset, whether it is idle."""

    now: datetime
    stale: datetime  # work handed to the queue before this, while the queue is idle, is taken for lost
    reset: bool
    idle: bool


def _queue_was_reset(huey) -> bool:
    """True when the queue's storage lost everything since the last sweep (a new, empty Redis).

    A marker is kept in the queue's own storage; if it is gone, so is every task queued before.
    It is written only where absent, atomically, so of several sweeps at once one sees the reset.
    """
    return huey.storage.put_if_empty(EPOCH_KEY, str(time.time()).encode())


def look(huey, stale_after: float | None = None) -> QueueSight:
    now = db_now()
    db.session.commit()
    if stale_after is None:
        stale_after = 2 * current_app.config["NOTIFY_LEASE_SECONDS"]
    reset = _queue_was_reset(huey)
    return QueueSight(now, now - timedelta(seconds=stale_after), reset, reset or huey.pending_count() == 0)


def sweep(huey, enqueue_fanout, enqueue_batch, stale_after: float | None = None) -> SweepReport:
    sight = look(huey, stale_after)
    report = SweepReport(queue_reset=sight.reset)
    report.dispatched = dispatch_saved_jobs(enqueue_fanout)
    report.fanouts = redispatch_lost_fanouts(sight, enqueue_fanout)
    report.expired = release_expired_batches(sight.now)
    report.requeued = requeue_lost_batches(sight, enqueue_batch)
    report.resumed = resume_held_jobs(sight.now, enqueue_batch)
    report.canceled = cancel_leftovers()
    if any(vars(report).values()):
        log.info("sweep: %s", report)
    return report


def dispatch_saved_jobs(enqueue_fanout) -> int:
    jobs = db.session.scalars(select(NotificationJob).where(
        NotificationJob.status.in_(JOB_LIVE), NotificationJob.dispatched_at.is_(None))).all()
    return sum(dispatch(job, enqueue_fanout) for job in jobs)


def redispatch_lost_fanouts(sight: QueueSight, enqueue_fanout) -> int:
    # After a reset, what was queued before it was seen is gone; whatever was dispatched since
    # (by this sweep, another consumer's, or the web app) went into the new queue and is not lost.
    # ``sight.now`` was taken before the reset was seen, so it bounds both.
    never_started = NotificationJob.fanout_lease_until.is_(None)
    lost = [NotificationJob.fanout_lease_until < sight.now]
    if sight.reset:
        lost.append(never_started & (NotificationJob.dispatched_at < sight.now))
    elif sight.idle:
        lost.append(never_started & (NotificationJob.dispatched_at < sight.stale))
    jobs = db.session.execute(select(NotificationJob.id, NotificationJob.priority).where(
        NotificationJob.status.in_(JOB_OPEN), NotificationJob.fanout_done.is_(False),
        NotificationJob.dispatched_at.is_not(None), or_(*lost))).all()
    handed = 0
    for job_id, priority in jobs:
        try:
            enqueue_fanout(job_id, priority)
            handed += 1
        except Exception as exc:
            log.warning("job %s: cannot re-dispatch the fan-out (%s)", job_id, exc)
    return handed


def release_expired_batches(now: datetime) -> int:
    expired = db.session.execute(select(NotificationBatch.id, NotificationJob.status).join(NotificationJob).where(
        NotificationBatch.status == BatchStatus.SENDING, NotificationBatch.lease_until < now)).all()
    released = 0
    for batch_id, job_status in expired:
        # Only if still expired: the worker may have renewed between the select and now.
        owner = f"{SWEEPER}:{new_owner()}"
        taken = db.session.execute(update(NotificationBatch).where(
            NotificationBatch.id == batch_id, NotificationBatch.status == BatchStatus.SENDING,
            NotificationBatch.lease_until < now).values(lease_owner=owner, lease_until=now + SWEEPER_HOLD)
        ).rowcount
        db.session.commit()
        if not taken:
            continue
        if job_status == JobStatus.CANCELED:
            cancel_batch(batch_id, owner)
        else:
            release(batch_id, owner)
        released += 1
    return released


def requeue_lost_batches(sight: QueueSight, enqueue_batch) -> int:
    lost = [NotificationBatch.enqueued_at.is_(None)]  # released, or the queue was down
    if sight.reset:
        lost.append(NotificationBatch.enqueued_at < sight.now)
    elif sight.idle:
        lost.append((NotificationBatch.enqueued_at < sight.stale)
                    & or_(NotificationBatch.not_before.is_(None), NotificationBatch.not_before < sight.stale))
    rows = db.session.execute(
        select(NotificationBatch.id, NotificationJob.priority).join(NotificationJob)
        .where(NotificationBatch.status == BatchStatus.QUEUED, or_(*lost), NotificationJob.status == JobStatus.RUNNING)
    ).all()
    return sum(requeue(batch_id, priority, enqueue_batch) for batch_id, priority in rows)


def resume_held_jobs(now: datetime, enqueue_batch) -> int:
    due = db.session.scalars(select(NotificationJob.id).where(
        NotificationJob.status == JobStatus.HELD, NotificationJob.held_until < now)).all()
    resumed = 0
    for job_id in due:
        try:
            resume_held(job_id, enqueue_batch)
            resumed += 1
        except JobStateError:  # resumed, paused or canceled meanwhile
            pass
    return resumed


def cancel_leftovers() -> int:
    canceled = select(NotificationJob.id).where(NotificationJob.status == JobStatus.CANCELED)
    batch_ids = db.session.scalars(select(NotificationBatch.id).where(
        NotificationBatch.status == BatchStatus.QUEUED, NotificationBatch.job_id.in_(canceled))).all()
    for batch_id in batch_ids:
        db.session.execute(update(Notification).where(
            Notification.batch_id == batch_id, Notification.status.in_(UNSETTLED))
            .values(status=RecipientStatus.CANCELED))
        recount(batch_id, status=BatchStatus.DONE)
        db.session.commit()
    return len(batch_ids)
