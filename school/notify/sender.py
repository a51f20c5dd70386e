"""Sending one batch: claim it with a lease, send each pending recipient, record every outcome.

A recipient is marked ``sending`` before the SMTP exchange and ``sent`` right after it, one commit
per message, so a consumer that dies mid-batch leaves at most the one message it was sending in
doubt. Whoever recovers the batch sends that one again with the same Message-ID.
"""
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from sqlalchemy import Integer, bindparam, case, func, literal, or_, select, update

from ..events.models import Event
from ..extensions import db
from ..ops import metrics
from ..timeutil import utcnow
from . import mailer, ratelimit
from .fanout import finish_if_complete
from .models import Notification, NotificationBatch, NotificationJob

log = logging.getLogger(__name__)

OWNER = f"{socket.gethostname()}:{os.getpid()}"
CHECK_EVERY = 1.0  # seconds between lease renewals, counter updates and pause checks

# Set when the consumer is told to stop: batches in progress hand back what they have not sent.
stopping = threading.Event()
_active: set[int] = set()
_active_changed = threading.Condition()


class LeaseLost(RuntimeError):
    """The batch is no longer this worker's: its lease ran out and someone else may be sending it."""


def wait_for_release(timeout: float) -> bool:
    """Block until no batch of this process is being sent, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    with _active_changed:
        while _active:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _active_changed.wait(left)
    return True


def claim(batch_id: int) -> NotificationBatch | None:
    """Lease the batch if it is waiting, or if the worker that held it stopped renewing.

    Each claim has an owner of its own (not just this process's), which every later write of
    the worker checks: after its lease ran out it cannot write, and so stops.
    """
    now = utcnow()
    lease = timedelta(seconds=current_app.config["NOTIFY_LEASE_SECONDS"])
    result = db.session.execute(
        update(NotificationBatch)
        .where(
            NotificationBatch.id == batch_id,
            or_(NotificationBatch.status == "queued",
                (NotificationBatch.status == "sending") & (NotificationBatch.lease_until < now)),
        )
        .values(status="sending", lease_owner=f"{OWNER}:{uuid.uuid4().hex[:12]}", lease_until=now + lease)
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    return db.session.get(NotificationBatch, batch_id)


def recount(batch_id: int, owner: str | None = None, **values) -> None:
    """Set the batch's counters from its rows (and any other ``values``) in one statement.

    With ``owner``, only while that claim holds the batch; ``LeaseLost`` otherwise.
    """
    rows = select(Notification.status, func.count()).where(Notification.batch_id == batch_id).group_by(
        Notification.status)
    counts = dict(db.session.execute(rows).all())
    statement = update(NotificationBatch).where(NotificationBatch.id == batch_id)
    if owner is not None:
        statement = statement.where(NotificationBatch.lease_owner == owner)
    result = db.session.execute(statement.values(
        sent=counts.get("sent", 0), failed=counts.get("failed", 0), canceled=counts.get("canceled", 0), **values))
    if owner is not None and result.rowcount != 1:
        db.session.rollback()
        raise LeaseLost(batch_id)


def _mark_statement():
    """One UPDATE that records the outcome of row ``done`` and marks row ``next`` "sending",
    provided the claim ``owner`` still holds batch ``batch``."""
    rows, batches = Notification.__table__, NotificationBatch.__table__
    done, following = bindparam("done", type_=Integer), bindparam("next", type_=Integer)
    is_done = rows.c.id == done
    held = select(batches.c.id).where(batches.c.id == bindparam("batch", type_=Integer),
                                      batches.c.lease_owner == bindparam("owner", type_=batches.c.lease_owner.type))
    return update(rows).where(rows.c.id.in_([done, following]), held.exists()).values(
        status=case((is_done, bindparam("status", type_=rows.c.status.type)), else_=literal("sending")),
        attempts=case((rows.c.id == following, rows.c.attempts + 1), else_=rows.c.attempts),
        sent_at=case((is_done, func.coalesce(bindparam("sent_at", type_=rows.c.sent_at.type), rows.c.sent_at)),
                     else_=rows.c.sent_at),
        last_error=case((is_done, bindparam("last_error", type_=rows.c.last_error.type)),
                        else_=rows.c.last_error),
    )


_MARK = _mark_statement()


class _Marks:
    """Records outcomes over one connection held for the whole batch.

    Through the session every message cost a pool checkout (with its ping), BEGIN, two UPDATEs
    and COMMIT: five round trips. Here it is one statement and its commit; on PostgreSQL that
    statement runs in autocommit mode, where it is its own transaction: one round trip.
    """

    def __init__(self, connection, batch_id: int, owner: str):
        self.connection = connection
        self.batch_id = batch_id
        self.owner = owner

    def __call__(self, done_id: int | None, next_id: int | None, status: str | None = None,
                 sent_at=None, last_error: str | None = None) -> int | None:
        """Record one recipient's outcome and mark the next one "sending", in one commit.

        ``LeaseLost`` if the batch is no longer held by this claim.
        """
        result = self.connection.execute(_MARK, {
            "done": done_id, "next": next_id, "status": status, "sent_at": sent_at, "last_error": last_error,
            "batch": self.batch_id, "owner": self.owner})
        self.connection.commit()
        if result.rowcount == 0:
            raise LeaseLost(self.batch_id)
        if done_id is not None:
            metrics.message_outcome(status)
        return next_id


@contextmanager
def _marks(batch_id: int, owner: str):
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        yield _Marks(connection, batch_id, owner)


def _job_state(job_id: int) -> str:
    return db.session.scalar(select(NotificationJob.status).where(NotificationJob.id == job_id))


def send(batch_id: int, reschedule) -> str:
    """Send what is pending in the batch. ``reschedule(batch_id, delay, priority)`` queues a retry.

    Returns what became of the batch: done, retry, released, paused, canceled, skipped, or lost
    (its lease ran out mid-batch and the sweeper gave it to another worker).
    """
    batch = claim(batch_id)
    if batch is None:
        return "skipped"
    db.session.expunge(batch)  # its attempts and job stay readable after a rollback
    with _active_changed:
        _active.add(batch_id)
    try:
        return _send_claimed(batch, reschedule)
    except LeaseLost:
        # Someone else has the batch now and sends what is left: leave it all to them.
        db.session.rollback()
        log.warning("batch %s: lease ran out mid-batch; stopped and left the batch to its new owner", batch_id)
        return "lost"
    except Exception as exc:
        # Whatever went wrong, give the batch back so the sweeper can offer it again; a batch
        # that keeps failing this way is given up like one the SMTP server keeps refusing.
        db.session.rollback()
        attempt = batch.attempts + 1
        if attempt > current_app.config["NOTIFY_RETRIES"]:
            _fail_pending(batch_id, f"not sent: internal error ({type(exc).__name__})")
            recount(batch_id, status="done", attempts=attempt, lease_owner=None, lease_until=None)
            db.session.commit()
            finish_if_complete(batch.job_id)
        else:
            release(batch_id, attempts=attempt)
        raise
    finally:
        with _active_changed:
            _active.discard(batch_id)
            _active_changed.notify_all()


def _send_claimed(batch: NotificationBatch, reschedule) -> str:
    config = current_app.config
    # Attempts count passes that reached the end of the list (see _settle), not claims: a batch
    # handed back by a pause or a stopping consumer was not refused, and keeps its retries.
    batch_id, job_id, attempt, owner = batch.id, batch.job_id, batch.attempts + 1, batch.lease_owner
    job = db.session.get(NotificationJob, job_id)
    priority = job.priority
    if job.status in ("paused", "canceled"):
        return _stop_for(job.status, batch_id, job_id)
    event = db.session.get(Event, job.event_id)
    db.session.expunge(event)
    # Rows left "sending" by a worker that died are in doubt: send them again, same Message-ID.
    todo = db.session.execute(
        select(Notification.id, Notification.email, Notification.name, Notification.children)
        .where(Notification.batch_id == batch_id, Notification.status.in_(("pending", "sending")))
        .order_by(Notification.id)
    ).all()
    db.session.commit()
    limit = ratelimit.for_config(config)
    letter = mailer.Letter(event, job_id)
    lease = timedelta(seconds=config["NOTIFY_LEASE_SECONDS"])
    last_error = None
    next_check = time.monotonic() + CHECK_EVERY
    halt = None  # "paused" or "canceled", once the job is seen so

    def check_in() -> bool:
        """Once a second: renew the lease, write the counters and look for a pause or cancel
        (True then). Also run while the rate limit makes the worker wait: many threads sharing a
        slow limit can wait longer than the lease, and a lease left to run out there let the
        sweeper give the batch to a second worker while the first still sent it."""
        nonlocal next_check, halt
        if time.monotonic() < next_check:
            return False
        next_check = time.monotonic() + CHECK_EVERY
        recount(batch_id, owner, lease_until=utcnow() + lease)
        state = _job_state(job_id)
        db.session.commit()  # never hold a transaction while _mark writes on its own connection
        if state in ("paused", "canceled"):
            halt = state
        return halt is not None

    try:
        with mailer.Outbox() as outbox, _marks(batch_id, owner) as _mark:
            marked = None  # the recipient already marked "sending"
            for index, recipient in enumerate(todo):
                if check_in():
                    return _stop_for(halt, batch_id, job_id)
                message = letter.render(recipient)
                if marked != recipient.id:
                    _mark(None, recipient.id)
                # Wait for the rate limit last, so nothing but the SMTP exchange lies between the
                # slot the limit gave and the message reaching the server.
                permit = None if stopping.is_set() else limit.acquire(
                    should_stop=lambda: stopping.is_set() or check_in())
                if permit is None:
                    return _stop_for(halt, batch_id, job_id) if halt else release(batch_id)
                following = todo[index + 1].id if index + 1 < len(todo) else None
                try:
                    with permit:  # the limit counts the message as in flight until this ends
                        metrics.timed_send(outbox.send, message)
                except mailer.SendError as exc:
                    last_error = exc
                    if exc.kind == mailer.PERMANENT:
                        marked = _mark(recipient.id, following, status="failed", last_error=exc.reply)
                        continue
                    if exc.kind == mailer.CONNECTION:
                        _mark(recipient.id, None, status="pending", last_error=exc.reply)
                        break
                    marked = _mark(recipient.id, following, status="pending", last_error=exc.reply)
                    continue
                marked = _mark(recipient.id, following, status="sent", sent_at=utcnow(), last_error=None)
    except mailer.SendError as exc:  # could not even connect
        last_error = exc
        db.session.execute(
            update(Notification).where(Notification.batch_id == batch_id, Notification.status == "sending")
            .values(status="pending"))
        db.session.execute(
            update(Notification).where(Notification.batch_id == batch_id, Notification.status == "pending")
            .values(last_error=exc.reply))
        db.session.commit()
    return _settle(batch_id, job_id, attempt, priority, last_error, reschedule)


def _settle(batch_id, job_id, attempt, priority, last_error, reschedule) -> str:
    """After a pass: done if nothing is pending, else a retry with backoff, else fail what is left."""
    config = current_app.config
    pending = db.session.scalar(
        select(func.count()).select_from(Notification)
        .where(Notification.batch_id == batch_id, Notification.status == "pending"))
    if pending and attempt <= config["NOTIFY_RETRIES"]:
        delay = config["NOTIFY_RETRY_DELAY"] * config["NOTIFY_RETRY_BACKOFF"] ** (attempt - 1)
        recount(batch_id, status="queued", attempts=attempt, lease_owner=None, lease_until=None,
                enqueued_at=utcnow(), not_before=utcnow() + timedelta(seconds=delay))
        db.session.commit()
        log.info("batch %s: %s pending after attempt %s (%s); retry in %.0f s",
                 batch_id, pending, attempt, last_error, delay)
        try:
            reschedule(batch_id, priority=priority, delay=delay)
        except Exception:  # the queue is down: the sweeper finds the batch from the database
            log.warning("batch %s: could not schedule the retry; the sweeper will", batch_id, exc_info=True)
        return "retry"
    if pending:
        _fail_pending(batch_id, str(last_error or "gave up"))
    recount(batch_id, status="done", attempts=attempt, lease_owner=None, lease_until=None)
    db.session.commit()
    finish_if_complete(job_id)
    return "done"


def _fail_pending(batch_id: int, reason: str) -> None:
    """Give up on what is left: pending (and in-doubt) rows fail, keeping the last reply seen."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id,
                                   Notification.status.in_(("pending", "sending")))
        .values(status="failed",
                last_error=case((Notification.last_error.is_(None), reason), else_=Notification.last_error)))


def release(batch_id: int, **values) -> str:
    """Hand the batch back unfinished: what was not confirmed sent is pending again."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status == "sending")
        .values(status="pending"))
    recount(batch_id, status="queued", lease_owner=None, lease_until=None, enqueued_at=None, **values)
    db.session.commit()
    return "released"


def _stop_for(state: str, batch_id: int, job_id: int) -> str:
    if state == "canceled":
        cancel_batch(batch_id)
        finish_if_complete(job_id)
        return "canceled"
    release(batch_id)
    return "paused"


def cancel_batch(batch_id: int) -> None:
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id,
                                   Notification.status.in_(("pending", "sending")))
        .values(status="canceled"))
    recount(batch_id, status="done", lease_owner=None, lease_until=None)
    db.session.commit()
