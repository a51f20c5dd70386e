"""Readiness checks: can this process reach what it needs? Each answers within a couple of seconds,
so a dead dependency makes ``/health/ready`` say 503 quickly instead of hanging the probe."""
from __future__ import annotations

import copy
import smtplib
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import current_app
from sqlalchemy import text

from ..counters import store
from ..extensions import db
from ..queue import huey

SMTP_TIMEOUT = 2.0
DATABASE_TIMEOUT = 3.0
_database_busy = threading.Lock()


@dataclass
class Check:
    name: str
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = {"ok": self.ok, "latency_ms": self.latency_ms, **self.details}
        if self.error:
            data["error"] = self.error
        if self.warnings:
            data["warnings"] = self.warnings
        return data


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced, fit for a page or a log line."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if has_password else f"{userinfo}@{hostport}"
    query = urlencode([(k, "***" if "pass" in k.lower() else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secrets() -> list[str]:
    config = current_app.config
    found = [config.get("MAIL_PASSWORD")]
    for name in ("REDIS_URL", "SQLALCHEMY_DATABASE_URI"):
        url = config.get(name)
        if url:
            parts = urlsplit(url)
            found.append(parts.password)
            found += [v for k, v in parse_qsl(parts.query) if "pass" in k.lower()]
    return [s for s in found if s]


def scrub(message: str) -> str:
    """An error message with every configured password taken out (drivers sometimes echo the URL)."""
    for secret in _secrets():
        message = message.replace(secret, "***")
    return message


def _timed(name: str, probe) -> Check:
    started = time.perf_counter()
    try:
        details = probe() or {}
    except Exception as exc:
        return Check(name, False, error=scrub(f"{type(exc).__name__}: {exc}"))
    check = Check(name, True, round((time.perf_counter() - started) * 1000, 2))
    check.warnings = details.pop("warnings", [])
    check.details = details
    return check


def database() -> Check:
    """SELECT 1, given DATABASE_TIMEOUT seconds: a server that accepts the connection and then says
    nothing would otherwise hold the probe until TCP gives up, minutes later."""
    app = current_app._get_current_object()

    def select_one():
        with app.app_context():
            try:
                db.session.execute(text("SELECT 1"))
                return db.engine.dialect.name
            finally:
                db.session.remove()

    return _timed("database", lambda: {"backend": _within(DATABASE_TIMEOUT, select_one, _database_busy)})


def _within(seconds: float, work, busy: threading.Lock):
    """``work()`` in a thread of its own, given ``seconds``. At most one runs at a time (``busy``):
    a hung check is not joined by another one at every probe."""
    if not busy.acquire(blocking=False):
        raise TimeoutError("the previous check has not answered yet")
    outcome: dict = {}
    finished = threading.Event()

    def run():
        try:
            outcome["value"] = work()
        except Exception as exc:
            outcome["error"] = exc
        finally:
            busy.release()
            finished.set()

    threading.Thread(target=run, name="ready-check", daemon=True).start()
    if not finished.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def queue() -> Check:
    """The queue's backend: a PING to Redis, or a read of the SQLite queue."""
    config = current_app.config
    if config.get("REDIS_URL"):
        client = store.for_config(config).client

        def probe():
            client.ping()
            return {"backend": "redis", "url": redact_url(config["REDIS_URL"])}

        check = _timed("redis", probe)
        if check.ok:
            check.warnings = redis_warnings(client)
        else:
            check.details = {"backend": "redis", "url": redact_url(config["REDIS_URL"])}
        return check

    def probe():
        huey.pending_count()
        return {"backend": "sqlite", "path": config["HUEY_SQLITE_PATH"]}

    return _timed("queue", probe)


def redis_warnings(client) -> list[str]:
    """Settings under which Redis would lose queued work (the database recovers it, but late)."""
    try:
        settings = {}
        for name in ("maxmemory-policy", "appendonly", "save"):
            settings.update(client.config_get(name))
    except Exception as exc:  # CONFIG may be disabled on a managed Redis
        return [f"could not read the Redis settings ({type(exc).__name__}); check that maxmemory-policy "
                "is noeviction and persistence is on"]
    warnings = []
    policy = settings.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        warnings.append(f"maxmemory-policy is {policy}: when Redis fills up it evicts keys, queued tasks "
                        "included; set it to noeviction")
    if settings.get("appendonly") != "yes":
        if not settings.get("save"):
            warnings.append("persistence is off (no AOF, no RDB snapshots): a Redis restart empties the queue; "
                            "set appendonly yes")
        else:
            warnings.append("AOF is off: a Redis crash loses what was queued since the last snapshot; "
                            "set appendonly yes")
    return warnings


def smtp() -> Check | None:
    """Connect, greet and quit; None when no SMTP server is configured. Never logs in."""
    config = current_app.config
    host = config.get("MAIL_SERVER")
    if not host:
        return None
    port = config.get("MAIL_PORT")

    def probe():
        cls = smtplib.SMTP_SSL if config.get("MAIL_USE_SSL") else smtplib.SMTP
        with cls(host, port, timeout=SMTP_TIMEOUT) as conn:
            code, _ = conn.noop()
            if code != 250:
                raise smtplib.SMTPResponseException(code, "NOOP refused")
        return {"server": f"{host}:{port}"}

    check = _timed("smtp", probe)
    check.details.setdefault("server", f"{host}:{port}")
    return check


def _run_checks() -> dict:
    checks = [c for c in (database(), queue(), smtp()) if c is not None]
    failing = [c.name for c in checks if not c.ok]
    body = {
        "status": "degraded" if failing else "ok",
        "failing": failing,
        "checks": {c.name: c.to_json() for c in checks},
        "warnings": [w for c in checks for w in c.warnings],
    }
    if failing:
        body["error"] = "not ready: " + ", ".join(failing) + " cannot be reached"
    return body


class _Recent:
    """The last readiness answer, kept for ``READY_CACHE_SECONDS``.

    A load balancer polling hard, or many at once, then costs one round of checks per interval
    instead of an SMTP session and a database query per call; and callers arriving while a round
    runs wait for its answer instead of finding a check "still busy" and reporting a failure.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.body: dict | None = None
        self.taken_at = 0.0

    def get(self, max_age: float) -> dict:
        with self.lock:  # one round at a time; the others wait here, then reuse it
            if self.body is None or time.monotonic() - self.taken_at >= max_age:
                self.body = _run_checks()
                self.taken_at = time.monotonic()
            return self.body


def readiness() -> tuple[bool, dict]:
    """Whether every dependency answers, and the details: hosts, ports, paths, settings, errors."""
    app = current_app._get_current_object()
    recent = app.extensions.setdefault("school_readiness", _Recent())
    body = copy.deepcopy(recent.get(app.config.get("READY_CACHE_SECONDS", 1.5)))
    return not body["failing"], body


def summary(body: dict) -> dict:
    """What anyone may know of readiness: the status and the names of what fails."""
    return {"status": body["status"], "failing": body["failing"]}
