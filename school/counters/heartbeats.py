"""Each consumer process says it is alive every ``HEARTBEAT_INTERVAL`` seconds.

A heartbeat (host, pid, workers, started, last seen) goes into the shared store, where the dashboard
and ``/health/queue`` read it. A consumer whose heartbeat is older than ``TIMEOUT_BEATS`` intervals
is gone (killed, frozen or its machine lost); one that stopped cleanly says so on its way out.
Heartbeats of consumers gone for longer than ``FORGET_AFTER`` are dropped.

The consumer's wiring (``school.consumer``) tells ``heartbeat`` when each worker starts and stops.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..queue import get_app
from . import record
from . import store as store_module

log = logging.getLogger(__name__)

TIMEOUT_BEATS = 3
FORGET_AFTER = 3600.0


@dataclass(frozen=True)
class ConsumerInfo:
    id: str
    host: str
    pid: int
    workers: int
    started: float
    last_seen: float
    interval: float
    stopped: bool

    @property
    def timeout(self) -> float:
        return TIMEOUT_BEATS * self.interval

    def alive_at(self, now: float) -> bool:
        return not self.stopped and now - self.last_seen <= self.timeout

    @property
    def alive(self) -> bool:
        return self.alive_at(time.time())

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started, timezone.utc)

    @property
    def last_seen_at(self) -> datetime:
        return datetime.fromtimestamp(self.last_seen, timezone.utc)

    def state_at(self, now: float) -> str:
        if self.alive_at(now):
            return "alive"
        return "stopped" if self.stopped else "gone"

    def to_json(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        return {"id": self.id, "host": self.host, "pid": self.pid, "workers": self.workers,
                "started": self.started_at.isoformat(timespec="seconds"),
                "last_seen": self.last_seen_at.isoformat(timespec="seconds"),
                "seconds_since_seen": round(now - self.last_seen, 1), "state": self.state_at(now),
                "alive": self.alive_at(now)}


def consumers(store=None, now: float | None = None) -> list[ConsumerInfo]:
    """Every consumer heard from in the last hour: alive ones first, then by host and pid."""
    store = store or store_module.current()
    now = time.time() if now is None else now
    found, forgotten = [], []
    for consumer_id, data in store.heartbeats().items():
        try:
            info = ConsumerInfo(id=consumer_id, host=str(data["host"]), pid=int(data["pid"]),
                                workers=int(data["workers"]), started=float(data["started"]),
                                last_seen=float(data["last_seen"]), interval=float(data["interval"]),
                                stopped=bool(data.get("stopped")))
        except (KeyError, TypeError, ValueError):
            forgotten.append(consumer_id)
            continue
        if now - info.last_seen > FORGET_AFTER:
            forgotten.append(consumer_id)
        else:
            found.append(info)
    if forgotten:
        store.drop_heartbeats(forgotten)
    return sorted(found, key=lambda c: (not c.alive_at(now), c.host, c.pid))


class Heartbeat:
    """This process's heartbeat: one background thread however many workers the consumer runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.workers = 0
        self.pid = None
        self.thread = None
        self.done = threading.Event()

    def worker_started(self) -> None:
        with self.lock:
            # The first worker of this process (or of a forked child, or after every worker had stopped).
            if self.pid != os.getpid() or self.done.is_set():
                self.pid, self.workers, self.done = os.getpid(), 0, threading.Event()
                self.host, self.started = socket.gethostname(), time.time()
                self.id = f"{self.host}:{self.pid}:{int(self.started)}"
                self.thread = threading.Thread(target=self._run, args=(self.done,), name="school-heartbeat",
                                               daemon=True)
                self.thread.start()
            self.workers += 1
        self.beat()

    def worker_stopped(self) -> None:
        with self.lock:
            if self.pid != os.getpid():
                return
            self.workers = max(self.workers - 1, 0)
            if self.workers:
                return
            self.done.set()
        record.flush()
        self.beat()

    def beat(self) -> None:
        app = get_app()
        # Under the lock, so a routine beat can never land after the last worker's "stopped" one.
        with self.lock:
            data = {"host": self.host, "pid": self.pid, "workers": self.workers, "started": self.started,
                    "last_seen": time.time(), "interval": app.config["HEARTBEAT_INTERVAL"],
                    "stopped": self.done.is_set()}
            try:
                store_module.for_config(app.config).put_heartbeat(self.id, data)
            except Exception as exc:  # the store is down: the next beat tries again
                log.warning("heartbeat not recorded (%s: %s)", type(exc).__name__, exc)

    def _run(self, done: threading.Event) -> None:
        interval = get_app().config["HEARTBEAT_INTERVAL"]
        while not done.wait(interval):
            self.beat()


heartbeat = Heartbeat()
