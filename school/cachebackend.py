"""A Redis cache that degrades to a miss when Redis is unreachable.

The cache only saves work: a Redis outage must not turn a page or an event creation into an
error, so every failing call is logged and answered as if the key were absent.
"""
import functools
import logging

from flask_caching.backends.rediscache import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_MISSES = {"get": None, "get_many": None, "has": False, "add": False, "set": False, "set_many": [],
           "delete": False, "delete_many": [], "inc": None, "dec": None, "clear": False}


def _tolerant(name: str, fallback):
    method = getattr(RedisCache, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RedisError as exc:
            log.warning("cache %s failed (%s); carrying on without the cache", name, type(exc).__name__)
            if name == "get_many":
                return [None] * len(args)
            return fallback

    return call


class TolerantRedisCache(RedisCache):
    pass


for _name, _fallback in _MISSES.items():
    setattr(TolerantRedisCache, _name, _tolerant(_name, _fallback))


def tolerant_redis(app, config, args, kwargs):
    """Flask-Caching factory (``CACHE_TYPE = "school.cachebackend.tolerant_redis"``)."""
    config.setdefault("CACHE_OPTIONS", {"socket_connect_timeout": 1, "socket_timeout": 2})
    return TolerantRedisCache.factory(app, config, args, kwargs)
