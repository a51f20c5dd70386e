"""What a job's progress page, its API and the dashboard read: kept counters, never a count of rows."""
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import func, select

from ..extensions import cache, db
from ..timeutil import aware, utcnow
from . import ratelimit
from .models import JOB_ENDED, WAIT_PREVIOUS, JobStatus, Notification, NotificationBatch, NotificationJob, RecipientStatus

FAILED_SHOWN = 50

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
    # Why the job is not sending now, in the server's words: held (the mail server refuses us,
    # until ``resumes_at``) or waiting out an outage of ``waiting_for`` ("mail server", "Redis").
    reason: str | None = None
    resumes_at: datetime | None = None
    waiting_for: str | None = None
    waiting_since: datetime | None = None
    pace: float | None = None  # messages a second the shared rate limit allows now; None: unlimited
    # The families' side: addresses left out (opted out of normal notices), who read it, who answered.
    opted_out: int = 0
    acknowledged: int = 0
    rsvp: dict[str, int] | None = None
    # Addresses left out because they bounced before (every notice), and sent ones that bounced since.
    suppressed: int = 0
    bounced: int = 0
    # A scheduled job: when it may start, and why it waits when not for a time staff chose
    # (``waiting_for``: "quiet hours", "earlier change").
    send_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status in JOB_ENDED

    @property
    def percent(self) -> int:
        if not self.total:
            return 100 if self.ended else 0
        return int(100 * (self.sent + self.failed + self.canceled) / self.total)

    @property
    def situation(self) -> str | None:
        """What staff read beside the status when the job is not simply sending."""
        if self.status == JobStatus.HELD:
            return "held: the mail server refuses us"
        if self.status == JobStatus.SCHEDULED:
            if self.waiting_for == WAIT_PREVIOUS:
                return "waits for the earlier change notice to finish"
            if self.waiting_for:
                return f"waits for the end of the {self.waiting_for}"
            return None  # the status says it all; the page and the API give the time
        if self.waiting_for and not self.ended:
            return f"waiting for the {self.waiting_for}"
        return None

    @property
    def starts_in_s(self) -> float | None:
        """Seconds until a scheduled job may start (0 once due); None for any other job."""
        if self.status != JobStatus.SCHEDULED or self.send_at is None:
            return None
        return round(max((self.send_at - utcnow()).total_seconds(), 0.0), 1)

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("started_at", "finished_at", "resumes_at", "waiting_since", "send_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data.pop("fanout_done")
        data["situation"] = self.situation
        data["starts_in_s"] = self.starts_in_s
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
    running = job.status == JobStatus.RUNNING
    rate = _rate(job.id, sent, elapsed) if running else (round(sent / elapsed, 1) if elapsed else 0.0)
    eta = round(pending / rate, 1) if rate and pending and running else (
        0.0 if job.status == JobStatus.DONE else None)
    held = job.status == JobStatus.HELD
    return Progress(job.id, job.event_id, job.status, job.total, sent, failed, job.skipped, canceled, pending,
                    rate, eta, started, finished, round(elapsed, 1) if elapsed is not None else None,
                    job.fanout_done, reason=job.held_reason if held else None,
                    resumes_at=aware(job.held_until) if held else None,
                    waiting_for=job.waiting_for, waiting_since=aware(job.waiting_since),
                    pace=ratelimit.for_config(current_app.config).pace() if running else None,
                    opted_out=job.opted_out, acknowledged=job.acknowledged,
                    rsvp={"yes": job.rsvp_yes, "no": job.rsvp_no, "maybe": job.rsvp_maybe},
                    suppressed=job.suppressed, bounced=job.bounced,
                    send_at=aware(job.send_at) if job.status == JobStatus.SCHEDULED else None)


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


def failed_recipients(job_id: int, limit: int = FAILED_SHOWN) -> list[Notification]:
    """The first recipients the server refused for good, with its reply."""
    return db.session.scalars(
        select(Notification).where(Notification.job_id == job_id, Notification.status == RecipientStatus.FAILED)
        .order_by(Notification.id).limit(limit)).all()
