"""Job-level operations: dispatch (the outbox), recovery, controls and progress."""
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, or_, select, update

from ..extensions import cache, db
from ..timeutil import aware, utcnow
from .models import JOB_ENDED, Notification, NotificationBatch, NotificationJob

log = logging.getLogger(__name__)

EPOCH_KEY = "school:queue-epoch"


class JobStateError(ValueError):
    """The control does not apply to the job in its current state."""


# --- handing work to the queue -------------------------------------------------------------

def enqueue_fanout(job_id: int, priority: int) -> None:
    from .tasks import fanout

    fanout.huey.enqueue(fanout.s(job_id, priority=priority))


def enqueue_batch(batch_id: int, priority: int, delay: float = 0) -> None:
    from .tasks import send_batch

    send_batch.huey.enqueue(send_batch.s(batch_id, priority=priority, delay=delay or None))


def dispatch(job: NotificationJob) -> bool:
    """Hand a committed job's fan-out to the queue (the outbox relay).

    The job is claimed by setting ``dispatched_at`` before enqueueing, so the web request and the
    sweeper never both dispatch it; if the queue cannot be reached the claim is undone and the job
    waits, saved, for the sweeper to dispatch it when the queue is back.
    """
    claimed = db.session.execute(
        update(NotificationJob).where(NotificationJob.id == job.id, NotificationJob.dispatched_at.is_(None))
        .values(dispatched_at=utcnow())
    ).rowcount
    db.session.commit()
    if not claimed:
        return False
    try:
        enqueue_fanout(job.id, job.priority)
    except Exception as exc:
        log.warning("job %s: queue unreachable (%s); it will be dispatched when the queue is back", job.id, exc)
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job.id).values(dispatched_at=None))
        db.session.commit()
        return False
    return True


def requeue(batch: NotificationBatch, priority: int) -> bool:
    try:
        enqueue_batch(batch.id, priority)
    except Exception as exc:
        log.warning("batch %s: queue unreachable (%s)", batch.id, exc)
        return False
    db.session.execute(update(NotificationBatch).where(NotificationBatch.id == batch.id)
                       .values(enqueued_at=utcnow(), not_before=None))
    db.session.commit()
    return True


# --- recovery ---------------------------------------------------------------------------------

@dataclass
class SweepReport:
    dispatched: int = 0
    fanouts: int = 0
    expired: int = 0
    requeued: int = 0
    queue_reset: bool = False


def _queue_was_reset(huey) -> bool:
    """True when the queue's storage lost everything since the last sweep (a new, empty Redis).

    A marker is kept in the queue's own storage; if it is gone, so is every task queued before.
    It is written only where absent, atomically, so of several sweeps at once one sees the reset.
    """
    return huey.storage.put_if_empty(EPOCH_KEY, str(time.time()).encode())


