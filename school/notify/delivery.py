"""Sending one batch: claim it with a lease, send each pending recipient, record every outcome.

A recipient is marked ``sending`` before the SMTP exchange and ``sent`` right after it, one commit
per message, so a consumer that dies mid-batch leaves at most the one message it was sending in
doubt. Whoever recovers the batch sends that one again with the same Message-ID.
"""
import logging
import time
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from sqlalchemy import Integer, bindparam, case, func, literal, or_, select, update

from ..counters import record
from ..extensions import db
from ..timeutil import utcnow
from . import leases, ratelimit, worker
from .completion import finish_if_complete
from .leases import LeaseLost
from .letter import Letter
from .models import BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob, RecipientStatus
from .transport import CONNECTION, PERMANENT, SendError, SmtpSession

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between lease renewals, counter updates and pause checks
HALTED = (JobStatus.PAUSED, JobStatus.CANCELED)
UNSETTLED = (RecipientStatus.PENDING, RecipientStatus.SENDING)  # "sending" rows are in doubt


def claim(batch_id: int) -> NotificationBatch | None:
    """Lease the batch if it is waiting, or if the worker that held it stopped renewing."""
    owner = leases.claim(
        NotificationBatch, batch_id,
        lambda now: or_(NotificationBatch.status == BatchStatus.QUEUED,
                        (NotificationBatch.status == BatchStatus.SENDING) & (NotificationBatch.lease_until < now)),
        NotificationBatch.lease_owner, NotificationBatch.lease_until,
        status=BatchStatus.SENDING,
    )
    return None if owner is None else db.session.get(NotificationBatch, batch_id)


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
        sent=counts.get(RecipientStatus.SENT, 0), failed=counts.get(RecipientStatus.FAILED, 0),
        canceled=counts.get(RecipientStatus.CANCELED, 0), **values))
    if owner is not None and result.rowcount != 1:
        db.session.rollback()
        raise LeaseLost(batch_id)


def _record_statement():
    """One UPDATE that records the outcome of row ``done`` and marks row ``next`` "sending",
    provided the claim ``owner`` still holds batch ``batch``."""
    rows, batches = Notification.__table__, NotificationBatch.__table__
    done, following = bindparam("done", type_=Integer), bindparam("next", type_=Integer)
    is_done = rows.c.id == done
    held = select(batches.c.id).where(batches.c.id == bindparam("batch", type_=Integer),
                                      batches.c.lease_owner == bindparam("owner", type_=batches.c.lease_owner.type))
    return update(rows).where(rows.c.id.in_([done, following]), held.exists()).values(
        status=case((is_done, bindparam("status", type_=rows.c.status.type)),
                    else_=literal(RecipientStatus.SENDING.value)),
        attempts=case((rows.c.id == following, rows.c.attempts + 1), else_=rows.c.attempts),
        sent_at=case((is_done, func.coalesce(bindparam("sent_at", type_=rows.c.sent_at.type), rows.c.sent_at)),
                     else_=rows.c.sent_at),
        last_error=case((is_done, bindparam("last_error", type_=rows.c.last_error.type)),
                        else_=rows.c.last_error),
    )


_RECORD = _record_statement()


class Ledger:
    """Writes each recipient's outcome over one connection held for the whole batch.

    Through the session every message cost a pool checkout (with its ping), BEGIN, two UPDATEs
    and COMMIT: five round trips. Here it is one statement and its commit; on PostgreSQL that
    statement runs in autocommit mode, where it is its own transaction: one round trip.
    """

    def __init__(self, connection, batch_id: int, owner: str):
        self.connection = connection
        self.batch_id = batch_id
        self.owner = owner
        self.in_doubt: int | None = None  # the recipient marked "sending", whose outcome is not yet known

    def start(self, recipient_id: int) -> None:
        """Mark the recipient "sending" (unless the last write already did)."""
        if self.in_doubt != recipient_id:
            self._write(None, recipient_id)

    def record(self, recipient_id: int, status: RecipientStatus, following: int | None = None, *,
               sent_at=None, reply: str | None = None) -> None:
        """Record one recipient's outcome and mark ``following`` "sending", in one commit."""
        self._write(recipient_id, following, status, sent_at, reply)
        record.message_outcome(status)

    def _write(self, done_id, next_id, status=None, sent_at=None, last_error=None) -> None:
        result = self.connection.execute(_RECORD, {
            "done": done_id, "next": next_id, "status": status, "sent_at": sent_at, "last_error": last_error,
            "batch": self.batch_id, "owner": self.owner})
        self.connection.commit()
        if result.rowcount == 0:
            raise LeaseLost(self.batch_id)
        self.in_doubt = next_id


