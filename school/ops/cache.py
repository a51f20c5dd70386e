"""Reads that pages repeat often, kept in the shared cache (Redis when ``REDIS_URL`` is set, so every
web worker and consumer sees one cache; a directory under ``DATA_DIR`` otherwise).

Cached data is keyed by a version that every write changing it replaces (``changed``), so a new
event shows at once in every process; nothing waits for a timeout to expire. Hits and misses are
counted in the shared store for ``/health/cache`` and ``/metrics``.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Callable

from flask import current_app

from ..extensions import cache
from ..pagination import Page
from . import metrics

log = logging.getLogger(__name__)

EVENTS = "events"


def version(name: str) -> str:
    """The current version of ``name``'s data; made up on first use (or after the cache lost it)."""
    key = f"version:{name}"
    current = cache.get(key)
    if current is None:
        # A fresh random value, never a counter restarting at 0: entries cached under an old
        # version must never come back to life.
        cache.add(key, secrets.token_hex(8), timeout=0)
        current = cache.get(key) or "unversioned"
    return current


def changed(name: str) -> None:
    """``name``'s data changed: whatever was cached for it is stale everywhere."""
    cache.set(f"version:{name}", secrets.token_hex(8), timeout=0)


def remember(key: str, compute: Callable[[], Any], timeout: int | None = None) -> Any:
    """The cached value for ``key``, or ``compute()`` stored for next time. Counts hits and misses."""
    value = cache.get(key)
    if value is not None:
        metrics.count("cache:hit")
        return value
    metrics.count("cache:miss")
    value = compute()
    cache.set(key, value, timeout=timeout)
    return value


def stats() -> dict:
    from . import store

    counters = store.current().counters()
    hits, misses = int(counters.get("cache:hit", 0)), int(counters.get("cache:miss", 0))
    backend = current_app.config.get("CACHE_TYPE", "")
    return {
        "backend": "redis" if "redis" in backend.lower() else backend.removesuffix("Cache").lower() or "none",
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }


# --- the events list -------------------------------------------------------------------------

def events_page(page: int, per_page: int) -> Page:
    """A page of events, newest first. The events come from the cache; their jobs' statuses, which
    consumers change all the time, are read fresh (one indexed query for the page's jobs)."""
    from sqlalchemy import func, select

    from ..events.models import Event
    from ..extensions import db
    from ..notify.models import NotificationJob

    page = max(page, 1)

    def load() -> dict:
        total = db.session.scalar(select(func.count()).select_from(Event))
        rows = db.session.scalars(select(Event).order_by(Event.created_at.desc(), Event.id.desc())
                                  .limit(per_page).offset((page - 1) * per_page)).all()
        items = [{"id": e.id, "title": e.title, "priority": e.priority, "starts_at": e.starts_at,
                  "ends_at": e.ends_at, "location": e.location, "audience": e.audience,
                  "created_at": e.created_at} for e in rows]
        return {"total": total, "items": items}

    cached = remember(f"events-page:{version(EVENTS)}:{page}:{per_page}", load)
    items = [dict(item) for item in cached["items"]]
    if items:
        statuses = dict(db.session.execute(select(NotificationJob.event_id, NotificationJob.status).where(
            NotificationJob.event_id.in_([item["id"] for item in items]))).all())
        for item in items:
            status = statuses.get(item["id"])
            item["job"] = {"status": status} if status else None
    return Page(items=items, page=page, per_page=per_page, total=cached["total"])
