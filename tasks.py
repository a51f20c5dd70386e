"""The consumer's entry point: ``huey_consumer tasks.huey -w 8 -k thread``."""
from school import create_app
from school.queue import huey  # noqa: F401  (what huey_consumer runs)

app = create_app({"CONSUMER": True})

# Every task module, and the consumer's own hooks (heartbeat, log output).
import school.consumer  # noqa: E402,F401
import school.notify.tasks  # noqa: E402,F401
import school.roster.tasks  # noqa: E402,F401