@contextmanager
def ledger_for(batch_id: int, owner: str):
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        yield Ledger(connection, batch_id, owner)


def send(batch_id: int, reschedule) -> str:
    """Send what is pending in the batch. ``reschedule(batch_id, priority=, delay=)`` queues a retry.

    Returns what became of the batch: done, retry, released, paused, canceled, skipped, or lost
    (its lease ran out mid-batch and the sweeper gave it to another worker).
    """
    batch = claim(batch_id)
    if batch is None:
        return "skipped"
    db.session.expunge(batch)  # its attempts and job stay readable after a rollback
    worker.started(batch_id)
    try:
        return BatchRun(batch, reschedule).run()
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
            give_up(batch_id, batch.job_id, attempt, f"not sent: internal error ({type(exc).__name__})")
        else:
            release(batch_id, attempts=attempt)
        raise
    finally:
        worker.finished(batch_id)


class BatchRun:
    """One pass over a claimed batch: every recipient still to send, in order, then settle."""

    def __init__(self, batch: NotificationBatch, reschedule):
        self.config = current_app.config
        self.batch_id, self.job_id, self.owner = batch.id, batch.job_id, batch.lease_owner
        # Attempts count passes that reached the end of the list (see settle), not claims: a batch
        # handed back by a pause or a stopping consumer was not refused, and keeps its retries.
        self.attempt = batch.attempts + 1
        self.reschedule = reschedule
        self.last_error: SendError | None = None
        self.halt: str | None = None  # "paused" or "canceled", once the job is seen so
        self.next_check = time.monotonic() + CHECK_EVERY

    def run(self) -> str:
        job = db.session.get(NotificationJob, self.job_id)
        self.priority = job.priority
        if job.status in HALTED:
            return self.stop(job.status)
        event = job.event
        db.session.expunge(event)
        todo = self.recipients()
        db.session.commit()
        letter = Letter(event, self.job_id)
        limit = ratelimit.for_config(self.config)
        try:
            with SmtpSession() as smtp, ledger_for(self.batch_id, self.owner) as ledger:
                for index, recipient in enumerate(todo):
                    if self.check_in():
                        return self.stop(self.halt)
                    message = letter.render(recipient)
                    ledger.start(recipient.id)
                    # Wait for the rate limit last, so nothing but the SMTP exchange lies between the
                    # slot the limit gave and the message reaching the server.
                    permit = None if worker.stopping.is_set() else limit.acquire(
                        should_stop=lambda: worker.stopping.is_set() or self.check_in())
                    if permit is None:
                        return self.stop(self.halt) if self.halt else release(self.batch_id)
                    following = todo[index + 1].id if index + 1 < len(todo) else None
                    if not self.deliver(smtp, ledger, permit, message, recipient.id, following):
                        break
        except SendError as exc:  # could not even connect
            self.connection_failed(exc)
        return self.settle()

    def recipients(self) -> list:
        """Who is left to send, in order. Rows left "sending" by a worker that died are in doubt:
        they are sent again, with the same Message-ID."""
        return db.session.execute(
            select(Notification.id, Notification.email, Notification.name, Notification.children)
            .where(Notification.batch_id == self.batch_id, Notification.status.in_(UNSETTLED))
            .order_by(Notification.id)
        ).all()

    def deliver(self, smtp: SmtpSession, ledger: Ledger, permit, message, recipient_id: int,
                following: int | None) -> bool:
        """Send one message and record its outcome; False when the connection is lost."""
        try:
            with permit:  # the limit counts the message as in flight until this ends
                record.timed_send(smtp.send, message)
        except SendError as exc:
            self.last_error = exc
            if exc.kind == PERMANENT:
                ledger.record(recipient_id, RecipientStatus.FAILED, following, reply=exc.reply)
                return True
            if exc.kind == CONNECTION:
                ledger.record(recipient_id, RecipientStatus.PENDING, None, reply=exc.reply)
                return False
            ledger.record(recipient_id, RecipientStatus.PENDING, following, reply=exc.reply)
            return True
        ledger.record(recipient_id, RecipientStatus.SENT, following, sent_at=utcnow())
        return True

    def check_in(self) -> bool:
        """Once a second: renew the lease, write the counters and look for a pause or cancel
        (True then). Also run while the rate limit makes the worker wait: many threads sharing a
        slow limit can wait longer than the lease, and a lease left to run out there let the
        sweeper give the batch to a second worker while the first still sent it."""
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + CHECK_EVERY
        recount(self.batch_id, self.owner, lease_until=leases.expires_from())
        state = db.session.scalar(select(NotificationJob.status).where(NotificationJob.id == self.job_id))
        db.session.commit()  # never hold a transaction while the ledger writes on its own connection
        if state in HALTED:
            self.halt = state
        return self.halt is not None

    def connection_failed(self, exc: SendError) -> None:
        """No connection at all: every recipient left is pending, with the reason."""
        self.last_error = exc
        db.session.execute(
            update(Notification).where(Notification.batch_id == self.batch_id,
                                       Notification.status == RecipientStatus.SENDING)
            .values(status=RecipientStatus.PENDING))
        db.session.execute(
            update(Notification).where(Notification.batch_id == self.batch_id,
                                       Notification.status == RecipientStatus.PENDING)
            .values(last_error=exc.reply))
        db.session.commit()

    def settle(self) -> str:
        """After a pass: done if nothing is pending, else a retry with backoff, else fail what is left."""
        config = self.config
        pending = db.session.scalar(
            select(func.count()).select_from(Notification)
            .where(Notification.batch_id == self.batch_id, Notification.status == RecipientStatus.PENDING))
        if not pending or self.attempt > config["NOTIFY_RETRIES"]:
            give_up(self.batch_id, self.job_id, self.attempt, str(self.last_error or "gave up"))
            return "done"
        delay = config["NOTIFY_RETRY_DELAY"] * config["NOTIFY_RETRY_BACKOFF"] ** (self.attempt - 1)
        recount(self.batch_id, status=BatchStatus.QUEUED, attempts=self.attempt, lease_owner=None,
                lease_until=None, enqueued_at=utcnow(), not_before=utcnow() + timedelta(seconds=delay))
        db.session.commit()
        log.info("batch %s: %s pending after attempt %s (%s); retry in %.0f s",
                 self.batch_id, pending, self.attempt, self.last_error, delay)
        try:
            self.reschedule(self.batch_id, priority=self.priority, delay=delay)
        except Exception:  # the queue is down: the sweeper finds the batch from the database
            log.warning("batch %s: could not schedule the retry; the sweeper will", self.batch_id, exc_info=True)
        return "retry"

    def stop(self, state: str) -> str:
        if state == JobStatus.CANCELED:
            cancel_batch(self.batch_id)
            finish_if_complete(self.job_id)
            return "canceled"
        release(self.batch_id)
        return "paused"


def give_up(batch_id: int, job_id: int, attempt: int, reason: str) -> None:
    """The batch is over: what is still pending (or in doubt) fails, keeping the last reply seen."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status.in_(UNSETTLED))
        .values(status=RecipientStatus.FAILED,
                last_error=case((Notification.last_error.is_(None), reason), else_=Notification.last_error)))
    recount(batch_id, status=BatchStatus.DONE, attempts=attempt, lease_owner=None, lease_until=None)
    db.session.commit()
    finish_if_complete(job_id)


def release(batch_id: int, **values) -> str:
    """Hand the batch back unfinished: what was not confirmed sent is pending again."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status == RecipientStatus.SENDING)
        .values(status=RecipientStatus.PENDING))
    recount(batch_id, status=BatchStatus.QUEUED, lease_owner=None, lease_until=None, enqueued_at=None, **values)
    db.session.commit()
    return "released"


def cancel_batch(batch_id: int) -> None:
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status.in_(UNSETTLED))
        .values(status=RecipientStatus.CANCELED))
    recount(batch_id, status=BatchStatus.DONE, lease_owner=None, lease_until=None)
    db.session.commit()
