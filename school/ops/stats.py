"""The state of the queue and its consumers, as ``/health/queue``, ``/metrics`` and the dashboard show it.

Everything here is cheap to ask every couple of seconds: counts come from the queue's own counters,
per-batch counters in the database (about one row per hundred recipients), and the shared store;
nothing counts recipient rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload

from ..caching.versions import EVENTS, remember, version
from ..counters import heartbeats
from ..counters import store as store_module
from ..events.models import Event
from ..extensions import db
from ..notify.models import (JOB_OPEN, BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob,
                             RecipientStatus)
from ..notify.progress import progress
from ..queue import huey
from ..timeutil import utcnow

AGGREGATES_SECONDS = 2  # the dashboard polls every 2 s; several admins share one computation
WINDOWS = (1, 5, 15)  # minutes, for "sent in the last …"
CHART_MINUTES = 15


def queue_depth() -> dict:
    return {"waiting": huey.pending_count(), "scheduled": huey.scheduled_count()}


def consumers() -> list[heartbeats.ConsumerInfo]:
    return heartbeats.consumers()


def aggregates() -> dict:
    """Jobs by status, recipients by outcome and batches in flight, cached for a couple of seconds
    (and at once recomputed when an event is created)."""
    return remember(f"ops-aggregates:{version(EVENTS)}", _aggregates, timeout=AGGREGATES_SECONDS)


def _aggregates() -> dict:
    jobs = dict.fromkeys(map(str, JobStatus), 0)
    jobs.update(db.session.execute(select(NotificationJob.status, func.count()).group_by(NotificationJob.status)).all())
    sent, failed, canceled = db.session.execute(
        _sums(NotificationBatch.sent, NotificationBatch.failed, NotificationBatch.canceled)).one()
    # Jobs whose rows were purged keep their summary on the job.
    p_sent, p_failed, p_canceled = db.session.execute(
        _sums(NotificationJob.final_sent, NotificationJob.final_failed, NotificationJob.final_canceled)
        .where(NotificationJob.purged_at.is_not(None))).one()
    live_total = db.session.scalar(_sums(NotificationJob.total).where(NotificationJob.purged_at.is_(None)))
    in_flight = db.session.scalar(select(func.count()).select_from(NotificationBatch)
                                  .where(NotificationBatch.status == BatchStatus.SENDING))
    retrying = db.session.scalar(select(func.count()).select_from(NotificationBatch).where(
        NotificationBatch.status == BatchStatus.QUEUED, NotificationBatch.not_before > utcnow()))
    db.session.commit()
    return {
        "jobs": jobs,
        "notifications": {"sent": int(sent + p_sent), "failed": int(failed + p_failed),
                          "canceled": int(canceled + p_canceled),
                          "pending": max(int(live_total - sent - failed - canceled), 0)},
        "in_flight": int(in_flight),
        "retrying": int(retrying),
    }


def _sums(*columns):
    return select(*(func.coalesce(func.sum(column), 0) for column in columns))


def sent_recently(now: float | None = None) -> dict[str, int]:
    """Messages sent in the last 1, 5 and 15 minutes (to the nearest ten seconds)."""
    store = store_module.current()
    buckets = store_module.last_buckets(max(WINDOWS) * 60, now)
    values = store.series("sent", buckets)
    per_step = 60 // store_module.SERIES_STEP
    return {f"{m}m": int(sum(values[-m * per_step:])) for m in WINDOWS}


@dataclass(frozen=True)
class Throughput:
    """Messages per series step over the last CHART_MINUTES, oldest first."""

    starts: list[int]
    sent: list[int]
    failed: list[int]
    step: int

    @property
    def peak(self) -> int:
        return max([s + f for s, f in zip(self.sent, self.failed)] or [0])


def throughput(now: float | None = None) -> Throughput:
    store = store_module.current()
    buckets = store_module.last_buckets(CHART_MINUTES * 60, now)
    return Throughput(buckets, [int(v) for v in store.series("sent", buckets)],
                      [int(v) for v in store.series("failed", buckets)], store_module.SERIES_STEP)


def running_jobs(limit: int = 10) -> list:
    """Jobs not yet ended, newest first, each with its progress."""
    jobs = db.session.scalars(select(NotificationJob).options(joinedload(NotificationJob.event)).where(
        NotificationJob.status.in_(JOB_OPEN)).order_by(NotificationJob.id.desc())
        .limit(limit)).all()
    return [(job, progress(job)) for job in jobs]


@dataclass(frozen=True)
class Failure:
    job_id: int
    event_title: str
    email: str
    reply: str
    attempts: int
    final: bool  # failed for good, or waiting for a retry


def recent_failures(limit: int = 10) -> list[Failure]:
    """The latest recipients the SMTP server refused, with its reply: failed ones and those waiting
    for a retry. Found through the batches that have any (an index walk, not a table scan)."""
    batches = select(NotificationBatch.id).where(or_(
        NotificationBatch.failed > 0,
        (NotificationBatch.status == BatchStatus.QUEUED) & NotificationBatch.not_before.is_not(None),
    )).order_by(NotificationBatch.id.desc()).limit(limit)
    rows = db.session.execute(
        select(Notification.job_id, Event.title, Notification.email, Notification.last_error, Notification.attempts,
               Notification.status)
        .join(NotificationJob, NotificationJob.id == Notification.job_id)
        .join(Event, Event.id == NotificationJob.event_id)
        .where(Notification.batch_id.in_(batches), Notification.status.in_((RecipientStatus.FAILED, RecipientStatus.PENDING)),
               Notification.last_error.is_not(None))
        .order_by(Notification.id.desc()).limit(limit)).all()
    return [Failure(job_id, title, email, reply, attempts, status == RecipientStatus.FAILED)
            for job_id, title, email, reply, attempts, status in rows]


def queue_health(now: float | None = None) -> dict:
    """``/health/queue``: the whole picture in one JSON object."""
    now = time.time() if now is None else now
    found = consumers()
    totals = aggregates()
    return {
        "tasks": queue_depth(),
        "batches_in_flight": totals["in_flight"],
        "batches_waiting_to_retry": totals["retrying"],
        "jobs": totals["jobs"],
        "jobs_running": totals["jobs"][JobStatus.RUNNING],
        "consumers": {
            "alive": sum(c.alive_at(now) for c in found),
            "gone": sum(not c.alive_at(now) for c in found),
            "list": [c.to_json(now) for c in found],
        },
        "sent_last": sent_recently(now),
    }


def cache_stats() -> dict:
    """``/health/cache``: which cache, and how often a cached read was found there."""
    counters = store_module.current().counters()
    hits, misses = int(counters.get("cache:hit", 0)), int(counters.get("cache:miss", 0))
    backend = current_app.config.get("CACHE_TYPE", "")
    return {
        "backend": "redis" if "redis" in backend.lower() else backend.removesuffix("Cache").lower() or "none",
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }
