"""A Redis cache that degrades to a miss when Redis is unreachable.

The cache only saves work: a Redis outage must not turn a page or an event creation into an
error, so every failing call is logged and answered as if the key were absent.
"""
import logging

from flask_caching.backends.rediscache import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class TolerantRedisCache(RedisCache):
    """Flask-Caching's Redis cache, every call of which answers as a miss while Redis is down."""

    def _tolerate(self, fallback, method, *args):
        try:
            return method(self, *args)
        except RedisError as exc:
            log.warning("cache %s failed (%s); carrying on without the cache", method.__name__, type(exc).__name__)
            return fallback

    def get(self, key):
        return self._tolerate(None, RedisCache.get, key)

    def get_many(self, *keys):
        return self._tolerate([None] * len(keys), RedisCache.get_many, *keys)

    def has(self, key):
        return self._tolerate(False, RedisCache.has, key)

    def add(self, key, value, timeout=None):
        return self._tolerate(False, RedisCache.add, key, value, timeout)

    def set(self, key, value, timeout=None):
        return self._tolerate(False, RedisCache.set, key, value, timeout)

    def set_many(self, mapping, timeout=None):
        return self._tolerate([], RedisCache.set_many, mapping, timeout)

    def delete(self, key):
        return self._tolerate(False, RedisCache.delete, key)

    def delete_many(self, *keys):
        return self._tolerate([], RedisCache.delete_many, *keys)

    def inc(self, key, delta=1):
        return self._tolerate(None, RedisCache.inc, key, delta)

    def dec(self, key, delta=1):
        return self._tolerate(None, RedisCache.dec, key, delta)

    def clear(self):
        return self._tolerate(False, RedisCache.clear)


def tolerant_redis(app, config, args, kwargs):
    """Flask-Caching factory (``CACHE_TYPE = "school.caching.backend.tolerant_redis"``)."""
    config.setdefault("CACHE_OPTIONS", {"socket_connect_timeout": 1, "socket_timeout": 2})
    return TolerantRedisCache.factory(app, config, args, kwargs)
