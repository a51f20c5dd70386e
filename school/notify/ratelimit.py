"""One smooth sending limit for every consumer and worker thread, which slows down when the mail
server says it is sending too fast.

``MAIL_RATE_LIMIT`` ("20/second", "600/minute", "6/minute"; "0" = unlimited) is kept in two ways at
once:

- Pacing: messages leave one every period/amount seconds (GCRA with no burst), so "600/minute"
  sends 10 a second, never 600 at once, and "6/minute" one every 10 seconds.
- A hard cap on what the receiving server can see: no more than the per-second share (at least
  one) in any one-second window, counting the messages still in flight. Pacing alone holds only
  where the slots are handed out; the few milliseconds a busy machine adds between a slot and the
  message reaching the server would otherwise let a one-second window at the far end hold more. A
  message is counted from the moment it may leave until its SMTP exchange is over, and the window
  a new message waits for covers every message that could land in the same second as it.

Where the state lives: with ``REDIS_URL`` on Redis, on Redis's clock, shared by every process on
every machine; without it in ``DATA_DIR/ratelimit.db``, a small SQLite file every process on the
machine shares (each change in one ``BEGIN IMMEDIATE`` transaction). A sender that reaches the
limit waits its turn: it is paced, never failed.

The pace follows the server's replies (AIMD, shared by every consumer the same way):

- ``throttled()``: a throttling reply (421, 451 4.7.x, 454). The pace in use is halved, never below
  one message a minute (a limit configured lower than that stays as it is). Throttles within one second of the last halving are the same signal (the
  replies to messages that were already on their way) and do not halve it again. When the
  configured limit is unlimited, the first throttle starts a limit at half the rate of good
  replies seen over the last ten seconds (at least one a second).
- ``accepted()``: a good reply. Each one raises the pace by ceiling / (60 s × pace), but never
  more than doubles it: sending at the pace in use for a second adds ceiling/60 to it, so a halved
  pace is back at the ceiling after about 30 s of good replies. The ceiling is the configured
  ``MAIL_RATE_LIMIT``, or, when that is unlimited, the rate seen when the first throttle came;
  once the pace reaches it the throttle is over (and an unlimited limit is unlimited again).
  ``accepted()`` costs no round trip: each process adds its good replies up and hands them over at
  most once a second.
- ``pace()``: the messages per second in use now (None when unlimited and not throttled).

A throttle that sees neither a good reply nor another throttle for an hour (its consumers all
stopped) is forgotten.

Urgent notices first: the limit knows two priorities. Urgent work holds a *demand*, a lease named
after its job (``job_demand``), in the same shared state: the web request that dispatches an urgent
job takes it (``hold_urgent``), the fan-out renews it for every thousand recipients it writes, and
every ``acquire`` of an urgent message renews it, so it lasts while the job is on its way. While any
demand is held, a normal message gives way: ``acquire`` returns None at once instead of taking a
slot, and its batch is handed back to the queue (where urgent batches are ranked first), so the
urgent job gets every slot and every worker thread it can use. A demand not renewed for
``URGENT_LEASE`` seconds is over (an urgent sender or fan-out that died stops blocking anyone); a
batch of an urgent job that ends shortens it to ``URGENT_LINGER``, long enough for the job's next
batch to take over, so normal notices go on within a second of the last urgent message.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from limits import parse

from ..queue import URGENT

log = logging.getLogger(__name__)

KEY = "mail"
MAX_SLEEP = 0.25  # the longest a waiting sender goes without asking should_stop
WINDOW = 1.0  # seconds
FLOOR = 1 / 60  # messages per second: a throttle never slows below one a minute
START_FLOOR = 1.0  # messages per second: the least an unlimited limit starts at when throttled
RECOVERY = 60.0  # seconds of good replies at the pace in use that add the whole ceiling
HOLD = WINDOW  # seconds after a halving in which another throttle is the same signal
OBSERVE = 10  # seconds of good replies an unlimited limit measures its starting rate over
SYNC_EVERY = 1.0  # seconds between a process's hand-overs of its good replies
FORGET = 3600  # seconds a throttle nobody touches is kept
URGENT_LEASE = 3.0  # seconds an urgent demand lasts unless renewed
URGENT_LINGER = 1.0  # seconds an urgent demand outlasts a batch of its job that ended
GIVE_WAY = -1.0  # what ``try_acquire`` returns to a normal message while urgent demand is held

# KEYS[1]: messages in flight (scored until when they may still be) or finished (scored when);
# KEYS[2]: the earliest moment the next message may leave; KEYS[3]: the throttle, if any;
# KEYS[4]: the urgent demands (name scored until when it holds).
# ARGV: the configured spacing (0 = unlimited), this message's token, how long it may stay in flight,
# the urgent demand it renews ("" for a normal message).
# Returns "0" when the message may leave now (and counts it), "-1" when a normal message must give
# way to urgent demand, else how many seconds to wait.
ACQUIRE = f"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval, ttl = tonumber(ARGV[1]), tonumber(ARGV[3])
local rate = tonumber(redis.call('HGET', KEYS[3], 'rate'))
if rate then interval = 1 / rate end
if interval <= 0 then return '0' end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if ARGV[4] ~= '' then
  if (tonumber(redis.call('ZSCORE', KEYS[4], ARGV[4]) or 0)) < now + {URGENT_LEASE} then
    redis.call('ZADD', KEYS[4], now + {URGENT_LEASE}, ARGV[4])
    redis.call('EXPIRE', KEYS[4], {math.ceil(URGENT_LEASE) + 2})
  end
elseif redis.call('ZCARD', KEYS[4]) > 0 then
  return '{GIVE_WAY}'
end
local cap = math.max(1, math.floor({WINDOW} / interval + 1e-9))
local wait = math.min(tonumber(redis.call('GET', KEYS[2]) or 0) - now, interval)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - {WINDOW})
if redis.call('ZCARD', KEYS[1]) >= cap then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(wait, tonumber(oldest[2]) + {WINDOW} - now)
end
if wait > 0 then return string.format('%.6f', wait) end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 2)
redis.call('SET', KEYS[2], string.format('%.6f', now + interval), 'PX', math.ceil(interval * 1000) + 1000)
return '0'
"""
# The message with token ARGV[1] is no longer in flight: it counts from now on as finished now.
FINISH = """
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(clock[1]) + tonumber(clock[2]) / 1000000, ARGV[1])
"""
# KEYS[1]: the urgent demands. ARGV: a demand's name ("" for none), "hold" (it holds URGENT_LEASE
# from now) or "linger" (it ends within URGENT_LINGER). Returns how many demands are held.
DEMAND = f"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] ~= '' then
  local held = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or 0)
  if ARGV[2] == 'hold' and held < now + {URGENT_LEASE} then
    redis.call('ZADD', KEYS[1], now + {URGENT_LEASE}, ARGV[1])
    redis.call('EXPIRE', KEYS[1], {math.ceil(URGENT_LEASE) + 2})
  elseif ARGV[2] == 'linger' and held > now + {URGENT_LINGER} then
    redis.call('ZADD', KEYS[1], now + {URGENT_LINGER}, ARGV[1])
  end
end
return redis.call('ZCARD', KEYS[1])
"""
# KEYS[1]: the throttle (rate, ceiling, halved); KEYS[2]: good replies per second (unlimited only).
# ARGV: the configured rate (0 = unlimited), good replies to add, "1" for a throttle.
# Returns the pace in use while throttled, else "".
ADJUST = f"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local second = math.floor(now)
local configured, good, throttle = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
if configured == 0 and good > 0 then
  redis.call('HINCRBY', KEYS[2], second, good)
  redis.call('EXPIRE', KEYS[2], {OBSERVE} * 2)
  if redis.call('HLEN', KEYS[2]) > {OBSERVE} * 2 then
    local fields = redis.call('HKEYS', KEYS[2])
    for _, field in ipairs(fields) do
      if tonumber(field) <= second - {OBSERVE} then redis.call('HDEL', KEYS[2], field) end
    end
  end
end
local state = redis.call('HMGET', KEYS[1], 'rate', 'ceiling', 'halved')
local rate, ceiling, halved = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]) or 0
if configured > 0 then ceiling = configured end
if throttle then
  if not rate then
    if configured == 0 then
      local seen = 0
      local counts = redis.call('HGETALL', KEYS[2])
      for i = 1, #counts, 2 do
        if tonumber(counts[i]) > second - {OBSERVE} then seen = seen + tonumber(counts[i + 1]) end
      end
      ceiling = math.max(seen / {OBSERVE}, 2 * {START_FLOOR})
    end
    rate = ceiling
  end
  if now - halved >= {HOLD} then
    rate = math.max(rate / 2, math.min({FLOOR}, rate))
    halved = now
  end
elseif rate and good == 0 then
  return string.format('%.9f', rate)
elseif rate then
  for _ = 1, good do
    rate = math.min(rate + math.min(ceiling / ({RECOVERY} * rate), rate), ceiling)
    if rate >= ceiling then break end
  end
  if rate >= ceiling then
    redis.call('DEL', KEYS[1])
    return ''
  end
end
if not rate then return '' end
redis.call('HSET', KEYS[1], 'rate', string.format('%.9f', rate), 'ceiling', string.format('%.9f', ceiling),
           'halved', string.format('%.6f', halved))
redis.call('EXPIRE', KEYS[1], {FORGET})
return string.format('%.9f', rate)
"""