def sweep(huey, stale_after: float | None = None) -> SweepReport:
    """Find work the queue lost and hand it back. Safe to run anywhere, any number of times.

    - jobs never dispatched (the queue was down when they were created);
    - fan-outs whose lease expired before they finished;
    - batches whose lease expired (their consumer died): pending and in-doubt rows go back;
    - batches waiting in the database that the queue no longer holds: all of them after the queue
      was reset, otherwise those waiting past ``stale_after`` while the queue is empty.
    """
    report = SweepReport()
    now = utcnow()
    stale_after = stale_after if stale_after is not None else 2 * current_app.config["NOTIFY_LEASE_SECONDS"]
    stale = now - timedelta(seconds=stale_after)
    reset = report.queue_reset = _queue_was_reset(huey)
    queue_idle = reset or (huey.pending_count() == 0)

    live = NotificationJob.status.in_(("queued", "running"))
    report.dispatched = sum(dispatch(job) for job in db.session.scalars(
        select(NotificationJob).where(live, NotificationJob.dispatched_at.is_(None))).all())

    # After a reset, what was queued before it was seen is gone; whatever was dispatched since
    # (by this sweep, another consumer's, or the web app) went into the new queue and is not lost.
    # ``now`` was taken before the reset was seen, so it bounds both.
    lost = [NotificationJob.fanout_lease_until < now]
    if reset:
        lost.append(NotificationJob.fanout_lease_until.is_(None) & (NotificationJob.dispatched_at < now))
    elif queue_idle:
        lost.append(NotificationJob.fanout_lease_until.is_(None) & (NotificationJob.dispatched_at < stale))
    lost_fanout = or_(*lost)
    jobs = db.session.scalars(select(NotificationJob).where(
        live | (NotificationJob.status == "paused"), NotificationJob.fanout_done.is_(False),
        NotificationJob.dispatched_at.is_not(None), lost_fanout)).all()
    for job in jobs:
        try:
            enqueue_fanout(job.id, job.priority)
            report.fanouts += 1
        except Exception as exc:
            log.warning("job %s: cannot re-dispatch the fan-out (%s)", job.id, exc)

    from .sender import release

    expired = db.session.scalars(select(NotificationBatch.id).where(
        NotificationBatch.status == "sending", NotificationBatch.lease_until < now)).all()
    for batch_id in expired:
        # Only if still expired: the worker may have renewed between the select and now.
        taken = db.session.execute(update(NotificationBatch).where(
            NotificationBatch.id == batch_id, NotificationBatch.status == "sending",
            NotificationBatch.lease_until < now).values(lease_owner="sweeper", lease_until=now + timedelta(seconds=30))
        ).rowcount
        db.session.commit()
        if taken:
            release(batch_id)
            report.expired += 1

    lost = [NotificationBatch.enqueued_at.is_(None)]  # released, or the queue was down
    if reset:
        lost.append(NotificationBatch.enqueued_at < now)
    elif queue_idle:
        lost.append((NotificationBatch.enqueued_at < stale)
                    & or_(NotificationBatch.not_before.is_(None), NotificationBatch.not_before < stale))
    waiting = (NotificationBatch.status == "queued") & or_(*lost)
    rows = db.session.execute(
        select(NotificationBatch, NotificationJob.priority).join(NotificationJob)
        .where(waiting, NotificationJob.status == "running")
    ).all()
    for batch, priority in rows:
        report.requeued += requeue(batch, priority)
    if any(vars(report).values()):
        log.info("sweep: %s", report)
    return report


# --- controls ---------------------------------------------------------------------------------

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
    return _transition(job_id, ("queued", "running"), status="paused")


def resume(job_id: int) -> NotificationJob:
    job = _transition(job_id, ("paused",), status="running")
    _requeue_waiting(job)
    return job


def cancel(job_id: int) -> NotificationJob:
    """Cancel what is not yet sent; messages already on the wire finish."""
    job = _transition(job_id, ("queued", "running", "paused"), status="canceled", finished_at=utcnow())
    waiting = (Notification.job_id == job_id) & (Notification.status == "pending") & Notification.batch_id.in_(
        select(NotificationBatch.id).where(NotificationBatch.job_id == job_id, NotificationBatch.status == "queued"))
    db.session.execute(update(Notification).where(waiting).values(status="canceled"))
    db.session.execute(update(NotificationBatch).where(
        NotificationBatch.job_id == job_id, NotificationBatch.status == "queued").values(
        status="done", canceled=NotificationBatch.size - NotificationBatch.sent - NotificationBatch.failed))
    db.session.commit()
    return job


