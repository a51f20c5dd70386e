"""Turning a job's audience into notification rows and batches.

Recipients are streamed in address order and written a few batches per transaction, each batch
committed and then handed to the queue, so memory stays flat and consumers start sending while
the fan-out is still writing. Rows are unique per job and address: a fan-out that runs again
after a crash skips what it already wrote and only makes batches for the rest.
"""
import logging
from collections.abc import Iterator
from itertools import islice

from flask import current_app
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..bounces.suppressions import suppressed_among
from ..extensions import db
from ..family.preferences import languages_among, opted_out_among
from ..i18n import resolve
from ..roster.audience import Audience, Recipient, count, recipients
from . import leases, ratelimit
from .completion import finish_if_complete
from .models import (CHANGE_WHO, JOB_OPEN, BatchStatus, JobStatus, Notification, NotificationBatch, NotificationJob,
                     RecipientAddress, RecipientStatus, search_text)

log = logging.getLogger(__name__)

# Rows written per transaction, as several batches: a handful of round trips for a thousand
# recipients instead of as many per batch. A fan-out shares its process with sending threads that
# hold the interpreter most of the time, so every round trip it saves is time it does not wait.
ROWS_PER_COMMIT = 1000


def claim_fanout(job_id: int) -> str | None:
    """Take the job's fan-out lease; its owner, or None when another worker holds it or nothing is left."""
    return leases.claim(
        NotificationJob, job_id,
        lambda now: NotificationJob.fanout_done.is_(False) & NotificationJob.status.in_(JOB_OPEN) & or_(
            NotificationJob.fanout_lease_until.is_(None), NotificationJob.fanout_lease_until < now),
        NotificationJob.fanout_owner, NotificationJob.fanout_lease_until,
        status=func.coalesce(func.nullif(NotificationJob.status, JobStatus.QUEUED), JobStatus.RUNNING),
        started_at=lambda now: func.coalesce(NotificationJob.started_at, now),
    )


def run_fanout(job_id: int, enqueue_batch) -> int:
    """Write the job's rows and batches; ``enqueue_batch(batch_id, priority)`` hands each to the queue.

    Returns how many recipients this run added.
    """
    owner = claim_fanout(job_id)
    if owner is None:
        log.info("job %s: fan-out already done or running elsewhere", job_id)
        return 0
    job = db.session.get(NotificationJob, job_id)
    if job.follow_up_of_id is not None:
        stream, skipped = _follow_up(job.follow_up_of_id, job.follow_up_who), lambda: 0
    else:
        audience = Audience.from_dict(job.event.audience)
        stream, skipped = recipients(audience), lambda: count(audience).skipped
    size = current_app.config["NOTIFY_BATCH_SIZE"]
    priority = job.priority
    skip_opted_out = job.event.priority != "urgent"  # urgent notices reach everyone
    next_seq = (db.session.scalar(select(func.max(NotificationBatch.seq)).where(NotificationBatch.job_id == job_id))
                or 0) + 1
    db.session.commit()  # end the read transaction before the long stream (SQLite holds a lock while open)
    try:
        added = _write(job_id, stream, skipped, size, priority, next_seq, enqueue_batch, skip_opted_out)
    except Exception:
        # Give the lease back at once, so the task's own retry can take over in seconds instead of
        # finding it held until it expires.
        db.session.rollback()
        db.session.execute(update(NotificationJob).where(
            NotificationJob.id == job_id, NotificationJob.fanout_owner == owner).values(fanout_lease_until=None))
        db.session.commit()
        raise
    finish_if_complete(job_id)
    return added


def _without(job_id: int, stream, among, status: RecipientStatus, counted: list[int]):
    """The stream less the addresses ``among(emails)`` names (opted out of normal notices, or
    suppressed because they bounced); ``counted[0]`` counts them.

    Each is written to the ledger as a row of that ``status`` outside any batch, in the transaction
    of the rows around it, so staff see who was left out and why. One indexed lookup per thousand
    recipients."""
    while chunk := list(islice(stream, ROWS_PER_COMMIT)):
        named = among([r.email for r in chunk])
        left_out = [r for r in chunk if r.email.lower() in named]
        if left_out:
            counted[0] += len(left_out)
            _insert_left_out(job_id, left_out, status)
        yield from (r for r in chunk if r.email.lower() not in named)