def halve(rate: float) -> float:
    """Half the pace, but not below one a minute (nor above a limit set lower than that)."""
    return max(rate / 2, min(FLOOR, rate))


def lift(rate: float, ceiling: float, good: int) -> float:
    """The pace after ``good`` good replies (see the module docstring)."""
    for _ in range(good):
        rate = min(rate + min(ceiling / (RECOVERY * rate), rate), ceiling)
        if rate >= ceiling:
            break
    return rate


class Permit:
    """Leave to send one message; ``done()`` (or leaving the ``with`` block) once it is sent."""

    def __init__(self, limit: "MailRateLimit", token: str | None):
        self.limit = limit
        self.token = token

    def done(self) -> None:
        """Stop counting the message as in flight. Never raises: it runs once the SMTP exchange is
        over, and an error here would hide how it went, so a message the server took would be
        thought unsent and sent again. A finish that cannot reach the shared state only makes the
        message count until its in-flight time runs out."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            self.limit.backend.finish(token)
        except Exception as exc:
            log.warning("rate limit: could not record a finished message (%s)", exc)

    def __enter__(self) -> "Permit":
        return self

    def __exit__(self, *exc_info) -> None:
        self.done()


class RedisState:
    """The limit's state on Redis, on Redis's clock."""

    def __init__(self, url: str, namespace: str):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        prefix = f"{namespace}:ratelimit:{KEY}"
        self.window, self.next, self.throttle, self.seen, self.urgent = (
            f"{prefix}:window", f"{prefix}:next", f"{prefix}:throttle", f"{prefix}:seen", f"{prefix}:urgent")
        self._acquire = client.register_script(ACQUIRE)
        self._finish = client.register_script(FINISH)
        self._adjust = client.register_script(ADJUST)
        self._demand = client.register_script(DEMAND)

    def try_acquire(self, interval: float, token: str, in_flight: float, urgent: str = "") -> float:
        return float(self._acquire(keys=[self.window, self.next, self.throttle, self.urgent],
                                   args=[repr(interval), token, in_flight, urgent]))

    def demand(self, name: str, action: str) -> int:
        return int(self._demand(keys=[self.urgent], args=[name, action]))

    def finish(self, token: str) -> None:
        self._finish(keys=[self.window], args=[token])

    def adjust(self, configured: float, good: int, throttle: bool) -> float | None:
        rate = self._adjust(keys=[self.throttle, self.seen], args=[repr(configured), good, int(throttle)])
        return float(rate) if rate else None


def _use_wal(conn: sqlite3.Connection, patience: float = 10.0) -> None:
    """Switch the file to write-ahead logging. Asking for it while another process writes can answer
    "database is locked" at once (changing the journal mode does not wait on the busy timeout), even
    when the file is in WAL mode already: then there is nothing to do; otherwise ask again."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                    return
            except sqlite3.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class FileState:
    """The same state in ``DATA_DIR/ratelimit.db``, shared by every process on the machine: each
    change is one ``BEGIN IMMEDIATE`` transaction, so processes take turns. The messages in flight
    are rows of their own (a window of a thousand costs no more than one of ten); the throttle is a
    small JSON document beside the next slot. Times are the machine's wall clock; a value that only
    a clock stepped back could have written is ignored rather than waited for."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS limit_state (namespace TEXT PRIMARY KEY, next REAL NOT NULL,"
        " aimd TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS limit_window (namespace TEXT NOT NULL, token TEXT NOT NULL,"
        " until REAL NOT NULL, PRIMARY KEY (namespace, token))",
        "CREATE INDEX IF NOT EXISTS limit_window_until ON limit_window (namespace, until)",
        "CREATE TABLE IF NOT EXISTS limit_urgent (namespace TEXT NOT NULL, name TEXT NOT NULL,"
        " until REAL NOT NULL, PRIMARY KEY (namespace, name))",
    )

    def __init__(self, path: str, namespace: str):
        self.path = path
        self.namespace = namespace
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            conn = self._connection()
            for statement in self.SCHEMA:
                conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a new one after a fork
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=OFF")  # the state is worth nothing after a power cut
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _change(self, step):
        """Run ``step(conn, state, now)`` in one transaction, ``state`` being the next slot and the
        throttle (``{"next": …, "aimd": {…}}``), written back afterwards; its result."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT next, aimd FROM limit_state WHERE namespace = ?",
                                   (self.namespace,)).fetchone()
                state = {"next": row[0], "aimd": json.loads(row[1])} if row else {"next": 0.0, "aimd": {}}
                result = step(conn, state, time.time())
                conn.execute("INSERT INTO limit_state (namespace, next, aimd) VALUES (?, ?, ?) ON CONFLICT"
                             " (namespace) DO UPDATE SET next = excluded.next, aimd = excluded.aimd",
                             (self.namespace, state["next"], json.dumps(state["aimd"])))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    @staticmethod
    def _throttle(aimd: dict, now: float) -> dict | None:
        throttle = aimd.get("throttle")
        if throttle and not now - FORGET < throttle["touched"] <= now + HOLD:
            del aimd["throttle"]
            return None
        return throttle

    def _demand(self, conn: sqlite3.Connection, now: float, name: str, action: str) -> int:
        """The urgent demands held, after ``action`` ("hold", "linger" or "" to only look) on ``name``."""
        conn.execute("DELETE FROM limit_urgent WHERE namespace = ? AND (until <= ? OR until > ?)",
                     (self.namespace, now, now + URGENT_LEASE))
        if name and action == "hold":
            conn.execute("INSERT INTO limit_urgent (namespace, name, until) VALUES (?, ?, ?) ON CONFLICT"
                         " (namespace, name) DO UPDATE SET until = max(until, excluded.until)",
                         (self.namespace, name, now + URGENT_LEASE))
        elif name and action == "linger":
            conn.execute("UPDATE limit_urgent SET until = min(until, ?) WHERE namespace = ? AND name = ?",
                         (now + URGENT_LINGER, self.namespace, name))
        return conn.execute("SELECT count(*) FROM limit_urgent WHERE namespace = ?", (self.namespace,)).fetchone()[0]

    def demand(self, name: str, action: str) -> int:
        return self._change(lambda conn, _state, now: self._demand(conn, now, name, action))

    def try_acquire(self, interval: float, token: str, in_flight: float, urgent: str = "") -> float:
        def step(conn: sqlite3.Connection, state: dict, now: float) -> float:
            throttle = self._throttle(state["aimd"], now)
            spacing = 1 / throttle["rate"] if throttle else interval
            if spacing <= 0:
                return 0.0
            if self._demand(conn, now, urgent, "hold") and not urgent:
                return GIVE_WAY
            cap = max(1, math.floor(WINDOW / spacing + 1e-9))
            conn.execute("DELETE FROM limit_window WHERE namespace = ? AND (until <= ? OR until > ?)",
                         (self.namespace, now - WINDOW, now + in_flight))
            wait = min(state["next"] - now, spacing)
            # The window is full when it holds a cap-th message; then the oldest must leave it first.
            full = conn.execute("SELECT until FROM limit_window WHERE namespace = ? ORDER BY until LIMIT 1"
                                " OFFSET ?", (self.namespace, cap - 1)).fetchone()
            if full:
                oldest = conn.execute("SELECT min(until) FROM limit_window WHERE namespace = ?",
                                      (self.namespace,)).fetchone()[0]
                wait = max(wait, oldest + WINDOW - now)
            if wait > 0:
                return wait
            conn.execute("INSERT INTO limit_window (namespace, token, until) VALUES (?, ?, ?)",
                         (self.namespace, token, now + in_flight))
            state["next"] = now + spacing
            return 0.0

        return self._change(step)

    def finish(self, token: str) -> None:
        def step(conn: sqlite3.Connection, _state: dict, now: float) -> None:
            conn.execute("UPDATE limit_window SET until = ? WHERE namespace = ? AND token = ?",
                         (now, self.namespace, token))

        self._change(step)

    def adjust(self, configured: float, good: int, throttle: bool) -> float | None:
        def step(_conn: sqlite3.Connection, state: dict, now: float) -> float | None:
            aimd = state["aimd"]
            second = math.floor(now)
            seen = {s: n for s, n in aimd.get("seen", {}).items() if second - OBSERVE < int(s) <= second}
            if not configured and good:
                seen[str(second)] = seen.get(str(second), 0) + good
            aimd["seen"] = seen
            current = self._throttle(aimd, now)
            if current is None and not throttle:
                return None
            if current is not None and not throttle and not good:
                return current["rate"]
            if current is None:
                ceiling = configured or max(sum(seen.values()) / OBSERVE, 2 * START_FLOOR)
                current = {"rate": ceiling, "ceiling": ceiling, "halved": 0.0}
            ceiling = configured or current["ceiling"]
            rate = current["rate"]
            if throttle:
                if not 0 <= now - current["halved"] < HOLD:
                    rate, current["halved"] = halve(rate), now
            else:
                rate = lift(rate, ceiling, good)
                if rate >= ceiling:
                    aimd.pop("throttle", None)
                    return None
            current.update(rate=rate, ceiling=ceiling, touched=now)
            aimd["throttle"] = current
            return rate

        return self._change(step)


