"""The consumer's entry point: ``huey_consumer tasks.huey -w 8 -k thread``."""
import logging
import threading

from school import create_app
from school.queue import huey

app = create_app({"CONSUMER": True})

import school.notify.tasks  # noqa: E402,F401  (registers every task)
import school.roster.tasks  # noqa: E402,F401

_logging_shared = threading.Lock()


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