def _in_languages(stream, default: str):
    """The stream with each recipient's locale settled: the address's own choice on the family
    preferences page, else the roster's, matched to a language the school speaks, else ``default``.
    One indexed lookup per thousand recipients."""
    while chunk := list(islice(stream, ROWS_PER_COMMIT)):
        chosen = languages_among([r.email for r in chunk])
        for r in chunk:
            r.language = resolve(chosen.get(r.email.lower()) or r.language, default)
        yield from chunk


def _by_language(stream, size: int):
    """Batches of up to ``size`` recipients who all read the same language, so a batch renders its
    bodies once. Memory stays flat: one unfinished batch per language."""
    waiting: dict[str, list] = {}
    for r in stream:
        batch = waiting.setdefault(r.language, [])
        batch.append(r)
        if len(batch) >= size:
            yield waiting.pop(r.language)
    yield from waiting.values()


def _insert_left_out(job_id: int, people: list[Recipient], status: RecipientStatus) -> None:
    rows = [{"job_id": job_id, "batch_id": None, "email": r.email, "name": r.name, "roles": ",".join(r.roles),
             "children": ", ".join(r.children), "status": status} for r in people]
    db.session.execute(_insert_ignoring_duplicates(), rows)
    _note_addresses(rows)


def _note_addresses(rows: list[dict]) -> None:
    """Keep the ledger's search directory up to date: new addresses, and names that changed.
    An address already there with the same name costs an index lookup, not a write."""
    dialect_insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(RecipientAddress)
    stmt = stmt.on_conflict_do_update(index_elements=["email"],
                                      set_={"name": stmt.excluded.name, "search": stmt.excluded.search},
                                      where=RecipientAddress.name != stmt.excluded.name)
    db.session.execute(stmt, [{"email": row["email"], "name": row["name"],
                               "search": search_text(row["name"], row["email"])} for row in rows])


def _follow_up(job_id: int, who: str) -> Iterator[Recipient]:
    """A follow-up's recipients, from the rows of the job it follows up: all of them, those who have
    not acknowledged, those who answered yes, or (an update or cancellation) those it was sent to."""
    stmt = select(Notification.email, Notification.name, Notification.roles, Notification.children,
                  Notification.language).where(
        Notification.job_id == job_id, Notification.status.not_in((RecipientStatus.OPTED_OUT, RecipientStatus.SUPPRESSED))
    ).order_by(Notification.email)
    if who == "not_acknowledged":
        stmt = stmt.where(Notification.acknowledged_at.is_(None))
    elif who == "rsvp_yes":
        stmt = stmt.where(Notification.rsvp == "yes")
    elif who == CHANGE_WHO:
        # A row being sent when the event changed may have carried the old details: it hears too.
        stmt = stmt.where(Notification.status.in_((RecipientStatus.SENT, RecipientStatus.SENDING)))
    with db.engine.connect() as conn:
        conn = conn.execution_options(stream_results=True, yield_per=ROWS_PER_COMMIT, sqlite_readonly=True)
        for email, name, roles, children, language in conn.execute(stmt):
            yield Recipient(email, name, [r for r in roles.split(",") if r], [c for c in children.split(", ") if c],
                            language)


