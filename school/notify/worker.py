"""This consumer process as the database sees it: who it is, whether it is stopping, and which
batches it is sending right now (so a stopping consumer can wait for them to hand back)."""
import os
import socket
import threading
import time

WORKER = f"{socket.gethostname()}:{os.getpid()}"

# Set when the consumer is told to stop: batches in progress hand back what they have not sent.
stopping = threading.Event()

_active: set[int] = set()
_active_changed = threading.Condition()


def started(batch_id: int) -> None:
    with _active_changed:
        _active.add(batch_id)


def finished(batch_id: int) -> None:
    with _active_changed:
        _active.discard(batch_id)
        _active_changed.notify_all()


def wait_for_release(timeout: float) -> bool:
    """Block until no batch of this process is being sent, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    with _active_changed:
        while _active:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _active_changed.wait(left)
    return True