class MailRateLimit:
    def __init__(self, spec: str, redis_url: str | None = None, namespace: str = "school",
                 in_flight: float = 30.0, data_dir: str | None = None):
        self.spec = spec
        self.interval = 0.0
        if spec and spec != "0":
            item = parse(spec)
            self.interval = item.get_expiry() / item.amount
        # A sender that dies mid-message stops counting after this long.
        self.in_flight = max(in_flight, WINDOW)
        if redis_url:
            self.backend = RedisState(redis_url, namespace)
        else:
            if not data_dir:
                raise ValueError("without Redis the limit lives in a file under DATA_DIR")
            self.backend = FileState(os.path.join(data_dir, "ratelimit.db"), namespace)
        self._lock = threading.Lock()
        self._good = 0  # good replies not yet handed over
        self._synced = -math.inf  # time.monotonic() of the last hand-over
        self._throttled_rate: float | None = None  # as of the last hand-over

    @property
    def configured(self) -> float:
        """The configured messages per second (0 = unlimited)."""
        return 1 / self.interval if self.interval else 0.0

    @property
    def unlimited(self) -> bool:
        """Unlimited and, as far as this process last heard, not throttled either."""
        return not self.interval and self._throttled_rate is None

    def acquire(self, should_stop=lambda: False, urgent: str | None = None) -> Permit | None:
        """Wait until one more message may leave; None if ``should_stop`` says to give up.
        ``should_stop`` is asked at least every ``MAX_SLEEP`` seconds while waiting.

        ``urgent``: the demand (``job_demand``) of the urgent job the message belongs to, renewed
        while it waits. A normal message (no ``urgent``) gets None at once while any urgent demand
        is held: it gives way, and its sender hands the batch back."""
        if not self.interval:
            self._sync_if_due()  # an unlimited limit hears of a throttle within a second
            if self._throttled_rate is None:
                return Permit(self, None)
        token = uuid.uuid4().hex
        while (wait := self.backend.try_acquire(self.interval, token, self.in_flight, urgent or "")) > 0:
            if should_stop():
                return None
            time.sleep(min(MAX_SLEEP, wait))
        return None if wait == GIVE_WAY else Permit(self, token)

    def hold_urgent(self, name: str) -> None:
        """Urgent work named ``name`` is on its way: normal messages give way for the next
        ``URGENT_LEASE`` seconds. Never raises: urgent work is sent all the same, only not first."""
        self._demand(name, "hold")

    def urgent_ending(self, name: str) -> None:
        """A batch of the urgent work ``name`` ended: its demand ends within ``URGENT_LINGER``
        unless the work's next batch renews it. Never raises."""
        self._demand(name, "linger")

    def urgent_held(self) -> bool:
        """Whether any urgent demand is held now (False when it cannot be known)."""
        return self._demand("", "") > 0

    def give_way(self, longest: float, should_stop=lambda: False) -> bool:
        """Wait up to ``longest`` seconds for every urgent demand to end: True if one still holds.
        Waits not at all while the limit is unlimited (messages do not compete for a rate)."""
        deadline = time.monotonic() + longest
        while self.urgent_held():
            if should_stop() or time.monotonic() >= deadline:
                return True
            time.sleep(min(MAX_SLEEP / 5, max(0.0, deadline - time.monotonic())))
        return False

    def _demand(self, name: str, action: str) -> int:
        if self.unlimited:
            return 0
        try:
            return self.backend.demand(name, action)
        except Exception as exc:
            log.warning("rate limit: could not reach the urgent demand (%s)", exc)
            return 0

    def accepted(self) -> None:
        """A good reply. Counted here and handed over at most once a second; never raises."""
        with self._lock:
            self._good += 1
        self._sync_if_due()

    def throttled(self) -> None:
        """A throttling reply: halve the pace for every consumer. Never raises."""
        try:
            self._sync(throttle=True)
        except Exception as exc:
            log.warning("rate limit: could not record a throttle (%s)", exc)

    def pace(self) -> float | None:
        """Messages per second in use now; None when unlimited and not throttled."""
        try:
            self._sync()
        except Exception as exc:  # what this process last heard
            log.warning("rate limit: could not read the pace in use (%s)", exc)
        return self._throttled_rate or self.configured or None

    def _sync_if_due(self) -> None:
        with self._lock:  # one thread of the process hands over; the others go on
            if time.monotonic() - self._synced < SYNC_EVERY:
                return
            self._synced = time.monotonic()
        try:
            self._sync()
        except Exception as exc:  # sending goes on with what this process last heard
            log.warning("rate limit: could not share the good replies (%s)", exc)

    def _sync(self, throttle: bool = False) -> None:
        with self._lock:
            good, self._good = self._good, 0
            self._synced = time.monotonic()
        try:
            self._throttled_rate = self.backend.adjust(self.configured, good, throttle)
        except Exception:
            with self._lock:
                self._good += good  # handed over next time
            raise


