"""Everything the admins' queue dashboard shows, gathered in one place for the page and its poll."""
from __future__ import annotations

import logging
import time

from flask import current_app

from ..counters import store
from ..extensions import db
from ..health.checks import redis_warnings as read_redis_warnings
from ..health.checks import scrub
from ..ops import chart, stats

log = logging.getLogger(__name__)


def _part(errors: list[str], what: str, read, default):
    """One section of the page; when its source is down the rest still shows, with a note."""
    try:
        return read()
    except Exception as exc:
        db.session.rollback()
        detail = scrub(f"{type(exc).__name__}: {exc}")
        log.warning("dashboard: cannot read %s (%s)", what, detail)
        errors.append(f"Cannot read {what} right now ({detail}).")
        return default


def dashboard() -> dict:
    now = time.time()
    errors: list[str] = []
    found = _part(errors, "the consumers' heartbeats", stats.consumers, [])
    depth = _part(errors, "the queue", stats.queue_depth, None)
    totals = _part(errors, "the job totals", stats.aggregates, None)
    return {
        "now": now,
        "errors": errors,
        "warnings": _part(errors, "the Redis settings", redis_warnings, []),
        "alive": [c for c in found if c.alive_at(now)],
        "gone": [c for c in found if not c.alive_at(now)],
        "depth": depth,
        "totals": totals,
        "sent_last": _part(errors, "recent throughput", stats.sent_recently, None),
        "chart": _part(errors, "the throughput chart", lambda: chart.throughput_chart(stats.throughput(now)), None),
        "running": _part(errors, "the jobs in progress", stats.running_jobs, []),
        "failures": _part(errors, "the last failures", stats.recent_failures, []),
    }


def redis_warnings() -> list[str]:
    if not current_app.config.get("REDIS_URL"):
        return []
    return read_redis_warnings(store.current().client)
