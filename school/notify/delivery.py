"""Sending one batch: claim it with a lease, send each pending recipient, record every outcome.

A recipient is marked ``sending`` before its MAIL FROM goes out and ``sent`` once its final reply
came, one commit each. Over a server that offers PIPELINING a message's content travels with the
next message's MAIL, RCPT and DATA (one round trip a message), so two rows of a worker may be
``sending`` at once, but only one of them has had its content reach the server: a consumer that
dies mid-batch leaves at most that one message per worker thread in doubt. Whoever recovers the
batch sends it (and the other) again with the same Message-ID.

What a reply means decides what happens (see ``transport``): a recipient's own refusal is
recorded on that recipient and the batch goes on; a temporary one is tried again later, up to
NOTIFY_RETRIES times for that recipient; a quota or policy refusal holds the whole job (nobody
fails); a request to slow down slows the shared rate and tries that recipient again at the end of
the pass; and an outage (no mail server, no Redis, no database) spends nobody's retries: the batch
waits it out with a capped backoff for up to NOTIFY_GIVE_UP_AFTER.
"""
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import Integer, bindparam, case, func, literal, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from ..counters import record
from ..extensions import db
from ..queue import URGENT
from ..timeutil import aware, utcnow
from . import leases, ratelimit, worker
from .completion import finish_if_complete
from .leases import LeaseLost, db_now
from .letter import Letter
from .models import BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob, RecipientStatus
from .transport import DEFERRED, HELD, OUTAGE, REFUSED, THROTTLED, SendError, SmtpSession, Stopped

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between lease renewals, counter updates and pause checks
HALTED = (JobStatus.PAUSED, JobStatus.CANCELED, JobStatus.HELD)
UNSETTLED = (RecipientStatus.PENDING, RecipientStatus.SENDING)  # "sending" rows are in doubt
THROTTLES_IN_A_ROW = 20  # requests to slow down without a message getting through, before the job is held
HOLD_MAX = 900.0  # seconds: the longest a held job waits before it tries again by itself
LONGEST_EXCHANGE = 600.0  # RFC 5321 lets a server take 10 minutes over its final reply
DATABASE_DOWN = (OperationalError, InterfaceError)
GIVE_WAY_FOR = 0.5  # seconds a normal batch waits for urgent demand to end before it goes back to the queue


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
        # A bounced row was sent (its server took it); the job counts the bounce on its own.
        sent=counts.get(RecipientStatus.SENT, 0) + counts.get(RecipientStatus.BOUNCED, 0),
        failed=counts.get(RecipientStatus.FAILED, 0),
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
        deferrals=case((is_done, rows.c.deferrals + bindparam("deferred", type_=Integer)), else_=rows.c.deferrals),
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
               sent_at=None, reply: str | None = None, deferred: bool = False) -> None:
        """Record one recipient's outcome and mark ``following`` "sending", in one commit.
        ``deferred``: the server refused this recipient for now (one of its NOTIFY_RETRIES)."""
        self._write(recipient_id, following, status, sent_at, reply, int(deferred))
        record.message_outcome(status)

    def _write(self, done_id, next_id, status=None, sent_at=None, last_error=None, deferred=0) -> None:
        result = self.connection.execute(_RECORD, {
            "done": done_id, "next": next_id, "status": status, "sent_at": sent_at, "last_error": last_error,
            "deferred": deferred, "batch": self.batch_id, "owner": self.owner})
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

    Returns what became of the batch: done, retry, waiting (an outage), held, released, paused,
    canceled, skipped, yielded (a normal batch left unclaimed for urgent work), or lost (its lease
    ran out mid-batch and the sweeper gave it to another worker).
    """
    if gives_way(batch_id):
        return "yielded"
    batch = claim(batch_id)
    if batch is None:
        return "skipped"
    db.session.expunge(batch)  # its attempts and job stay readable after a rollback
    owner = batch.lease_owner
    worker.started(batch_id)
    try:
        return BatchRun(batch, reschedule).run()
    except LeaseLost:
        # Someone else has the batch now and sends what is left: leave it all to them.
        _rollback()
        log.warning("batch %s: lease ran out mid-batch; stopped and left the batch to its new owner", batch_id)
        return "lost"
    except DATABASE_DOWN as exc:
        # Nothing can be recorded: hand the batch back if the database lets us, else its lease runs
        # out and the sweeper does. Either way nobody's retries are spent.
        _rollback()
        log.warning("batch %s: the database is unreachable (%s); the batch waits for it", batch_id, exc)
        try:
            release(batch_id, owner)
        except Exception as again:
            _rollback()
            log.warning("batch %s: could not hand it back either (%s); its lease will run out", batch_id, again)
        return "waiting"
    except Exception as exc:
        # Whatever else went wrong, give the batch back so the sweeper can offer it again; a batch
        # that keeps failing this way is given up like one the SMTP server keeps refusing.
        _rollback()
        attempt = batch.attempts + 1
        if attempt > current_app.config["NOTIFY_RETRIES"]:
            give_up(batch_id, batch.job_id, owner, f"not sent: internal error ({type(exc).__name__})", attempts=attempt)
        else:
            release(batch_id, owner, attempts=attempt)
        raise
    finally:
        worker.finished(batch_id)


def gives_way(batch_id: int) -> bool:
    """A normal batch leaves its worker to urgent work: while urgent demand holds (see
    ``ratelimit``) for longer than GIVE_WAY_FOR, it is not claimed and goes back to the queue,
    behind the urgent batches; the worker takes whatever the queue ranks first."""
    limit = ratelimit.for_config(current_app.config)
    if limit.unlimited:
        return False
    priority = db.session.scalar(select(NotificationJob.priority).join(NotificationBatch).where(
        NotificationBatch.id == batch_id))
    db.session.commit()
    if priority is None or priority >= URGENT:
        return False
    return limit.give_way(GIVE_WAY_FOR, should_stop=worker.stopping.is_set)


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone; the pool replaces it
        log.debug("rollback failed", exc_info=True)


class BatchRun:
    """One pass over a claimed batch: every recipient still to send, in order, then settle."""

    def __init__(self, batch: NotificationBatch, reschedule):
        self.config = current_app.config
        self.batch_id, self.job_id, self.owner = batch.id, batch.job_id, batch.lease_owner
        # Attempts count passes in which the server refused someone for now (or the worker
        # crashed), not claims: a batch handed back by a pause, a hold, an outage or a stopping
        # consumer was not refused, and keeps its retries.
        self.attempts = batch.attempts
        self.outage_since = batch.outage_since
        self.reschedule = reschedule
        self.last_error: SendError | None = None
        self.halt: str | None = None  # "paused", "canceled" or "held", once the job is seen so
        self.next_check = time.monotonic() + CHECK_EVERY
        self.renewed = time.monotonic()  # when the lease was last extended, by a check-in or the keeper
        self.deferred = False  # someone was refused for now in this pass
        self.sent_since_check = 0
        self.throttles_in_a_row = 0
        self.exchange_started: float | None = None  # while an SMTP exchange is under way

    def run(self) -> str:
        job = db.session.get(NotificationJob, self.job_id)
        self.priority = job.priority
        if job.status in HALTED:
            return self.stop(job.status)
        event = job.event
        original = event.original  # a follow-up's calendar part is the event it is about
        db.session.expunge(event)
        if original is not None:
            db.session.expunge(original)
        todo = deque(self.recipients())
        db.session.commit()
        letter = Letter(event, self.job_id)
        self.limit = ratelimit.for_config(self.config)
        # An urgent job's messages renew its demand: normal ones give way meanwhile (see ratelimit).
        self.urgent = ratelimit.job_demand(self.job_id) if self.priority >= URGENT else None
        try:
            with ledger_for(self.batch_id, self.owner) as ledger, self.keeping_lease(), self.smtp_session() as smtp:
                # Messages whose replies are still to come (pipelining across messages: a message's
                # final reply arrives with the next message's envelope replies): id -> (recipient, permit).
                self.in_flight, self.landed = {}, []
                while todo:
                    recipient = todo.popleft()
                    if self.check_in():
                        self.landed += self.exchange(smtp.flush)
                        return self.after(ledger, todo) or self.stop(self.halt)
                    following = todo[0].id if todo else None
                    message = self.compose(letter, ledger, recipient, following)
                    if message is None:
                        continue
                    ledger.start(recipient.id)
                    # Wait for the rate limit last, so nothing but the SMTP exchange lies between the
                    # slot the limit gave and the message reaching the server. A message whose
                    # content waits is sent while the limit makes this one wait.
                    permit = None if worker.stopping.is_set() else self.limit.acquire(
                        should_stop=lambda: self.waiting(smtp) or worker.stopping.is_set() or self.check_in(),
                        urgent=self.urgent)
                    if permit is None:
                        self.landed += self.exchange(smtp.flush)
                        ended = self.after(ledger, todo)
                        return ended or (self.stop(self.halt) if self.halt else release(self.batch_id, self.owner))
                    self.in_flight[recipient.id] = (recipient, permit)
                    self.landed += self.exchange(smtp.submit, message, recipient)
                    if ended := self.after(ledger, todo):
                        return ended
                self.landed += self.exchange(smtp.flush)
                if ended := self.after(ledger, todo):
                    return ended
        except SendError as exc:  # could not even connect, or the server refused us at once
            self.last_error = exc
            if exc.kind == HELD:
                return self.hold(exc.reply)
            return self.wait_out("mail server", exc.reply)
        except Stopped:  # the consumer stops while every connection of the cap is in use
            return release(self.batch_id, self.owner)
        except RedisError as exc:  # the shared rate limit (or the connection cap) is unreachable
            return self.wait_out("Redis", f"Redis unreachable ({type(exc).__name__}: {exc})")
        finally:
            if self.urgent:
                self.limit.urgent_ending(self.urgent)
        return self.settle()

    @contextmanager
    def smtp_session(self):
        """A connection from the pool. Waiting for one (every connection of MAIL_MAX_CONNECTIONS in
        use) or opening it counts as an exchange, so the lease is kept meanwhile."""
        self.exchange_started = time.monotonic()
        try:
            session = SmtpSession(should_stop=worker.stopping.is_set).__enter__()
        finally:
            self.exchange_started = None
        try:
            yield session
        finally:
            session.__exit__(None, None, None)

    def recipients(self) -> list:
        """Who is left to send, in order. Rows left "sending" by a worker that died are in doubt:
        they are sent again, with the same Message-ID."""
        return db.session.execute(
            select(Notification.id, Notification.email, Notification.name, Notification.children,
                   Notification.deferrals, Notification.language)
            .where(Notification.batch_id == self.batch_id, Notification.status.in_(UNSETTLED))
            .order_by(Notification.id)
        ).all()

    def compose(self, letter: Letter, ledger: "Ledger", recipient, following: int | None):
        """The recipient's message, or None when it cannot be built: then that recipient fails alone."""
        try:
            return letter.render(recipient)
        except Exception as exc:
            log.exception("batch %s: the message to recipient %s could not be composed", self.batch_id, recipient.id)
            ledger.record(recipient.id, RecipientStatus.FAILED, following,
                          reply=f"not sent: the message could not be composed ({type(exc).__name__})")
            return None

    def exchange(self, call, *args) -> list:
        """One write and its replies (see ``SmtpSession.submit``), the lease kept meanwhile. The send
        histogram gets one observation per message whose final reply this exchange brought, each
        its share of the exchange's time, so it counts messages, not writes."""
        self.exchange_started = time.monotonic()
        started = time.perf_counter()
        try:
            landed = call(*args)
        finally:
            self.exchange_started = None
        for _ in landed:
            record.observe("send", (time.perf_counter() - started) / len(landed))
        return landed

    def waiting(self, smtp: SmtpSession) -> bool:
        """While the rate limit makes a message wait, the one before it is finished."""
        if smtp.pending is not None:
            self.landed += self.exchange(smtp.flush)
        return False

    def after(self, ledger: "Ledger", todo: deque) -> str | None:
        """Record every message whose reply came; what became of the batch if it must stop here."""
        landed, self.landed = self.landed, []
        stop = None
        for recipient, error in landed:
            _recipient, permit = self.in_flight.pop(recipient.id)
            permit.done()  # the limit counted the message as in flight until its reply
            kind = self.outcome(ledger, recipient, error)
            if kind == THROTTLED:
                todo.append(recipient)  # again at the end of this pass, at the slower pace
                if self.throttles_in_a_row >= THROTTLES_IN_A_ROW and stop is None:
                    stop = f"the mail server keeps asking us to slow down ({self.last_error})"
            elif kind in (HELD, OUTAGE) and stop is None:
                stop = kind
        if stop is None:
            return None
        for _recipient, permit in self.in_flight.values():  # its content was never sent
            permit.done()
        if stop == OUTAGE:
            return self.wait_out("mail server", self.last_error.reply)
        return self.hold(self.last_error.reply if stop == HELD else stop)

    def outcome(self, ledger: "Ledger", recipient, error: SendError | None) -> str:
        """Record one message's outcome; returns "sent" or the kind of the refusal."""
        if error is not None:
            self.last_error = error
            if error.kind == REFUSED:
                ledger.record(recipient.id, RecipientStatus.FAILED, reply=error.reply)
            elif error.kind == DEFERRED:
                self.deferred = True
                spent = recipient.deferrals + 1 > self.config["NOTIFY_RETRIES"]
                ledger.record(recipient.id, RecipientStatus.FAILED if spent else RecipientStatus.PENDING,
                              reply=error.reply, deferred=True)
            elif error.kind == THROTTLED:
                self.limit.throttled()  # every consumer slows down, then recovers while replies are good
                self.throttles_in_a_row += 1
                ledger.record(recipient.id, RecipientStatus.PENDING, reply=error.reply)
            else:  # HELD or OUTAGE: the whole batch stops here, this recipient still to send
                ledger.record(recipient.id, RecipientStatus.PENDING, reply=error.reply)
            return error.kind
        self.limit.accepted()
        ledger.record(recipient.id, RecipientStatus.SENT, sent_at=utcnow())
        self.throttles_in_a_row = 0
        self.sent_since_check += 1
        return "sent"

    def check_in(self) -> bool:
        """Once a second: renew the lease, write the counters and look for a pause, hold or cancel
        (True then). Also run while the rate limit makes the worker wait: many threads sharing a
        slow limit can wait longer than the lease, and a lease left to run out there let the
        sweeper give the batch to a second worker while the first still sent it."""
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + CHECK_EVERY
        progressed, self.sent_since_check = self.sent_since_check, 0
        over = {"outage_since": None} if progressed and self.outage_since else {}
        recount(self.batch_id, self.owner, lease_until=leases.expires_from(), **over)
        self.renewed = time.monotonic()
        state, waiting = db.session.execute(select(NotificationJob.status, NotificationJob.waiting_for)
                                            .where(NotificationJob.id == self.job_id)).one()
        if progressed and waiting:  # messages go out again: the outage is over
            db.session.execute(update(NotificationJob).where(NotificationJob.id == self.job_id)
                               .values(waiting_for=None, waiting_since=None))
        if over:
            self.outage_since = None
        db.session.commit()  # never hold a transaction while the ledger writes on its own connection
        if state in HALTED:
            self.halt = state
        return self.halt is not None

    @contextmanager
    def keeping_lease(self):
        """While one SMTP exchange runs long (a slow server's final reply may take minutes), a helper
        thread renews the batch's lease, so the sweeper does not hand the batch to another worker
        who would send that message again."""
        engine, lease = db.engine, leases.duration()
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(engine, lease, stop), daemon=True,
                                  name=f"lease-{self.batch_id}")
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def _keep_lease(self, engine, lease: timedelta, stop: threading.Event) -> None:
        """Renew once a third of the lease has gone by since the last renewal while an exchange is
        under way, looking four times per lease: a renewal is never more than about half a lease
        late, however short the lease or however the exchange and the check-ins fell."""
        seconds = lease.total_seconds()
        while not stop.wait(min(CHECK_EVERY, seconds / 4)):
            started, now = self.exchange_started, time.monotonic()
            if started is None or now - started > LONGEST_EXCHANGE or now - self.renewed < seconds / 3:
                continue
            try:
                with engine.connect() as connection:
                    leases.renew(connection, NotificationBatch, self.batch_id, NotificationBatch.lease_owner,
                                 NotificationBatch.lease_until, self.owner, lease)
                self.renewed = now
            except Exception as exc:  # the next check-in renews it, or the lease runs out
                log.warning("batch %s: could not renew the lease during a long exchange (%s)", self.batch_id, exc)

    def hold(self, reply: str) -> str:
        """The mail server refuses us, not the recipients: hold the whole job (nobody fails) and
        let it try again by itself after a backoff that grows with each hold in a row."""
        now = db_now()
        holds = db.session.scalar(select(NotificationJob.holds).where(NotificationJob.id == self.job_id)) or 0
        delay = min(self.config["NOTIFY_RETRY_DELAY"] * 2 ** holds, HOLD_MAX)
        db.session.execute(update(NotificationJob).where(
            NotificationJob.id == self.job_id, NotificationJob.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .values(status=JobStatus.HELD, held_reason=reply, held_until=now + timedelta(seconds=delay),
                    holds=NotificationJob.holds + 1))
        db.session.commit()
        log.warning("job %s held for %.0f s: the mail server refuses us (%s)", self.job_id, delay, reply)
        release(self.batch_id, self.owner)
        return "held"

    def wait_out(self, what: str, reply: str) -> str:
        """An outage: nobody's retries are spent. The batch tries again after a backoff that grows
        with the outage (capped at NOTIFY_WAIT_MAX), and gives up NOTIFY_GIVE_UP_AFTER after it began."""
        now = db_now()
        since = aware(self.outage_since) or now
        waited = (now - since).total_seconds()
        if waited > self.config["NOTIFY_GIVE_UP_AFTER"]:
            give_up(self.batch_id, self.job_id, self.owner,
                    f"not sent: the {what} could not be reached for {_duration(waited)} ({reply})")
            return "done"
        delay = min(max(self.config["NOTIFY_RETRY_DELAY"], waited), self.config["NOTIFY_WAIT_MAX"])
        db.session.execute(update(Notification).where(
            Notification.batch_id == self.batch_id, Notification.status == RecipientStatus.SENDING)
            .values(status=RecipientStatus.PENDING))
        db.session.execute(update(Notification).where(
            Notification.batch_id == self.batch_id, Notification.status == RecipientStatus.PENDING)
            .values(last_error=reply))
        db.session.execute(update(NotificationJob).where(NotificationJob.id == self.job_id).values(
            waiting_for=what, waiting_since=func.coalesce(NotificationJob.waiting_since, now)))
        log.warning("batch %s: waiting %.0f s for the %s (%s)", self.batch_id, delay, what, reply)
        return self.retry_later(delay, now, outage_since=since)

    def settle(self) -> str:
        """After a pass: done if nothing is pending, else a retry with backoff for those the server
        refused for now (each has retries left, or it was failed when it ran out)."""
        pending = db.session.scalar(
            select(func.count()).select_from(Notification)
            .where(Notification.batch_id == self.batch_id, Notification.status == RecipientStatus.PENDING))
        # A whole pass got through: the next hold, if any, starts again from the shortest wait.
        db.session.execute(update(NotificationJob).where(NotificationJob.id == self.job_id, NotificationJob.holds > 0)
                           .values(holds=0))
        if not pending:
            give_up(self.batch_id, self.job_id, self.owner, str(self.last_error or "gave up"),
                    attempts=self.attempts + self.deferred)
            return "done"
        self.attempts += 1
        delay = self.config["NOTIFY_RETRY_DELAY"] * self.config["NOTIFY_RETRY_BACKOFF"] ** (self.attempts - 1)
        log.info("batch %s: %s pending after attempt %s (%s); retry in %.0f s",
                 self.batch_id, pending, self.attempts, self.last_error, delay)
        return self.retry_later(delay, db_now(), outage_since=None)

    def retry_later(self, delay: float, now, outage_since) -> str:
        recount(self.batch_id, self.owner, status=BatchStatus.QUEUED, attempts=self.attempts, lease_owner=None,
                lease_until=None, enqueued_at=now, not_before=now + timedelta(seconds=delay),
                outage_since=outage_since)
        db.session.commit()
        try:
            self.reschedule(self.batch_id, priority=self.priority, delay=delay)
        except Exception:  # the queue is down: the sweeper finds the batch from the database
            log.warning("batch %s: could not schedule the retry; the sweeper will", self.batch_id, exc_info=True)
            db.session.rollback()
            db.session.execute(update(NotificationBatch).where(NotificationBatch.id == self.batch_id)
                               .values(enqueued_at=None))
            db.session.commit()
        return "waiting" if outage_since else "retry"

    def stop(self, state: str) -> str:
        if state == JobStatus.CANCELED:
            cancel_batch(self.batch_id, self.owner)
            finish_if_complete(self.job_id)
            return "canceled"
        release(self.batch_id, self.owner)
        return "held" if state == JobStatus.HELD else "paused"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.0f} hours" if hours >= 2 else f"{seconds / 60:.0f} minutes"