_limits: dict[tuple, MailRateLimit] = {}
_lock = threading.Lock()


def for_config(config) -> MailRateLimit:
    key = (config["MAIL_RATE_LIMIT"], config.get("REDIS_URL"), config["HUEY_NAME"], config["MAIL_TIMEOUT"],
           config["DATA_DIR"])
    with _lock:
        if key not in _limits:
            _limits[key] = MailRateLimit(*key)
        return _limits[key]


def job_demand(job_id: int) -> str:
    """The name of an urgent job's demand on the limit: its dispatch, fan-out and batches share it."""
    return f"job:{job_id}"


def urgent_on_its_way(config, job_id: int, priority: int) -> None:
    """Before an urgent job's work goes to the queue: normal messages give way from now on, so
    the worker threads sending them are free for it by the time it arrives. Normal jobs: nothing."""
    if priority >= URGENT:
        for_config(config).hold_urgent(job_demand(job_id))


# The cap on open SMTP connections (MAIL_MAX_CONNECTIONS): a counting semaphore whose holders are
# leases. Each open connection holds one slot, renewed while it stays open; a process that dies
# stops renewing, and its slots come free once their leases run out (its connections died with it).
SLOT_LEASE = 30.0  # seconds a slot is held without renewal
SLOT_RENEW = 5.0  # seconds between renewals of the slots a process holds

