"""Reads that pages repeat often, kept in the shared cache (Redis when ``REDIS_URL`` is set, so every
web worker and consumer sees one cache; a directory under ``DATA_DIR`` otherwise).

Cached data is keyed by a version that every write changing it replaces (``changed``), so a change
shows at once in every process; nothing waits for a timeout to expire. Hits and misses are counted
in the shared store for ``/health/cache`` and ``/metrics``.
"""
from __future__ import annotations

import secrets
from typing import Any, Callable

from ..counters import record
from ..extensions import cache

# The data that is cached under a version, by name.
EVENTS = "events"
ROSTER = "roster"


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
        record.count("cache:hit")
        return value
    record.count("cache:miss")
    value = compute()
    cache.set(key, value, timeout=timeout)
    return value
