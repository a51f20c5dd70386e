"""The consumer's entry point: ``huey_consumer tasks.huey -w 8 -k thread``."""
from school import create_app
from school.queue import huey  # noqa: F401  (what huey_consumer loads)

app = create_app({"CONSUMER": True})

import school.notify.tasks  # noqa: E402,F401  (registers every task)
