"""Pause, resume, hold and cancel have no dead ends, and a worker that lost its lease cannot undo
what the batch's new owner did. The rules are plain functions: tested here without a consumer."""
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from school.events.models import Event
from school.extensions import db
from school.notify import controls, delivery, leases
from school.notify.fanout import run_fanout
from school.notify.models import Notification, NotificationBatch, NotificationJob
from school.notify.tasks import sweep_now

TEACHERS = {"roles": ["teachers"], "grades": [], "classes": []}


def ignore(*args, **kwargs):
    """An enqueue that hands nothing to a queue: these tests drive every step themselves."""


def fanned_out_job(app, batch_size: int = 5) -> int:
    app.config["NOTIFY_BATCH_SIZE"] = batch_size
    with app.app_context():
        event = Event(title="Staff meeting", starts_at=db.func.now(), ends_at=db.func.now(), audience=TEACHERS)
        job = NotificationJob(event=event, dispatched_at=db.func.now())
        db.session.add_all([event, job])
        db.session.commit()
        run_fanout(job.id, ignore)
        return job.id


def statuses(job_id: int) -> set[str]:
    return set(db.session.scalars(select(Notification.status).where(Notification.job_id == job_id)))


def test_a_job_resumed_after_all_its_batches_ended_is_done(app, seeded):
    job_id = fanned_out_job(app)
    with app.app_context():
        # The last batch finished while the job was paused (its worker checks for a pause once a
        # second): every batch is done, the job is still paused.
        db.session.execute(update(Notification).where(Notification.job_id == job_id).values(status="sent"))
        db.session.execute(update(NotificationBatch).where(NotificationBatch.job_id == job_id).values(status="done"))
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(status="paused"))
        db.session.commit()

        controls.apply(job_id, "resume", ignore)

        job = db.session.get(NotificationJob, job_id)
        assert (job.status, job.finished_at is not None) == ("done", True)


def test_a_held_job_can_be_resumed_paused_or_canceled(app, seeded):
    job_id = fanned_out_job(app)
    with app.app_context():
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(
            status="held", held_reason="550 5.4.5 Daily user sending quota exceeded",
            held_until=leases.db_now() + timedelta(hours=1)))
        db.session.commit()
        assert controls.apply(job_id, "pause", ignore) is None
        assert db.session.get(NotificationJob, job_id).status == "paused"
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(status="held"))
        db.session.commit()
        controls.apply(job_id, "resume", ignore)
        job = db.session.get(NotificationJob, job_id)
        assert (job.status, job.held_until) == ("running", None)
        controls.apply(job_id, "cancel", ignore)
        assert statuses(job_id) == {"canceled"}


def test_the_sweeper_resumes_a_held_job_when_its_hold_is_over(app, seeded):
    job_id = fanned_out_job(app)
    with app.app_context():
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(
            status="held", held_until=leases.db_now() + timedelta(hours=1)))
        db.session.commit()
        sweep_now()
        assert db.session.get(NotificationJob, job_id).status == "held", "resumed before its time"
        db.session.execute(update(NotificationJob).where(NotificationJob.id == job_id).values(
            held_until=leases.db_now() - timedelta(seconds=1)))
        db.session.commit()
        assert sweep_now().resumed == 1
        assert db.session.get(NotificationJob, job_id).status == "running"


def test_a_canceled_job_keeps_no_pending_recipient_when_its_consumer_died(app, seeded):
    job_id = fanned_out_job(app)
    with app.app_context():
        batch_id = db.session.scalar(select(NotificationBatch.id).where(NotificationBatch.job_id == job_id)
                                     .order_by(NotificationBatch.id))
        assert delivery.claim(batch_id) is not None  # a consumer takes the batch ... and dies
        controls.apply(job_id, "cancel", ignore)
        assert "pending" in statuses(job_id), "the held batch's rows wait for their dead worker"
        db.session.execute(update(NotificationBatch).where(NotificationBatch.id == batch_id).values(
            lease_until=leases.db_now() - timedelta(seconds=1)))
        db.session.commit()

        sweep_now()

        assert statuses(job_id) == {"canceled"}
        assert set(db.session.scalars(select(NotificationBatch.status)
                                      .where(NotificationBatch.job_id == job_id))) == {"done"}


def test_a_worker_whose_lease_ran_out_cannot_undo_the_new_owners_work(app, seeded):
    job_id = fanned_out_job(app)
    with app.app_context():
        batch_id = db.session.scalar(select(NotificationBatch.id).where(NotificationBatch.job_id == job_id)
                                     .order_by(NotificationBatch.id))
        stalled = delivery.claim(batch_id).lease_owner
        db.session.execute(update(NotificationBatch).where(NotificationBatch.id == batch_id).values(
            lease_until=leases.db_now() - timedelta(seconds=1)))
        db.session.commit()
        now_held_by = delivery.claim(batch_id).lease_owner  # the lease ran out: another worker has it
        assert now_held_by != stalled

        for write in (lambda: delivery.release(batch_id, stalled),
                      lambda: delivery.cancel_batch(batch_id, stalled),
                      lambda: delivery.give_up(batch_id, job_id, stalled, "gave up")):
            with pytest.raises(leases.LeaseLost):
                write()
        batch = db.session.get(NotificationBatch, batch_id)
        assert (batch.status, batch.lease_owner) == ("sending", now_held_by)
        assert statuses(job_id) == {"pending"}


def test_the_databases_clock_reads_as_utc(app):
    with app.app_context():
        from school.timeutil import utcnow

        assert abs((leases.db_now() - utcnow()).total_seconds()) < 5
