"""One smooth sending limit for every consumer and worker thread.

``MAIL_RATE_LIMIT`` ("20/second", "600/minute"; "0" = unlimited) is kept as a moving window, which
never lets more than the limit through in any window however it is placed (a fixed window lets
twice the limit through across its edge). A limit over a longer period is also held to its share
per second, so "600/minute" sends about 10 a second instead of 600 at once. With ``REDIS_URL`` the
windows live on Redis and are shared by all processes; otherwise they are shared by the threads
of one process. A sender that reaches the limit waits its turn: it is paced, never failed.
"""
import math
import threading
import time

from limits import RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

KEY = "mail"
MAX_SLEEP = 0.25


class MailRateLimit:
    def __init__(self, spec: str, redis_url: str | None = None, namespace: str = "school"):
        self.spec = spec
        self.items = []
        if spec and spec != "0":
            item = parse(spec)
            seconds = item.get_expiry()
            if seconds > 1:
                self.items.append(RateLimitItemPerSecond(max(1, math.ceil(item.amount / seconds)), 1))
            self.items.append(item)
        storage = storage_from_string(redis_url, key_prefix=f"{namespace}:ratelimit") if redis_url else MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)

    @property
    def unlimited(self) -> bool:
        return not self.items

    def acquire(self, should_stop=lambda: False) -> bool:
        """Wait until one more message may leave; False if ``should_stop`` says to give up."""
        for item in self.items:
            while not self.limiter.hit(item, KEY):
                if should_stop():
                    return False
                reset_at, _remaining = self.limiter.get_window_stats(item, KEY)
                time.sleep(min(MAX_SLEEP, max(0.002, reset_at - time.time())))
        return True


_limits: dict[tuple, MailRateLimit] = {}
_lock = threading.Lock()


def for_config(config) -> MailRateLimit:
    key = (config["MAIL_RATE_LIMIT"], config.get("REDIS_URL"), config["HUEY_NAME"])
    with _lock:
        if key not in _limits:
            _limits[key] = MailRateLimit(*key)
        return _limits[key]
