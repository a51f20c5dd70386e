"""Handing saved work to the queue. The database row is written (and committed) first; the queue
only carries it. When the queue cannot take it, the row says so and the sweeper hands it out later.

The functions that enqueue are passed in (``enqueue_fanout``, ``enqueue_batch``): the consumer's
task module defines them, and nothing here imports it.
"""
import logging

from flask import current_app
from sqlalchemy import update

from ..extensions import db
from . import ratelimit
from .leases import db_now
from .models import NotificationBatch, NotificationJob

log = logging.getLogger(__name__)


def dispatch(job: NotificationJob, enqueue_fanout) -> bool:
    """Hand a committed job's fan-out to the queue (the outbox relay).

    The job is claimed by setting ``dispatched_at`` before enqueueing, so the web request and the
    sweeper never both dispatch it; if the queue cannot be reached the claim is undone and the job
    waits, saved, for the sweeper to dispatch it when the queue is back.
    """
    claimed = db.session.execute(
        update(NotificationJob).where(NotificationJob.id == job.id, NotificationJob.dispatched_at.is_(None))
        .values(dispatched_at=db_now())
    ).rowcount
    db.session.commit()
    if not claimed:
        return False
    ratelimit.urgent_on_its_way(current_app.config, job.id, job.priority)
    try:
        enqueue_fanout(job.id, job.priority)
    except Exception as exc:
        log.warning("job %s: queue unreachable (%s); it will be dispatched when the queue is back", job.id, exc)
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job.id).values(dispatched_at=None))
        db.session.commit()
        return False
    return True


def requeue(batch_id: int, priority: int, enqueue_batch) -> bool:
    """Offer a waiting batch to the queue again; False (and left for the sweeper) if it cannot take it."""
    try:
        enqueue_batch(batch_id, priority)
    except Exception as exc:
        log.warning("batch %s: queue unreachable (%s)", batch_id, exc)
        return False
    db.session.execute(update(NotificationBatch).where(NotificationBatch.id == batch_id)
                       .values(enqueued_at=db_now(), not_before=None))
    db.session.commit()
    return True