def give_up(batch_id: int, job_id: int, owner: str, reason: str, **values) -> None:
    """The batch is over: what is still pending (or in doubt) fails, keeping the last reply seen."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status.in_(UNSETTLED))
        .values(status=RecipientStatus.FAILED,
                last_error=case((Notification.last_error.is_(None), reason), else_=Notification.last_error)))
    recount(batch_id, owner, status=BatchStatus.DONE, lease_owner=None, lease_until=None, outage_since=None,
            **values)
    db.session.commit()
    finish_if_complete(job_id)


def release(batch_id: int, owner: str, **values) -> str:
    """Hand the batch back unfinished: what was not confirmed sent is pending again. Only while
    ``owner`` holds it (``LeaseLost`` otherwise): a worker that stalled past its lease must not undo
    what the batch's new owner did."""
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status == RecipientStatus.SENDING)
        .values(status=RecipientStatus.PENDING))
    recount(batch_id, owner, status=BatchStatus.QUEUED, lease_owner=None, lease_until=None, enqueued_at=None,
            **values)
    db.session.commit()
    return "released"


def cancel_batch(batch_id: int, owner: str) -> None:
    db.session.execute(
        update(Notification).where(Notification.batch_id == batch_id, Notification.status.in_(UNSETTLED))
        .values(status=RecipientStatus.CANCELED))
    recount(batch_id, owner, status=BatchStatus.DONE, lease_owner=None, lease_until=None)
    db.session.commit()
