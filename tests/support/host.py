"""This machine: where the project lives, a free loopback port, a clean environment, and waiting
for something to happen."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from school import config

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, message=None):
    """Call ``predicate`` until it returns something truthy and return that; fail after ``timeout`` s.

    ``message`` (a string, or a callable for one worked out at the time of failure) says what
    did not happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f"still false after {timeout:.0f} s: {predicate!r}")
        time.sleep(interval)


def clean_environ() -> dict[str, str]:
    """This process's environment without any of the app's settings: a test's processes get
    exactly the values the test chose, never whatever the shell that started pytest exported."""
    excluded = config.variable_names() | {"FLASK_APP"}
    return {k: v for k, v in os.environ.items() if k not in excluded}
