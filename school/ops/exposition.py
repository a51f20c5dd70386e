"""``/metrics`` in Prometheus' text format: the shared counters, read back together with what the
database and the queue say right now, through one custom collector. Any web worker can answer a
scrape and every answer is the whole system's."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..counters import store as store_module
from ..counters.record import HISTOGRAMS, histogram_key
from . import stats

log = logging.getLogger(__name__)


class SchoolCollector:
    """Collects at scrape time; each part that cannot be read is left out rather than failing the scrape."""

    def collect(self):
        parts = {"the shared counters": self._counters, "the job totals": self._aggregates,
                 "the queue": self._queue, "the heartbeats": self._consumers}
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
        bounces = CounterMetricFamily("school_bounce_reports", "Bounces and complaints received, by what was done "
                                      "(ignored: not a bounce, or not about one of our recipients).",
                                      labels=["outcome"])
        for outcome in ("hard", "soft", "complaint", "ignored"):
            bounces.add_metric([outcome], counters.get(f"bounces:{outcome}", 0.0))
        yield bounces
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

    def _aggregates(self):
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

    def _queue(self):
        depth = stats.queue_depth()
        queue = GaugeMetricFamily("school_queue_tasks", "Tasks in the queue.", labels=["state"])
        queue.add_metric(["waiting"], depth["waiting"])
        queue.add_metric(["scheduled"], depth["scheduled"])
        yield queue

    def _consumers(self):
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
