"""Login throttling that can be neither raced nor turned into a lockout.

Every attempt is counted before its password is checked, with one atomic step on the shared store
(a Lua script on Redis, a lock in memory), so twenty wrong passwords sent at once still get only
five answers; an attempt whose password proves right is then given back to its address, and wipes
its account's count. Attempts count per client address and per address and account, never per
account alone: a stranger elsewhere who types someone's address five times wrong blocks only
themselves. A browser someone has logged in from before carries a signed cookie naming that
account; its attempts count on their own, so not even a stranger behind the same school address
can lock its owner out. Each count lasts its window (a minute, an hour) from its first attempt.
"""
from __future__ import annotations

import hashlib
import logging
import secrets

from flask import Flask, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

# The address limit is generous because a school's staff often share one public address.
LOGIN_LIMITS = {"LOGIN_LIMIT_PER_ADDRESS": "30 per minute; 200 per hour",
                "LOGIN_LIMIT_PER_ACCOUNT": "5 per minute; 30 per hour"}
# The same words whether or not the account exists, so the answer tells nothing about it.
THROTTLED = "Too many failed login attempts. Wait a few minutes and try again."
RETRY_AFTER = 60
DEVICE_COOKIE = "known_device"
DEVICE_DAYS = 365

log = logging.getLogger(__name__)


def limiters(app: Flask, purpose: str) -> tuple[FixedWindowRateLimiter, FixedWindowRateLimiter]:
    """The shared limiter (on Redis every web process counts together, under the queue's name) and
    the one to count with while Redis is down: in this process rather than not at all."""
    redis_url = app.config.get("REDIS_URL")
    if not redis_url:
        shared = FixedWindowRateLimiter(MemoryStorage())
        return shared, shared
    storage = storage_from_string(redis_url, key_prefix=f"{app.config['HUEY_NAME']}:{purpose}",
                                  socket_timeout=2, socket_connect_timeout=2)
    return FixedWindowRateLimiter(storage), FixedWindowRateLimiter(MemoryStorage())


class Throttled(Exception):
    """This attempt is over a limit; its password was not checked."""


def _account(email: str) -> str:
    """The account an attempt is for, as a short digest: keys and cookies never hold the address."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class LoginThrottle:
    def __init__(self, app: Flask):
        for name, default in LOGIN_LIMITS.items():
            app.config.setdefault(name, default)
        self.per_address = parse_many(app.config["LOGIN_LIMIT_PER_ADDRESS"])
        self.per_account = parse_many(app.config["LOGIN_LIMIT_PER_ACCOUNT"])
        # Fixed windows: their counter is one atomic INCR, which can also give an attempt back.
        self.shared, self.fallback = limiters(app, "login")
        self.devices = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="known-device")

    def _hit(self, item: RateLimitItem, *key: str) -> bool:
        try:
            return self.shared.hit(item, *key)
        except Exception as exc:  # the shared store is down: still throttle, per process
            log.warning("login throttle: shared store unavailable (%s); counting in this process",
                        type(exc).__name__)
            return self.fallback.hit(item, *key)

    def _clear(self, items: list[RateLimitItem], *key: str) -> None:
        for item in items:
            for limiter in {self.shared, self.fallback}:
                try:
                    limiter.clear(item, *key)
                except Exception:  # nosec B112  # nothing to clear on a store that is down
                    continue

    def _give_back(self, items: list[RateLimitItem], *key: str) -> None:
        for item in items:
            try:
                self.shared.storage.incr(item.key_for(*key), item.get_expiry(), amount=-1)
            except Exception:
                self.fallback.storage.incr(item.key_for(*key), item.get_expiry(), amount=-1)

    def _known_device(self, account: str) -> str | None:
        """The device id of this browser's cookie, when it names this account."""
        try:
            data = self.devices.loads(request.cookies.get(DEVICE_COOKIE, ""), max_age=DEVICE_DAYS * 86400)
        except BadSignature:
            return None
        if isinstance(data, dict) and data.get("account") == account and isinstance(data.get("device"), str):
            return data["device"]
        return None

    def count(self, email: str) -> Attempt:
        """Count an attempt to log in as ``email``; raise ``Throttled`` when it is over a limit."""
        account = _account(email)
        device = self._known_device(account)
        if device:
            buckets = [(self.per_account, ("device", device, account))]
        else:
            address = request.remote_addr or "unknown"
            buckets = [(self.per_account, ("account", address, account)), (self.per_address, ("address", address))]
        for items, key in buckets:
            for item in items:
                if not self._hit(item, *key):
                    raise Throttled
        return Attempt(self, account, device, buckets)


class Attempt:
    """One counted attempt; once its password proved right, it stops counting."""

    def __init__(self, throttle: LoginThrottle, account: str, device: str | None, buckets):
        self.throttle, self.account, self.device = throttle, account, device
        self.buckets = buckets

    def succeeded(self, response) -> None:
        """Give the attempt back to its address, forget this address's (or browser's) failures for
        the account, and mark the browser as known for it."""
        (items, key), *address = self.buckets
        self.throttle._clear(items, *key)
        for items, key in address:
            self.throttle._give_back(items, *key)
        cookie = self.throttle.devices.dumps({"account": self.account,
                                              "device": self.device or secrets.token_urlsafe(16)})
        response.set_cookie(DEVICE_COOKIE, cookie, max_age=DEVICE_DAYS * 86400, path="/login", httponly=True,
                            samesite="Lax", secure=current_app.config.get("SESSION_COOKIE_SECURE", False))


def init_app(app: Flask) -> LoginThrottle:
    throttle = LoginThrottle(app)
    app.extensions["school_login_throttle"] = throttle
    return throttle


def count_attempt(email: str) -> Attempt:
    return current_app.extensions["school_login_throttle"].count(email)
