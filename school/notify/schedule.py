"""When a job may start: at its ``send_at``, after quiet hours, after the change notice before it.

A job that must wait is written ``scheduled`` with the moment it may start (``send_at``) and, in
``waiting_for``, why when it is not simply a time staff chose. Nothing about it is in the queue:
``release_due``, which every consumer runs every ``SCHEDULE_POLL_INTERVAL`` seconds, dispatches
what is due. So a consumer restart or a Redis that lost everything delays no scheduled notice.

- Quiet hours (``QUIET_HOURS``, school time): a normal notice due inside them waits for their end;
  urgent notices never wait.
- Change notices (an event's updates and cancellation) go out in the order they were made: one
  waits while an earlier one for the same event is still sending.
"""
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import select, update

from ..extensions import db
from ..timeutil import aware
from .leases import db_now
from .models import CHANGE_WHO, JOB_ENDED, WAIT_PREVIOUS, WAIT_QUIET, JobStatus, NotificationJob
from .outbox import dispatch
from .progress import forget_progress

log = logging.getLogger(__name__)

QUIET, PREVIOUS = WAIT_QUIET, WAIT_PREVIOUS
# A send time this far in the past is taken as "now" (a form filled in slowly), not refused.
PAST_GRACE = timedelta(minutes=1)


class ScheduleError(ValueError):
    """A send time or a reschedule that cannot be; ``fields`` like an ``EventError``'s."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def quiet_end(now: datetime, config=None) -> datetime | None:
    """When the quiet hours ``now`` falls in end (UTC), or None when it falls in none."""
    config = config or current_app.config
    hours = config["QUIET_HOURS"]
    if not hours:
        return None
    start, end = hours
    zone = ZoneInfo(config["SCHOOL_TIMEZONE"])
    here = now.astimezone(zone)
    clock = here.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    day = here.date() if clock < end else here.date() + timedelta(days=1)
    # A wall-clock end the clocks skip (spring forward) comes out as the moment just after the gap.
    return datetime.combine(day, end, tzinfo=zone).astimezone(now.tzinfo)


def plan(job: NotificationJob, urgent: bool, send_at: datetime | None, now: datetime) -> None:
    """Set a new (unsaved) job's status for when it may start: ``send_at`` (None: now), or the end
    of the quiet hours it falls in. Dispatch with ``start`` once it is committed."""
    if send_at is not None and send_at > now:
        job.status, job.send_at, job.waiting_for = JobStatus.SCHEDULED, send_at, None
        return
    until = None if urgent else quiet_end(now)
    if until is not None:
        job.status, job.send_at, job.waiting_for, job.waiting_since = JobStatus.SCHEDULED, until, QUIET, now
    else:
        job.status, job.send_at = JobStatus.QUEUED, None


def start(job: NotificationJob, enqueue_fanout) -> bool:
    """Dispatch a committed job that may start now; a scheduled one is left to ``release_due``."""
    if job.status == JobStatus.SCHEDULED:
        return False
    return dispatch(job, enqueue_fanout)


def check_send_at(send_at: datetime | None, event_ends_at: datetime, now: datetime) -> datetime | None:
    """A requested send time, checked: None (now) for one a moment ago; ``ScheduleError`` for one
    well in the past or after the event."""
    if send_at is None:
        return None
    if send_at < now - PAST_GRACE:
        raise ScheduleError({"send_at": "This time has passed: choose a time from now on, or leave it empty "
                                        "to send now."})
    if send_at > aware(event_ends_at):
        raise ScheduleError({"send_at": "The event is over by then: choose a time before it ends."})
    return send_at if send_at > now else None


def reschedule(job_id: int, send_at: datetime | None) -> NotificationJob:
    """Move a scheduled job to ``send_at`` (None: now). ``LookupError`` for an unknown job,
    ``ScheduleError`` when it has started already or the time cannot be."""
    job = db.session.get(NotificationJob, job_id)
    if job is None:
        raise LookupError(job_id)
    if job.status != JobStatus.SCHEDULED:
        raise ScheduleError({"status": f"Only a scheduled notice can be rescheduled; this one is {job.status}."})
    if job.waiting_for == PREVIOUS:
        raise ScheduleError({"status": "This change notice waits for the one before it and goes right after."})
    now = db_now()
    when = check_send_at(send_at, job.event.ends_at, now)
    done = db.session.execute(update(NotificationJob).where(
        NotificationJob.id == job_id, NotificationJob.status == JobStatus.SCHEDULED)
        .values(send_at=when or now, waiting_for=None, waiting_since=None)).rowcount
    db.session.commit()
    if not done:
        db.session.refresh(job)
        raise ScheduleError({"status": f"It started meanwhile; it is {job.status}."})
    db.session.refresh(job)
    forget_progress(job_id)
    return job


def waiting_change_notice(job: NotificationJob) -> bool:
    """True while an earlier update or cancellation of the same event has not finished."""
    if job.follow_up_who != CHANGE_WHO or job.follow_up_of_id is None:
        return False
    return db.session.scalar(select(NotificationJob.id).where(
        NotificationJob.follow_up_of_id == job.follow_up_of_id, NotificationJob.follow_up_who == CHANGE_WHO,
        NotificationJob.id < job.id, NotificationJob.status.not_in(JOB_ENDED)).limit(1)) is not None


def release_due(enqueue_fanout) -> int:
    """Dispatch every scheduled job whose time has come; returns how many. Safe on any number of
    consumers at once: a job moves from scheduled to queued in one conditional update."""
    now = db_now()
    due = db.session.scalars(select(NotificationJob).where(
        NotificationJob.status == JobStatus.SCHEDULED, NotificationJob.send_at <= now)
        .order_by(NotificationJob.priority.desc(), NotificationJob.send_at, NotificationJob.id)).all()
    released = 0
    for job in due:
        if waiting_change_notice(job):
            if job.waiting_for != PREVIOUS:
                _wait(job.id, now, job.send_at, PREVIOUS)
            continue
        until = None if job.event.urgent else quiet_end(now)
        if until is not None:
            _wait(job.id, now, until, QUIET)
            continue
        moved = db.session.execute(update(NotificationJob).where(
            NotificationJob.id == job.id, NotificationJob.status == JobStatus.SCHEDULED,
            NotificationJob.send_at <= now).values(status=JobStatus.QUEUED, waiting_for=None, waiting_since=None)
            .execution_options(synchronize_session=False)  # SQLite's naive times cannot be compared in Python
        ).rowcount
        db.session.commit()
        if moved:
            db.session.refresh(job)
            log.info("job %s: its time has come (%s)", job.id, aware(job.send_at or now).isoformat())
            dispatch(job, enqueue_fanout)
            forget_progress(job.id)
            released += 1
    db.session.commit()
    return released


def _wait(job_id: int, now: datetime, until: datetime, why: str) -> None:
    db.session.execute(update(NotificationJob).where(
        NotificationJob.id == job_id, NotificationJob.status == JobStatus.SCHEDULED)
        .values(send_at=until, waiting_for=why, waiting_since=now))
    db.session.commit()
    forget_progress(job_id)
