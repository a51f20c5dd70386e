"""What every consumer process does beside running tasks: its heartbeat, and the app's log output
going where huey_consumer's goes. ``tasks.py`` imports this with the task modules."""
import logging
import threading

from .counters.heartbeats import heartbeat
from .queue import huey

_logging_shared = threading.Lock()


# Huey runs startup and shutdown hooks in every worker; the heartbeat counts them.
@huey.on_startup("school-heartbeat")
def _worker_started() -> None:
    heartbeat.worker_started()


@huey.on_shutdown("school-heartbeat")
def _worker_stopped() -> None:
    heartbeat.worker_stopped()


@huey.on_startup()
def share_log_output() -> None:
    """The app's own messages (sweeps, retries, recoveries) go where huey_consumer sends its own:
    its log file or stderr, at its level. Every worker runs startup hooks; the first one does it."""
    if not _logging_shared.acquire(blocking=False):
        return
    ours, theirs = logging.getLogger("school"), logging.getLogger("huey")
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level or logging.INFO)
    ours.propagate = False
