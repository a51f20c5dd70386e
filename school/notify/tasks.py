"""The Huey tasks and the consumer's notify wiring. Tasks take ids, run inside the app, and leave the
rules to the domain modules, handing them the enqueue functions defined here."""
import logging
import threading
import time

from huey import crontab
from huey.signals import SIGNAL_INTERRUPTED

from ..extensions import db
from ..queue import app_context, get_app, huey
from ..events import followups
from . import delivery, fanout as fanout_module, recovery, retention, schedule, worker
from .models import JobStatus, NotificationBatch, NotificationJob
from .outbox import requeue

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 10.0


def enqueue_fanout(job_id: int, priority: int) -> None:
    huey.enqueue(fanout.s(job_id, priority=priority))


def enqueue_batch(batch_id: int, priority: int, delay: float = 0) -> None:
    huey.enqueue(send_batch.s(batch_id, priority=priority, delay=delay or None))


def sweep_now() -> recovery.SweepReport:
    return recovery.sweep(huey, enqueue_fanout, enqueue_batch)


@huey.task(retries=3, retry_delay=5)
def fanout(job_id: int) -> int:
    with app_context():
        return fanout_module.run_fanout(job_id, enqueue_batch)


@huey.task()
def send_batch(batch_id: int) -> str:
    with app_context():
        outcome = delivery.send(batch_id, enqueue_batch)
        # A batch that gave way was never claimed: it goes back to the queue even while this consumer stops.
        if outcome == "yielded" or (outcome == "released" and not worker.stopping.is_set()):
            _offer_again(batch_id)
        return outcome


def _offer_again(batch_id: int) -> None:
    batch = db.session.get(NotificationBatch, batch_id)
    job = db.session.get(NotificationJob, batch.job_id)
    if job.status == JobStatus.RUNNING:
        requeue(batch_id, job.priority, enqueue_batch)


@huey.periodic_task(crontab(minute="*"))
def sweep() -> None:
    with app_context():
        sweep_now()
        release_due_now()


@huey.periodic_task(crontab(minute="17", hour="3"))
def purge_old_rows() -> None:
    with app_context():
        retention.purge()


# --- consumer lifecycle -----------------------------------------------------------------------

_sweeper_started = threading.Lock()


@huey.on_startup()
def start_sweeper() -> None:
    """Sweep once at consumer start, then every NOTIFY_SWEEP_INTERVAL seconds in the background.

    Every worker thread runs startup hooks; only the first one starts the sweeper.
    """
    if not _sweeper_started.acquire(blocking=False):
        return
    interval = get_app().config["NOTIFY_SWEEP_INTERVAL"]
    thread = threading.Thread(target=_sweep_forever, args=(interval,), name="school-sweeper", daemon=True)
    thread.start()


def release_due_now() -> int:
    """Scheduled work whose time has come: jobs past their ``send_at``, reminders that are due."""
    return schedule.release_due(enqueue_fanout) + followups.create_due_reminders(enqueue_fanout)


def _sweep_forever(interval: float) -> None:
    """The full sweep every ``interval`` seconds; between sweeps, every SCHEDULE_POLL_INTERVAL,
    the scheduled work that is due (two indexed queries when nothing is)."""
    poll = get_app().config["SCHEDULE_POLL_INTERVAL"]
    next_sweep = 0.0
    while not worker.stopping.is_set():
        if time.monotonic() >= next_sweep:
            try:
                with app_context():
                    sweep_now()
            except Exception:
                log.warning("sweep failed; trying again in %.0f s", interval, exc_info=True)
            next_sweep = time.monotonic() + interval
        try:
            with app_context():
                release_due_now()
        except Exception:
            log.warning("releasing scheduled work failed; trying again in %.1f s", poll, exc_info=True)
        worker.stopping.wait(poll)


@huey.signal(SIGNAL_INTERRUPTED)
def release_on_stop(signal, task, *args, **kwargs) -> None:
    """The consumer is stopping with tasks still running: have their batches hand back what they
    have not sent, so nothing is lost and nothing is sent twice."""
    worker.stopping.set()
    if not worker.wait_for_release(RELEASE_TIMEOUT):
        log.warning("some batches did not release within %.0f s; their leases will expire", RELEASE_TIMEOUT)
