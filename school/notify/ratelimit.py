"""One smooth sending limit for every consumer and worker thread.

``MAIL_RATE_LIMIT`` ("20/second", "600/minute"; "0" = unlimited) is kept in two ways at once:

- Pacing: messages leave one every period/amount seconds (GCRA with no burst), so "600/minute"
  sends 10 a second, never 600 at once.
- A hard cap on what the receiving server can see: no more than the per-second share in any
  one-second window, counting the messages still in flight. Pacing alone holds only where the
  slots are handed out; the few milliseconds a busy machine adds between a slot and the message
  reaching the server would otherwise let a one-second window at the far end hold more. A message
  is counted from the moment it may leave until its SMTP exchange is over, and the window a new
  message waits for covers every message that could land in the same second as it.

With ``REDIS_URL`` both live on Redis, on Redis's clock, shared by every process on every machine;
otherwise they are shared by the threads of one process. A sender that reaches the limit waits
its turn: it is paced, never failed.
"""
import logging
import math
import threading
import time
import uuid

from limits import parse

log = logging.getLogger(__name__)

KEY = "mail"
MAX_SLEEP = 0.25
WINDOW = 1.0  # seconds

# KEYS[1]: messages in flight (scored until when they may still be) or finished (scored when);
# KEYS[2]: the earliest moment the next message may leave.
# ARGV: spacing, cap per window, this message's token, how long it may stay in flight.
# Returns "0" when the message may leave now (and counts it), else how many seconds to wait.
ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval, cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local wait = tonumber(redis.call('GET', KEYS[2]) or 0) - now
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1)
if redis.call('ZCARD', KEYS[1]) >= cap then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(wait, tonumber(oldest[2]) + 1 - now)
end
if wait > 0 then return string.format('%.6f', wait) end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 2)
redis.call('SET', KEYS[2], string.format('%.6f', now + interval), 'PX', math.ceil(interval * 1000) + 1000)
return '0'
"""
# The message with token ARGV[1] is no longer in flight: it counts from now on as finished now.
FINISH = """
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(clock[1]) + tonumber(clock[2]) / 1000000, ARGV[1])
"""


class Permit:
    """Leave to send one message; ``done()`` (or leaving the ``with`` block) once it is sent."""

    def __init__(self, limit: "MailRateLimit", token: str | None):
        self.limit = limit
        self.token = token

    def done(self) -> None:
        """Stop counting the message as in flight. Never raises: it runs once the SMTP exchange is
        over, and an error here would hide how it went, so a message the server took would be
        thought unsent and sent again. A finish that cannot reach Redis only makes the message
        count until its in-flight time runs out."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            self.limit._finish(token)
        except Exception as exc:
            log.warning("rate limit: could not record a finished message (%s)", exc)

    def __enter__(self) -> "Permit":
        return self

    def __exit__(self, *exc_info) -> None:
        self.done()


class MailRateLimit:
    def __init__(self, spec: str, redis_url: str | None = None, namespace: str = "school",
                 in_flight: float = 30.0):
        self.spec = spec
        self.interval = 0.0
        self.cap = 0
        if spec and spec != "0":
            item = parse(spec)
            self.interval = item.get_expiry() / item.amount
            self.cap = max(1, math.floor(WINDOW / self.interval + 1e-9))
        # A sender that dies mid-message stops counting after this long.
        self.in_flight = max(in_flight, WINDOW)
        self._lock = threading.Lock()
        self._next = 0.0  # when not on Redis: the next slot, on time.monotonic()
        self._window: dict[str, float] = {}
        self._redis = None
        if redis_url and self.interval:
            import redis

            client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=10)
            prefix = f"{namespace}:ratelimit:{KEY}"
            self._keys = [f"{prefix}:window", f"{prefix}:next"]
            self._redis = (client.register_script(ACQUIRE), client.register_script(FINISH))

    @property
    def unlimited(self) -> bool:
        return not self.interval

    def _try(self, token: str) -> float:
        """Count the message and return 0 if it may leave now; else seconds to wait."""
        if self._redis is not None:
            acquire, _finish = self._redis
            return float(acquire(keys=self._keys, args=[repr(self.interval), self.cap, token, self.in_flight]))
        with self._lock:
            now = time.monotonic()
            for key in [k for k, score in self._window.items() if score <= now - WINDOW]:
                del self._window[key]
            wait = self._next - now
            if len(self._window) >= self.cap:
                wait = max(wait, min(self._window.values()) + WINDOW - now)
            if wait > 0:
                return wait
            self._window[token] = now + self.in_flight
            self._next = now + self.interval
            return 0.0

    def _finish(self, token: str) -> None:
        if self._redis is not None:
            _acquire, finish = self._redis
            finish(keys=self._keys[:1], args=[token])
            return
        with self._lock:
            if token in self._window:
                self._window[token] = time.monotonic()

    def acquire(self, should_stop=lambda: False) -> Permit | None:
        """Wait until one more message may leave; None if ``should_stop`` says to give up."""
        if self.unlimited:
            return Permit(self, None)
        token = uuid.uuid4().hex
        while (wait := self._try(token)) > 0:
            if should_stop():
                return None
            time.sleep(min(MAX_SLEEP, wait))
        return Permit(self, token)


_limits: dict[tuple, MailRateLimit] = {}
_lock = threading.Lock()


def for_config(config) -> MailRateLimit:
    key = (config["MAIL_RATE_LIMIT"], config.get("REDIS_URL"), config["HUEY_NAME"], config["MAIL_TIMEOUT"])
    with _lock:
        if key not in _limits:
            _limits[key] = MailRateLimit(*key)
        return _limits[key]