def _write(job_id: int, stream: Iterator[Recipient], skipped, size: int, priority: int, next_seq: int,
           enqueue_batch, skip_opted_out: bool = True) -> int:
    """``skipped()``: how many of the audience have no address, asked once the stream is written."""
    added = 0
    queue_up = True  # after one failure to queue a batch, the rest are left to the sweeper too
    opted_out, suppressed = [0], [0]
    # Nobody is at a suppressed address, for any notice, urgent ones included.
    stream = _without(job_id, stream, suppressed_among, RecipientStatus.SUPPRESSED, suppressed)
    if skip_opted_out:
        stream = _without(job_id, stream, opted_out_among, RecipientStatus.OPTED_OUT, opted_out)
    batches = _by_language(_in_languages(stream, current_app.config["SCHOOL_LANGUAGE"]), size)
    per_commit = max(1, ROWS_PER_COMMIT // size)
    while chunks := list(islice(batches, per_commit)):
        ratelimit.urgent_on_its_way(current_app.config, job_id, priority)  # keeps normal messages giving way
        if db.session.scalar(select(NotificationJob.status).where(NotificationJob.id == job_id)) == JobStatus.CANCELED:
            break  # nothing more to write for a canceled job
        enqueued_at = leases.db_now() if queue_up else None
        batch_ids = db.session.scalars(
            insert(NotificationBatch).returning(NotificationBatch.id, sort_by_parameter_order=True),
            [{"job_id": job_id, "seq": next_seq + index, "status": BatchStatus.QUEUED, "size": 0, "enqueued_at": enqueued_at}
             for index in range(len(chunks))],
        ).all()
        rows = [{"job_id": job_id, "batch_id": batch_id, "email": r.email, "name": r.name,
                 "roles": ",".join(r.roles), "children": ", ".join(r.children), "language": r.language,
                 "status": RecipientStatus.PENDING}
                for batch_id, chunk in zip(batch_ids, chunks) for r in chunk]
        written = _insert_new(rows, batch_ids)
        _note_addresses(rows)
        filled = [batch_id for batch_id in batch_ids if written.get(batch_id)]
        if filled:
            db.session.execute(update(NotificationBatch), [{"id": b, "size": written[b]} for b in filled])
            db.session.execute(
                update(NotificationJob).where(NotificationJob.id == job_id)
                .values(total=NotificationJob.total + sum(written.values()), fanout_lease_until=leases.expires_from())
            )
        if len(filled) < len(batch_ids):  # rows a run before this one already wrote
            db.session.execute(NotificationBatch.__table__.delete().where(
                NotificationBatch.id.in_(set(batch_ids) - set(filled))))
        db.session.commit()
        next_seq += len(batch_ids)
        added += sum(written.values())
        for batch_id in filled:
            if queue_up:
                queue_up = _hand_out(batch_id, priority, enqueue_batch)

    # Every run streams the whole audience, so this run's count is the job's (a rerun does not add).
    db.session.execute(
        update(NotificationJob).where(NotificationJob.id == job_id)
        .values(fanout_done=True, skipped=skipped(), opted_out=opted_out[0], suppressed=suppressed[0],
                fanout_lease_until=None)
    )
    db.session.commit()
    return added


def _hand_out(batch_id: int, priority: int, enqueue_batch) -> bool:
    """Queue a written batch; False if the queue cannot take it. The fan-out goes on all the same:
    the batch is saved, and marked not enqueued so the sweeper hands it out once the queue is back."""
    try:
        enqueue_batch(batch_id, priority)
    except Exception as exc:
        log.warning("batch %s: queue unreachable (%s); the sweeper will hand out this and later batches",
                    batch_id, exc)
        db.session.execute(update(NotificationBatch).where(NotificationBatch.id == batch_id).values(enqueued_at=None))
        db.session.commit()
        return False
    return True


def _insert_new(rows: list[dict], batch_ids: list[int]) -> dict[int, int]:
    """Insert rows, skipping (job, email) pairs already there; return how many each batch got."""
    db.session.execute(_insert_ignoring_duplicates(), rows)
    # The batches are new, so what they hold now is what this insert wrote.
    return dict(db.session.execute(
        select(Notification.batch_id, func.count()).where(Notification.batch_id.in_(batch_ids))
        .group_by(Notification.batch_id)).all())


def _insert_ignoring_duplicates():
    """An insert of notification rows that skips (job, email) pairs already written."""
    dialect_insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(Notification).on_conflict_do_nothing(index_elements=["job_id", "email"])
