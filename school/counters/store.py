"""Numbers every process adds to and every process reads: counters, per-interval series and the
consumers' heartbeats.

With ``REDIS_URL`` they live on that Redis, so every web worker and every consumer on every machine
adds to the same totals. Without it they live in a small SQLite file under ``DATA_DIR`` that the
processes of the one machine share. (prometheus_client keeps its numbers per process, which would
show a random gunicorn worker's share and forget a consumer's counts when it exits.)

Keys are namespaced by ``HUEY_NAME``, like the queue, so several schools can share one Redis.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import redis

SERIES_STEP = 10  # seconds per series bucket
SERIES_KEEP = 30 * 60  # how long a bucket is kept
REDIS_TIMEOUT = 1.0  # a metric is never worth waiting for


class RedisStore:
    def __init__(self, url: str, namespace: str):
        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                                           health_check_interval=30)
        self.prefix = f"{namespace}:ops:"

    def add(self, counters: dict[str, float], series: dict[tuple[str, int], float] | None = None) -> None:
        """Add to counters and to series buckets (``{(name, bucket): amount}``), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key, amount in counters.items():
            pipe.hincrbyfloat(self.prefix + "counters", key, amount)
        for (name, bucket), amount in (series or {}).items():
            key = f"{self.prefix}series:{name}:{bucket}"
            pipe.incrbyfloat(key, amount)
            pipe.expire(key, SERIES_KEEP)
        pipe.execute()

    def counters(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.client.hgetall(self.prefix + "counters").items()}

    def series(self, name: str, buckets: list[int]) -> list[float]:
        if not buckets:
            return []
        values = self.client.mget([f"{self.prefix}series:{name}:{b}" for b in buckets])
        return [float(v) if v is not None else 0.0 for v in values]

    def put_heartbeat(self, consumer_id: str, data: dict) -> None:
        self.client.hset(self.prefix + "consumers", consumer_id, json.dumps(data))

    def heartbeats(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self.client.hgetall(self.prefix + "consumers").items()}

    def drop_heartbeats(self, consumer_ids: list[str]) -> None:
        if consumer_ids:
            self.client.hdel(self.prefix + "consumers", *consumer_ids)

    def ping(self) -> bool:
        return bool(self.client.ping())


class SqliteStore:
    """The same, in ``DATA_DIR/ops.db``: a file of its own, so counting never waits on the school's data."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS counters (namespace TEXT, key TEXT, value REAL NOT NULL,"
        " PRIMARY KEY (namespace, key))",
        "CREATE TABLE IF NOT EXISTS series (namespace TEXT, name TEXT, bucket INTEGER, value REAL NOT NULL,"
        " PRIMARY KEY (namespace, name, bucket))",
        "CREATE TABLE IF NOT EXISTS heartbeats (namespace TEXT, id TEXT, data TEXT NOT NULL,"
        " PRIMARY KEY (namespace, id))",
    )

    def __init__(self, path: str, namespace: str):
        self.path = path
        self.namespace = namespace
        self.local = threading.local()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as conn:
            for statement in self.SCHEMA:
                conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread, and a new one after a fork (huey's process workers).
        conn = getattr(self.local, "conn", None)
        if conn is None or self.local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")  # losing the last few counts in a power cut is fine
            self.local.conn, self.local.pid = conn, os.getpid()
        return conn

    def add(self, counters: dict[str, float], series: dict[tuple[str, int], float] | None = None) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO counters (namespace, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = value + excluded.value",
                [(self.namespace, key, amount) for key, amount in counters.items()])
            if series:
                conn.executemany(
                    "INSERT INTO series (namespace, name, bucket, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (namespace, name, bucket) DO UPDATE SET value = value + excluded.value",
                    [(self.namespace, name, bucket, amount) for (name, bucket), amount in series.items()])
                conn.execute("DELETE FROM series WHERE namespace = ? AND bucket < ?",
                             (self.namespace, bucket_of() - SERIES_KEEP))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def counters(self) -> dict[str, float]:
        rows = self._connection().execute("SELECT key, value FROM counters WHERE namespace = ?", (self.namespace,))
        return dict(rows.fetchall())

    def series(self, name: str, buckets: list[int]) -> list[float]:
        if not buckets:
            return []
        rows = self._connection().execute(
            "SELECT bucket, value FROM series WHERE namespace = ? AND name = ? AND bucket BETWEEN ? AND ?",
            (self.namespace, name, min(buckets), max(buckets)))
        found = dict(rows.fetchall())
        return [float(found.get(b, 0.0)) for b in buckets]

    def put_heartbeat(self, consumer_id: str, data: dict) -> None:
        self._connection().execute(
            "INSERT INTO heartbeats (namespace, id, data) VALUES (?, ?, ?)"
            " ON CONFLICT (namespace, id) DO UPDATE SET data = excluded.data",
            (self.namespace, consumer_id, json.dumps(data)))

    def heartbeats(self) -> dict[str, dict]:
        rows = self._connection().execute("SELECT id, data FROM heartbeats WHERE namespace = ?", (self.namespace,))
        return {consumer_id: json.loads(data) for consumer_id, data in rows.fetchall()}

    def drop_heartbeats(self, consumer_ids: list[str]) -> None:
        self._connection().executemany("DELETE FROM heartbeats WHERE namespace = ? AND id = ?",
                                       [(self.namespace, i) for i in consumer_ids])

    def ping(self) -> bool:
        return self._connection().execute("SELECT 1").fetchone() == (1,)


def bucket_of(at: float | None = None) -> int:
    at = time.time() if at is None else at
    return int(at // SERIES_STEP * SERIES_STEP)


def last_buckets(seconds: int, now: float | None = None) -> list[int]:
    """The buckets covering the last ``seconds``, oldest first, the current (partial) one last."""
    current = bucket_of(now)
    count = max(1, seconds // SERIES_STEP)
    return [current - SERIES_STEP * i for i in range(count - 1, -1, -1)]


_stores: dict[tuple, RedisStore | SqliteStore] = {}
_lock = threading.Lock()


def for_config(config) -> RedisStore | SqliteStore:
    """The store these settings name; one per process and setting, shared by its threads."""
    key = (config.get("REDIS_URL"), config["DATA_DIR"], config["HUEY_NAME"])
    with _lock:
        if key not in _stores:
            if config.get("REDIS_URL"):
                _stores[key] = RedisStore(config["REDIS_URL"], config["HUEY_NAME"])
            else:
                _stores[key] = SqliteStore(str(Path(config["DATA_DIR"]) / "ops.db"), config["HUEY_NAME"])
        return _stores[key]


def current() -> RedisStore | SqliteStore:
    from flask import current_app

    return for_config(current_app.config)
