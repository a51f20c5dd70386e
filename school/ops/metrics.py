"""What the app counts as it works, and ``/metrics`` in Prometheus' text format.

Counts and timings are added to the shared store (see ``store``) by whichever process does the work;
``/metrics`` reads them back, together with what the database and the queue say right now, through
one custom collector. Any web worker can answer a scrape and every answer is the whole system's.
"""
from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

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
    from flask import current_app

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


def timed_send(send, message):
    """``send(message)``, its duration recorded in the send histogram whatever the outcome."""
    started = time.perf_counter()
    try:
        return send(message)
    finally:
        observe("send", time.perf_counter() - started)


@contextmanager
def timed(histogram: str, **labels):
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(histogram, time.perf_counter() - started, **labels)


# --- /metrics ------------------------------------------------------------------------------------

class SchoolCollector:
    """Collects at scrape time; each part that cannot be read is left out rather than failing the scrape."""

    def collect(self):
        from . import stats

        parts = {"the shared counters": self._counters, "the job totals": lambda: self._aggregates(stats),
                 "the queue": lambda: self._queue(stats), "the heartbeats": lambda: self._consumers(stats)}
        for what, part in parts.items():
            try:
                families = list(part())  # all or nothing: never half a family
            except Exception as exc:
                log.warning("metrics: %s could not be read (%s: %s)", what, type(exc).__name__, exc)
                continue
            yield from families

    def _counters(self):
        counters = store_module.current().counters()
        messages = CounterMetricFamily("school_messages", "Recipients' SMTP attempts by outcome.",
                                       labels=["outcome"])
        for outcome in ("sent", "failed", "deferred"):
            messages.add_metric([outcome], counters.get(f"messages:{outcome}", 0.0))
        yield messages
        cache = CounterMetricFamily("school_cache_requests", "Cached reads by result.", labels=["result"])
        for result in ("hit", "miss"):
            cache.add_metric([result], counters.get(f"cache:{result}", 0.0))
        yield cache
        for histogram, (name, help_text, buckets, label_names) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text, labels=list(label_names))
            for labels in _label_sets(counters, histogram):
                key = histogram_key(histogram, labels)
                running, points = 0.0, []
                for slot, bound in enumerate([*buckets, float("inf")]):
                    running += counters.get(f"{key}:bucket:{slot}", 0.0)
                    points.append((_bound(bound), running))
                family.add_metric([labels[n] for n in label_names], points, counters.get(f"{key}:sum", 0.0))
            yield family

    def _aggregates(self, stats):
        totals = stats.aggregates()
        jobs = GaugeMetricFamily("school_jobs", "Notification jobs by status.", labels=["status"])
        for status, n in totals["jobs"].items():
            jobs.add_metric([status], n)
        yield jobs
        recipients = GaugeMetricFamily("school_notifications", "Recipients of every job by outcome so far.",
                                       labels=["status"])
        for status, n in totals["notifications"].items():
            recipients.add_metric([status], n)
        yield recipients
        yield GaugeMetricFamily("school_batches_in_flight", "Batches being sent now.", value=totals["in_flight"])

    def _queue(self, stats):
        depth = stats.queue_depth()
        queue = GaugeMetricFamily("school_queue_tasks", "Tasks in the queue.", labels=["state"])
        queue.add_metric(["waiting"], depth["waiting"])
        queue.add_metric(["scheduled"], depth["scheduled"])
        yield queue

    def _consumers(self, stats):
        alive = [c for c in stats.consumers() if c.alive]
        yield GaugeMetricFamily("school_consumers_alive", "Consumer processes whose heartbeat is current.",
                                value=len(alive))
        yield GaugeMetricFamily("school_consumer_workers", "Worker threads of the live consumers.",
                                value=sum(c.workers for c in alive))


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def _label_sets(counters: dict, histogram: str) -> list[dict]:
    """Every label combination seen for ``histogram`` (one empty set for an unlabelled one)."""
    _name, _help, _buckets, label_names = HISTOGRAMS[histogram]
    if not label_names:
        return [{}]
    seen = set()
    prefix = f"h:{histogram}:"
    for key in counters:
        if key.startswith(prefix) and key.endswith(":count"):
            pairs = key[len(prefix):-len(":count")].split(":")
            seen.add(tuple(pair.partition("=")[::2] for pair in pairs))
    return [dict(pairs) for pairs in sorted(seen)]


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchoolCollector())
    return generate_latest(registry)