def retry_failed(job_id: int) -> int:
    """Send again to the failed recipients only; returns how many."""
    job = db.session.get(NotificationJob, job_id)
    if job is None:
        raise LookupError(job_id)
    if job.status not in ("done", "running", "paused") or job.purged_at is not None:
        raise JobStateError(f"job {job_id} is {job.status}" + (" and its rows were purged" if job.purged_at else ""))
    batch_ids = select(NotificationBatch.id).where(NotificationBatch.job_id == job_id,
                                                   NotificationBatch.status == "done")
    count = db.session.execute(update(Notification).where(
        Notification.job_id == job_id, Notification.status == "failed", Notification.batch_id.in_(batch_ids)
    ).values(status="pending", last_error=None)).rowcount
    if not count:
        db.session.rollback()
        return 0
    db.session.execute(update(NotificationBatch).where(
        NotificationBatch.job_id == job_id, NotificationBatch.status == "done", NotificationBatch.failed > 0
    ).values(status="queued", failed=0, attempts=0, enqueued_at=None))
    db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id, NotificationJob.status == "done")
                       .values(status="running", finished_at=None))
    db.session.commit()
    db.session.refresh(job)
    if job.status == "running":
        _requeue_waiting(job)
    forget_progress(job_id)
    return count


def _requeue_waiting(job: NotificationJob) -> None:
    batches = db.session.scalars(select(NotificationBatch).where(
        NotificationBatch.job_id == job.id, NotificationBatch.status == "queued")).all()
    for batch in batches:
        requeue(batch, job.priority)


# --- progress ---------------------------------------------------------------------------------

RATE_WINDOW = 10.0


@dataclass
class Progress:
    id: int
    event_id: int
    status: str
    total: int
    sent: int
    failed: int
    skipped: int
    canceled: int
    pending: int
    rate_per_s: float
    eta_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_s: float | None
    fanout_done: bool

    @property
    def ended(self) -> bool:
        return self.status in JOB_ENDED

    @property
    def percent(self) -> int:
        if not self.total:
            return 100 if self.ended else 0
        return int(100 * (self.sent + self.failed + self.canceled) / self.total)

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data.pop("fanout_done")
        return data


def progress(job: NotificationJob) -> Progress:
    """The job's counters: a sum over its batches (about one row per hundred recipients)."""
    if job.purged_at is not None:
        sent, failed, canceled = job.final_sent or 0, job.final_failed or 0, job.final_canceled or 0
    else:
        sent, failed, canceled = db.session.execute(
            select(func.coalesce(func.sum(NotificationBatch.sent), 0),
                   func.coalesce(func.sum(NotificationBatch.failed), 0),
                   func.coalesce(func.sum(NotificationBatch.canceled), 0))
            .where(NotificationBatch.job_id == job.id)).one()
    started, finished = aware(job.started_at), aware(job.finished_at)
    now = utcnow()
    elapsed = ((finished or now) - started).total_seconds() if started else None
    pending = max(job.total - sent - failed - canceled, 0)
    rate = _rate(job.id, sent, elapsed) if job.status == "running" else (
        round(sent / elapsed, 1) if elapsed else 0.0)
    eta = round(pending / rate, 1) if rate and pending and job.status == "running" else (
        0.0 if job.status == "done" else None)
    return Progress(job.id, job.event_id, job.status, job.total, sent, failed, job.skipped, canceled, pending,
                    rate, eta, started, finished, round(elapsed, 1) if elapsed is not None else None,
                    job.fanout_done)


def _rate(job_id: int, sent: int, elapsed: float | None) -> float:
    """Messages a second over the last few seconds, from samples kept in the shared cache."""
    key = f"job-rate:{job_id}"
    now = time.time()
    samples = [s for s in (cache.get(key) or []) if now - s[0] <= RATE_WINDOW]
    samples.append((now, sent))
    cache.set(key, samples[-20:], timeout=int(RATE_WINDOW * 3))
    first = samples[0]
    if now - first[0] >= 1.0:
        return round(max(sent - first[1], 0) / (now - first[0]), 1)
    return round(sent / elapsed, 1) if elapsed and elapsed > 0 else 0.0


def forget_progress(job_id: int) -> None:
    cache.delete(f"job-rate:{job_id}")
