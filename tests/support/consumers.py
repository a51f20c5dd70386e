"""``huey_consumer tasks.huey`` processes running the real tasks, each logging to a file that a
failing test shows the end of."""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .host import BIN, ROOT, wait_for


def huey_consumer_path() -> str:
    local = BIN / "huey_consumer"
    found = str(local) if local.exists() else shutil.which("huey_consumer")
    assert found, "huey_consumer is not installed in this environment"
    return found


class Consumer:
    """One ``huey_consumer tasks.huey -w N -k thread`` process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int, extra_args: tuple[str, ...] = (),
                 prefix: tuple[str, ...] = ()):
        self.env = env
        self.log_path = log_path
        self.workers = workers
        # ``prefix`` runs the consumer under another command, e.g. ("faketime", "-f", "+2m").
        self.args = [*prefix, huey_consumer_path(), "tasks.huey", "-w", str(workers), "-k", "thread", *extra_args]
        self.process: subprocess.Popen | None = None

    def start(self) -> "Consumer":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int | None:
        """Send ``sig`` and wait up to ``timeout`` s for the process to exit; its exit code, or None."""
        if not self.alive:
            return self.process.returncode if self.process else None
        self._signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """``kill -9``: no chance to hand anything back."""
        if self.alive:
            self._signal(signal.SIGKILL)
        return self.process.wait(10)

    def _signal(self, sig: int) -> None:
        """Signal the consumer's whole process group (its own session): a ``prefix`` such as faketime
        runs the consumer as its child, which a signal to the prefix's process alone would leave running."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_started(self, timeout: float = 30) -> None:
        """Wait until the process has started its workers."""
        wait_for(lambda: "Huey consumer started" in self.log(), timeout, 0.1,
                 lambda: f"consumer {self.pid} did not start: {self.tail(20)}")


_consumers_key = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of each of its consumers' logs."""
    report = yield
    if report.failed:
        for handle in item.stash.get(_consumers_key, []):
            report.sections.append((f"consumer pid {handle.pid} ({handle.log_path})", handle.tail()))
    return report


@pytest.fixture
def consumer(request, tmp_path_factory):
    """``consumer(school, workers=4, extra_args=(), prefix=(), **settings)`` starts a consumer process.

    ``settings`` override the school's (e.g. ``MAIL_RATE_LIMIT="50/second"``). Every consumer
    still running at the end is stopped (SIGTERM, then SIGKILL).
    """
    started: list[Consumer] = []
    request.node.stash[_consumers_key] = started
    logs = tmp_path_factory.mktemp("consumers")
    numbers = itertools.count(1)

    def factory(school, workers: int = 4, extra_args: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
                **settings) -> Consumer:
        handle = Consumer(school.consumer_env(**settings), logs / f"consumer{next(numbers)}.log", workers,
                          tuple(extra_args), tuple(prefix))
        started.append(handle)
        return handle.start()

    yield factory
    stop_consumers_of(request.node)


def stop_consumers_of(node) -> None:
    """Stop every consumer the test ``node`` started: SIGTERM, then SIGKILL."""
    for handle in node.stash.get(_consumers_key, []):
        if handle.alive:
            handle.stop(signal.SIGTERM, timeout=10)
        if handle.alive:
            handle.kill()
