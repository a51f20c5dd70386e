"""The one place that reads the environment.

With nothing set the app runs embedded: SQLite for the data and for the Huey queue, both under
``DATA_DIR``, and a file cache that every process on the machine shares. ``DATABASE_URL`` and
``REDIS_URL`` move it onto PostgreSQL and Redis.
"""
import os
import secrets
from datetime import time
from email.utils import parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse as parse_limit, parse_many

from .i18n import LANGUAGES, supported

APP_ENVS = ("development", "test", "production")
# Only these may sign sessions with a key of the app's own making (kept in DATA_DIR, see
# development_secret): anything else, a mistyped APP_ENV included, must bring its SECRET_KEY.
KEYLESS_ENVS = ("development", "test")
PRODUCTION_REQUIRED = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")
# TCP keepalives on PostgreSQL connections: a link that stops answering while a thread waits for a
# reply is given up after about 10 + 5 × 3 = 25 s, and data the server never acknowledges after 25 s,
# rather than after the kernel's default of two hours or more.
POSTGRES_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                       "tcp_user_timeout": 25_000}


class ConfigError(RuntimeError):
    """The environment cannot run the app; the message says what to set."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def _request_limits(env, name: str, default: str) -> str:
    """Limits in the ``limits`` library's words, e.g. '60 per minute; 600 per hour'."""
    raw = (env.get(name) or default).strip()
    try:
        if not parse_many(raw):
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"{name} must look like '60 per minute; 600 per hour', not {raw!r}") from None
    return raw


def _rate_limit(raw: str) -> str:
    raw = raw.strip()
    if raw in ("", "0"):
        return "0"
    try:
        parse_limit(raw)
    except ValueError:
        raise ConfigError(
            f"MAIL_RATE_LIMIT must look like '20/second' or '600/minute' (0 = unlimited), not {raw!r}"
        ) from None
    return raw