# KEYS[1]: the slots held (token scored by lease expiry). ARGV: the cap, the token, the lease.
# Returns 1 when the slot is taken (or renewed), 0 when every slot is held.
TAKE_SLOT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 2)
return 1
"""


class RedisSlots:
    def __init__(self, url: str, namespace: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        self.key = f"{namespace}:smtp:slots"
        self._take = self.client.register_script(TAKE_SLOT)

    def take(self, cap: int, token: str, lease: float) -> bool:
        return bool(self._take(keys=[self.key], args=[cap, token, lease]))

    def give_back(self, token: str) -> None:
        self.client.zrem(self.key, token)


class FileSlots:
    """The same semaphore in ``DATA_DIR/ratelimit.db`` for every process on the machine."""

    def __init__(self, path: str, namespace: str):
        self.state = FileState(path, namespace)
        with self.state._lock:
            self.state._connection().execute(
                "CREATE TABLE IF NOT EXISTS smtp_slots (namespace TEXT NOT NULL, token TEXT NOT NULL,"
                " until REAL NOT NULL, PRIMARY KEY (namespace, token))")

    def _run(self, step):
        with self.state._lock:
            conn = self.state._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = step(conn, self.state.namespace, time.time())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    def take(self, cap: int, token: str, lease: float) -> bool:
        def step(conn, namespace, now):
            conn.execute("DELETE FROM smtp_slots WHERE namespace = ? AND (until <= ? OR until > ?)",
                         (namespace, now, now + lease + 60))
            mine = conn.execute("SELECT 1 FROM smtp_slots WHERE namespace = ? AND token = ?",
                                (namespace, token)).fetchone()
            held = conn.execute("SELECT count(*) FROM smtp_slots WHERE namespace = ?", (namespace,)).fetchone()[0]
            if not mine and held >= cap:
                return False
            conn.execute("INSERT INTO smtp_slots (namespace, token, until) VALUES (?, ?, ?) ON CONFLICT"
                         " (namespace, token) DO UPDATE SET until = excluded.until", (namespace, token, now + lease))
            return True

        return self._run(step)

    def give_back(self, token: str) -> None:
        self._run(lambda conn, namespace, _now: conn.execute(
            "DELETE FROM smtp_slots WHERE namespace = ? AND token = ?", (namespace, token)))


class ConnectionSlots:
    """``MAIL_MAX_CONNECTIONS`` slots shared by every consumer: ``take()`` waits for one (None
    if ``should_stop`` says to give up), ``renew(token)`` keeps it, ``give_back(token)`` frees it.
    A cap of 0 is no cap: every ``take()`` succeeds at once without asking anyone."""

    def __init__(self, cap: int, redis_url: str | None, namespace: str, data_dir: str | None):
        self.cap = cap
        self.backend = None
        if cap:
            self.backend = (RedisSlots(redis_url, namespace) if redis_url
                            else FileSlots(os.path.join(data_dir, "ratelimit.db"), namespace))

    def try_take(self) -> str | None:
        token = uuid.uuid4().hex
        if self.backend is None or self.backend.take(self.cap, token, SLOT_LEASE):
            return token
        return None

    def renew(self, token: str) -> bool:
        """Keep the slot; False when its lease had run out and every slot is held by others."""
        return self.backend is None or self.backend.take(self.cap, token, SLOT_LEASE)

    def give_back(self, token: str) -> None:
        if self.backend is None:
            return
        try:
            self.backend.give_back(token)
        except Exception as exc:  # its lease runs out instead
            log.warning("connection cap: could not give a slot back (%s)", exc)


_slots: dict[tuple, ConnectionSlots] = {}


def slots_for(config) -> ConnectionSlots:
    key = (config["MAIL_MAX_CONNECTIONS"], config.get("REDIS_URL"), config["HUEY_NAME"], config["DATA_DIR"])
    with _lock:
        if key not in _slots:
            _slots[key] = ConnectionSlots(*key)
        return _slots[key]
