"""The Huey tasks. They take ids, run inside the app, and leave the rules to plain functions."""
import logging
import threading

from huey import crontab
from huey.signals import SIGNAL_INTERRUPTED

from ..ops import heartbeats  # noqa: F401  (each consumer process publishes a heartbeat)
from ..queue import app_context, get_app, huey
from . import fanout as fanout_module
from . import sender, services

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 10.0


@huey.task(retries=3, retry_delay=5)
def fanout(job_id: int) -> int:
    with app_context():
        return fanout_module.run_fanout(job_id, sender.OWNER, services.enqueue_batch)


@huey.task()
def send_batch(batch_id: int) -> str:
    with app_context():
        outcome = sender.send(batch_id, services.enqueue_batch)
        if outcome == "released" and not sender.stopping.is_set():
            _offer_again(batch_id)
        return outcome


def _offer_again(batch_id: int) -> None:
    from ..extensions import db
    from .models import NotificationBatch, NotificationJob

    batch = db.session.get(NotificationBatch, batch_id)
    job = db.session.get(NotificationJob, batch.job_id)
    if job.status == "running":
        services.requeue(batch, job.priority)


@huey.periodic_task(crontab(minute="*"))
def sweep() -> None:
    with app_context():
        services.sweep(huey)


@huey.periodic_task(crontab(minute="17", hour="3"))
def purge_old_rows() -> None:
    from .retention import purge

    with app_context():
        purge()


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


def _sweep_forever(interval: float) -> None:
    while not sender.stopping.is_set():
        try:
            with app_context():
                services.sweep(huey)
        except Exception:
            log.warning("sweep failed; trying again in %.0f s", interval, exc_info=True)
        sender.stopping.wait(interval)


@huey.signal(SIGNAL_INTERRUPTED)
def release_on_stop(signal, task, *args, **kwargs) -> None:
    """The consumer is stopping with tasks still running: have their batches hand back what they
    have not sent, so nothing is lost and nothing is sent twice."""
    sender.stopping.set()
    if not sender.wait_for_release(RELEASE_TIMEOUT):
        log.warning("some batches did not release within %.0f s; their leases will expire", RELEASE_TIMEOUT)