def _quiet_hours(raw: str | None):
    """``21:00-07:00`` (school time; may span midnight) as two ``time``s; None when unset."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in raw.split("-"))
    except ValueError:
        raise ConfigError(f"QUIET_HOURS must look like 21:00-07:00 (school time), not {raw!r}") from None
    if start == end:
        raise ConfigError(f"QUIET_HOURS must start and end at different times, not {raw!r}")
    return start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)


def _engine_options(env, database_url: str) -> dict:
    # A consumer's worker thread holds a connection for the batch it sends (see notify.delivery)
    # and takes a second one now and then; SQLAlchemy's default of 15 in all left a consumer
    # of 16 threads waiting 30 s for connections.
    options = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 40}
    connect_timeout = _int(env, "DATABASE_CONNECT_TIMEOUT", 10)
    statement_timeout = _float(env, "DATABASE_STATEMENT_TIMEOUT", 60.0)
    if connect_timeout < 2 or statement_timeout < 0:
        raise ConfigError("DATABASE_CONNECT_TIMEOUT must be at least 2 (seconds) and DATABASE_STATEMENT_TIMEOUT "
                          "at least 0 (0 = no limit)")
    if database_url.startswith("postgresql"):
        options["connect_args"] = {
            "connect_timeout": connect_timeout,
            "options": f"-c statement_timeout={round(statement_timeout * 1000)}",
            **POSTGRES_KEEPALIVES,
        }
    return options


def _bounce_address(env, sender: str) -> str:
    """Where bounces go: MAIL_BOUNCE_ADDRESS, or ``bounces@`` the sender's domain. Each message's
    envelope sender is this address tagged with its recipient (``bounces+<tag>@domain``, VERP)."""
    raw = (env.get("MAIL_BOUNCE_ADDRESS") or "").strip()
    if not raw:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        return f"bounces@{domain}"
    local, at, domain = parseaddr(raw)[1].rpartition("@")
    if not at or not local or not domain or "+" in local or not raw.isascii():
        raise ConfigError(f"MAIL_BOUNCE_ADDRESS must be a plain ASCII address without '+', like "
                          f"bounces@school.example.org, not {raw!r}")
    return f"{local}@{domain}"


def _check_environment(env, app_env: str) -> None:
    """Refuse an unknown APP_ENV, and any but development or test without SECRET_KEY, saying
    everything that must change at once."""
    problems = []
    if app_env == "production":
        missing = [name for name in PRODUCTION_REQUIRED if not env.get(name)]
        if missing:
            problems.append("APP_ENV=production needs these variables, which are not set: " + ", ".join(missing))
    elif app_env not in KEYLESS_ENVS and not env.get("SECRET_KEY"):
        problems.append(f"SECRET_KEY is not set; it is required unless APP_ENV is {' or '.join(KEYLESS_ENVS)}")
    if app_env not in APP_ENVS:
        problems.append(f"APP_ENV must be one of {', '.join(APP_ENVS)}, not {app_env!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def development_secret(data_dir: Path) -> str:
    """The key development and test sign sessions with when SECRET_KEY is unset: random, made once
    per DATA_DIR (``secret-key``, readable by its owner only) and shared by the processes using it,
    so no two installations, and no forgotten APP_ENV, share a key anyone could read in the code."""
    path = data_dir / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    draft = data_dir / f".secret-key-{secrets.token_hex(8)}"
    draft.write_text(secrets.token_hex(32))
    draft.chmod(0o600)
    try:
        os.link(draft, path)  # fails if another process made it first: then theirs is the key
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


def load(env=None) -> dict:
    """Build the app's settings from ``env`` (``os.environ`` by default)."""
    env = os.environ if env is None else env
    app_env = (env.get("APP_ENV") or "development").strip().lower() or "development"
    production = app_env == "production"
    _check_environment(env, app_env)

    data_dir = Path(env.get("DATA_DIR") or "instance").resolve()
    redis_url = env.get("REDIS_URL") or None
    database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'school.db'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://"):]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]

    zone = env.get("SCHOOL_TIMEZONE") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"SCHOOL_TIMEZONE must be a time zone name like Europe/Berlin, not {zone!r}") from None

    raw_language = env.get("SCHOOL_LANGUAGE") or "en"
    language = supported(raw_language)
    if language is None:
        raise ConfigError(f"SCHOOL_LANGUAGE must be one of {', '.join(LANGUAGES)} (or a code like pt-BR), "
                          f"not {raw_language!r}")

    batch_size = _int(env, "NOTIFY_BATCH_SIZE", 100)
    if batch_size < 1:
        raise ConfigError("NOTIFY_BATCH_SIZE must be at least 1")

    config = {
        "APP_ENV": app_env,
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": env.get("SECRET_KEY") or None,  # None: create_app uses development_secret
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "HUEY_NAME": env.get("HUEY_NAME", "school"),
        "HUEY_SQLITE_PATH": str(data_dir / "queue.db"),
        "MAIL_SERVER": env.get("MAIL_SERVER", "127.0.0.1"),
        "MAIL_PORT": _int(env, "MAIL_PORT", 8025),
        "MAIL_USE_TLS": _bool(env.get("MAIL_USE_TLS")),
        "MAIL_USE_SSL": _bool(env.get("MAIL_USE_SSL")),
        "MAIL_USERNAME": env.get("MAIL_USERNAME") or None,
        "MAIL_PASSWORD": env.get("MAIL_PASSWORD") or None,
        "MAIL_DEFAULT_SENDER": env.get("MAIL_DEFAULT_SENDER", "School <notices@school.example.org>"),
        "MAIL_BOUNCE_ADDRESS": _bounce_address(
            env, env.get("MAIL_DEFAULT_SENDER", "School <notices@school.example.org>")),
        # The shared secret bounce webhooks (SES, Postmark) must present; unset: webhooks are off.
        "BOUNCE_WEBHOOK_SECRET": env.get("BOUNCE_WEBHOOK_SECRET") or None,
        # The largest bounce or complaint read (bytes); larger ones are ignored and logged.
        "BOUNCE_MAX_BYTES": max(1024, _int(env, "BOUNCE_MAX_BYTES", 1024 * 1024)),
        "MAIL_TIMEOUT": _float(env, "MAIL_TIMEOUT", 30.0),
        "MAIL_RATE_LIMIT": _rate_limit(env.get("MAIL_RATE_LIMIT", "0")),
        # Open SMTP connections allowed at once, shared by every consumer on every machine (0 = no cap).
        "MAIL_MAX_CONNECTIONS": max(0, _int(env, "MAIL_MAX_CONNECTIONS", 0)),
        # Seconds an SMTP connection may sit unused in a consumer's pool before it is closed.
        "MAIL_IDLE_TIMEOUT": max(0.0, _float(env, "MAIL_IDLE_TIMEOUT", 30.0)),
        "MAIL_TLS_VERIFY": _bool(env.get("MAIL_TLS_VERIFY"), default=True),
        "MAIL_TLS_CA_FILE": env.get("MAIL_TLS_CA_FILE") or None,
        "NOTIFY_BATCH_SIZE": batch_size,
        "NOTIFY_RETRIES": _int(env, "NOTIFY_RETRIES", 3),
        "NOTIFY_RETRY_DELAY": _float(env, "NOTIFY_RETRY_DELAY", 5.0),
        "NOTIFY_RETRY_BACKOFF": _float(env, "NOTIFY_RETRY_BACKOFF", 5.0),
        "NOTIFY_LEASE_SECONDS": _float(env, "NOTIFY_LEASE_SECONDS", 60.0),
        # An outage (no mail server, Redis or database) is waited out, not counted against anyone.
        "NOTIFY_GIVE_UP_AFTER": _float(env, "NOTIFY_GIVE_UP_AFTER", 24 * 3600.0),
        "NOTIFY_WAIT_MAX": _float(env, "NOTIFY_WAIT_MAX", 60.0),
        "NOTIFY_SWEEP_INTERVAL": _float(env, "NOTIFY_SWEEP_INTERVAL", 15.0),
        "HEARTBEAT_INTERVAL": _float(env, "HEARTBEAT_INTERVAL", 5.0),
        "SCHOOL_TIMEZONE": zone,
        # When normal notices and reminders wait (school time, e.g. 21:00-07:00); urgent ones never do.
        "QUIET_HOURS": _quiet_hours(env.get("QUIET_HOURS")),
        # How often each consumer looks for scheduled work that is due (seconds).
        "SCHEDULE_POLL_INTERVAL": max(0.2, _float(env, "SCHEDULE_POLL_INTERVAL", 1.0)),
        # The school's own language: what events are written in, and what a family whose language
        # the school does not speak reads.
        "SCHOOL_LANGUAGE": language,
        "BABEL_DEFAULT_LOCALE": language,
        "BABEL_DEFAULT_TIMEZONE": zone,
        "BABEL_TRANSLATION_DIRECTORIES": str(data_dir / "translations"),  # compiled at start (i18n)
        "PUBLIC_URL": (env.get("PUBLIC_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0),
        # Requests one client address may make to the family pages (the token is the capability).
        "FAMILY_LIMIT_PER_ADDRESS": _request_limits(env, "FAMILY_LIMIT_PER_ADDRESS", "60 per minute; 600 per hour"),
        "RETENTION_DAYS": _int(env, "RETENTION_DAYS", 7),
        "EVENTS_PER_PAGE": 20,
        "READY_CACHE_SECONDS": 1.5,  # how long /health/ready reuses its checks' answer
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(env, database_url),
        "MAX_CONTENT_LENGTH": 256 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SECURE": production,
        "WTF_CSRF_TIME_LIMIT": None,
    }
    if redis_url:
        config.update(CACHE_TYPE="school.caching.backend.tolerant_redis", CACHE_REDIS_URL=redis_url, CACHE_KEY_PREFIX="school:cache:")
    else:
        config.update(CACHE_TYPE="FileSystemCache", CACHE_DIR=str(data_dir / "cache"), CACHE_THRESHOLD=2000)
    config["CACHE_DEFAULT_TIMEOUT"] = 300
    return config


class _Recorder(dict):
    """An empty environment that remembers every variable asked of it."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def get(self, name, default=None):
        self.names.add(name)
        return default


def variable_names() -> frozenset[str]:
    """Every environment variable ``load`` reads, found by letting it read an empty environment,
    so scripts and tests that must start from a clean environment never work from a stale list."""
    recorder = _Recorder()
    load(recorder)
    return frozenset(recorder.names)
