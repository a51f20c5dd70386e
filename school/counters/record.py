"""What the app counts as it works: the write side, called from the hot path.

Counts and timings are added to the shared store (see ``store``) by whichever process does the work;
``/metrics`` (``school.ops.exposition``) reads them back. A consumer adds its counts once a second,
a web request at once.
"""
from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time

from flask import Flask, current_app, g, request

from . import store as store_module

log = logging.getLogger(__name__)

SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CREATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HISTOGRAMS = {
    "send": ("school_send_duration_seconds", "Time to hand one message to the SMTP server.", SEND_BUCKETS, ()),
    "event_create": ("school_event_create_duration_seconds",
                     "Time to answer a request that creates an event (form or API).", CREATE_BUCKETS, ("via",)),
}
# A recipient's outcome after one SMTP attempt, as the sender records it.
OUTCOMES = {"sent": "sent", "failed": "failed", "pending": "deferred"}

FLUSH_EVERY = 1.0  # seconds a consumer keeps its counts before adding them to the store

_last_warning = 0.0


def _warn_once_a_minute(what: str, exc: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        log.warning("could not record %s (%s: %s); metrics are incomplete until the store is back",
                    what, type(exc).__name__, exc)


class _Pending:
    """What a consumer counted in the last second, added to the store in one write per second
    instead of one per message (sending is the hot path; a count may wait, a message should not).
    Flushed when the consumer stops; a consumer killed with -9 loses at most a second of counts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.data: dict = {}
        self.pid = None

    def add(self, store, counters: dict[str, float], series: dict[tuple[str, int], float]) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use in this process (or in a forked worker)
                self.pid, self.data = os.getpid(), {}
                threading.Thread(target=self._run, name="school-metrics", daemon=True).start()
            pending_counters, pending_series = self.data.setdefault(store, ({}, {}))
            for key, amount in counters.items():
                pending_counters[key] = pending_counters.get(key, 0.0) + amount
            for key, amount in series.items():
                pending_series[key] = pending_series.get(key, 0.0) + amount

    def flush(self) -> None:
        with self.lock:
            data, self.data = self.data, {}
        for store, (counters, series) in data.items():
            try:
                store.add(counters, series)
            except Exception as exc:
                _warn_once_a_minute("the last second's counts", exc)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            self.flush()


_pending = _Pending()
atexit.register(_pending.flush)


def flush() -> None:
    """Add what this process has counted but not yet stored (a consumer on its way out)."""
    _pending.flush()


def _add(what: str, counters: dict[str, float], series: dict[str, float] | None = None) -> None:
    """Recording never gets in the way of the work being recorded."""
    bucket = store_module.bucket_of()
    series = {(name, bucket): amount for name, amount in (series or {}).items()}
    try:
        store = store_module.for_config(current_app.config)
        if current_app.config.get("CONSUMER"):
            _pending.add(store, counters, series)
        else:  # web requests are few: store at once, so the next page shows them
            store.add(counters, series)
    except Exception as exc:
        _warn_once_a_minute(what, exc)


def count(name: str, amount: float = 1.0) -> None:
    _add(name, {name: amount})


def message_outcome(status: str) -> None:
    """One recipient's SMTP attempt ended ``status`` (sent, failed, or pending = deferred for a retry)."""
    outcome = OUTCOMES.get(status, status)
    series = {outcome: 1} if outcome in ("sent", "failed") else None
    _add("a message outcome", {f"messages:{outcome}": 1}, series)


def observe(histogram: str, seconds: float, **labels) -> None:
    _name, _help, buckets, _labels = HISTOGRAMS[histogram]
    key = histogram_key(histogram, labels)
    slot = bisect.bisect_left(buckets, seconds)  # index of the first bound >= seconds; len = +Inf
    _add(histogram, {f"{key}:bucket:{slot}": 1, f"{key}:sum": seconds, f"{key}:count": 1})


def histogram_key(histogram: str, labels: dict) -> str:
    return "h:" + histogram + "".join(f":{k}={v}" for k, v in sorted(labels.items()))


# --- how long creating an event takes -----------------------------------------------------------

# The views that create an event, and how the duration histogram labels them.
CREATE_ENDPOINTS = {"events.new": "form", "api.create": "api"}
CREATED = (202, 302)  # the API's "accepted" and the form's redirect to the new event


def init_app(app: Flask) -> None:
    """Time every request that creates an event, from the first byte read to the response."""

    @app.before_request
    def start_clock():
        if request.method == "POST" and request.endpoint in CREATE_ENDPOINTS:
            g.create_started = time.perf_counter()

    @app.after_request
    def record_create(response):
        started = g.pop("create_started", None)
        if started is not None and response.status_code in CREATED:
            observe("event_create", time.perf_counter() - started, via=CREATE_ENDPOINTS[request.endpoint])
        return response
